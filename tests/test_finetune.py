"""Downstream tuning (Algorithm 2): subset sampling, task steps, any-subset inference, validation, the run."""

from __future__ import annotations

import itertools
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from test_pretrain_task import run_step

from p2gmed.cli import main
from p2gmed.losses.decomposition import masked_mean_error
from p2gmed.models.baselines import build_baseline
from p2gmed.models.network import build_model
from p2gmed.train import finetune
from p2gmed.train.finetune import SegmentationTask, SynthesisTask, draw_subsets
from p2gmed.train.validation import segmentation_validation, synthesis_validation

SHAPE = (32, 32, 64)


def _batch(n=2, labels=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    batch = {
        "image": torch.randn(n, 4, *SHAPE, generator=gen),
        "available": torch.ones(n, 4, dtype=torch.bool),
        "foreground": torch.ones(n, 1, *SHAPE, dtype=torch.bool),
        "subject": [f"s{i}" for i in range(n)],
    }
    if labels:
        batch["label"] = torch.randint(0, 4, (n, 1, *SHAPE), generator=gen)
    return batch


def test_draw_subsets_properties_and_uniformity():
    available = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 0, 0]], dtype=torch.bool)
    subjects = ["a", "a", "b", "c"]
    gen = torch.Generator().manual_seed(0)
    counts: dict[tuple, int] = {}
    for _ in range(1500):
        subset = draw_subsets(available, subjects, gen)
        assert torch.equal(subset[0], subset[1])  # crops of one subject share the subset
        assert not (subset & ~available).any() and subset[:3].any(1).all() and not subset[3].any()
        key = tuple(subset[0].tolist())
        counts[key] = counts.get(key, 0) + 1
    assert len(counts) == 15  # every non-empty subset of 4 modalities is drawn ...
    assert min(counts.values()) > 1500 / 15 * 0.6  # ... about equally often


def test_masked_regression_hand_worked():
    pred = torch.zeros(1, 2, 1, 1, 2)
    target = torch.tensor([[1.0, 3.0], [100.0, 100.0]]).reshape(1, 2, 1, 1, 2)
    available = torch.tensor([[True, False]])  # channel 1 is missing: ignored whatever it holds
    foreground = torch.tensor([True, True]).reshape(1, 1, 1, 1, 2)
    assert masked_mean_error(pred, target, available, foreground).item() == pytest.approx(5.0)
    assert masked_mean_error(pred, target, available, foreground, kind="l1").item() == pytest.approx(2.0)
    foreground[..., 1] = False
    assert masked_mean_error(pred, target, available, foreground).item() == pytest.approx(1.0)


class _Capture:
    """Wraps a task's `task_terms` to keep the predictions it is given."""

    def __init__(self, task):
        self.predictions = []
        original = task.task_terms

        def capture(prediction, batch, rows):
            self.predictions.append((prediction.detach().clone(), rows.clone()))
            return original(prediction, batch, rows)

        task.task_terms = capture


def hand_subset_mean(model, image, subset):
    """D(mean over the subset of X'_i, mean over the subset of the skips), written out for one crop, with the
    input skip of the default `model.input_skip: channels` (the subset's modalities in their own channels, the
    others filled by the subset's mean image). Holds for `subset_skips: attention` while its scores are zero.

    image (1, M, D, H, W); subset (M,) bool.
    """
    m = image.shape[1]
    sources = subset.nonzero().flatten().tolist()
    encoded = [model.encode(image[:, i : i + 1].expand(-1, m, -1, -1, -1)) for i in sources]
    fused = [model.fuse(z) for z, _ in encoded]
    mean_fused = sum(fused) / len(sources)
    mean_skips = [sum(skips[j] for _, skips in encoded) / len(sources) for j in range(len(encoded[0][1]))]
    mean_image = sum(image[:, i] for i in sources) / len(sources)
    mean_skips[0] = torch.stack([image[:, i] if i in sources else mean_image for i in range(m)], dim=1)
    return model.decode(mean_fused, mean_skips)


def test_segmentation_step_trains_what_forward_subset_predicts(tiny_cfg):
    torch.manual_seed(0)
    model = build_model(tiny_cfg, 4)
    task = SegmentationTask(model, tiny_cfg, "p2g", "brats2023")
    captured = _Capture(task)
    batch = _batch()
    gen = torch.Generator().manual_seed(4)
    subset = draw_subsets(batch["available"], batch["subject"], torch.Generator().manual_seed(4))
    assert subset.sum(1).tolist() == [3, 2]  # this seed draws subsets of different sizes, both > 1
    terms = run_step(task, batch, gen)
    assert set(terms) == {"dice", "ce", "invariance", "loss"} and all(
        torch.isfinite(torch.tensor(list(terms.values())))
    )
    assert model.backbone.swinViT.patch_embed.proj.weight.grad is not None
    assert model.backbone.out.conv.conv.weight.grad is not None
    ((prediction, rows),) = captured.predictions
    assert rows.tolist() == [0, 1]
    with torch.no_grad():
        for row in (0, 1):
            by_hand = hand_subset_mean(model, batch["image"][row : row + 1], subset[row])
            torch.testing.assert_close(prediction[row : row + 1], by_hand, rtol=1e-4, atol=1e-4)
            predicted = model.forward_subset(batch["image"][row : row + 1], subset[row])
            torch.testing.assert_close(predicted, by_hand, rtol=1e-4, atol=1e-4)
    assert terms["invariance"] > 0


def test_per_modality_decoding_decodes_each_source_against_the_running_anchor(tiny_cfg, monkeypatch):
    tiny_cfg.tune.train_decode = "per_modality"
    torch.manual_seed(0)
    model = build_model(tiny_cfg, 4)
    task = SynthesisTask(model, tiny_cfg, "p2g")
    captured = _Capture(task)
    batch = _batch(n=1, labels=False)
    monkeypatch.setattr(finetune, "draw_subsets", lambda *_: torch.tensor([[True, False, True, True]]))
    records = []
    for terms in task.run_step(batch, torch.Generator().manual_seed(0)):
        terms["loss"].backward()
        records.append({name: float(value.detach()) for name, value in terms.items()})
    assert len(records) == len(captured.predictions) == 3  # one loss, one backward per source modality
    image, fg = batch["image"], batch["foreground"]
    with torch.no_grad():
        inputs = {i: image[:, i : i + 1].expand(-1, 4, -1, -1, -1) for i in (0, 2, 3)}
        decoded = {i: model(x) for i, x in inputs.items()}
        fused = {i: model.fuse(model.encode(x)[0]) for i, x in inputs.items()}
    order = []
    for (prediction, rows), record in zip(captured.predictions, records, strict=True):
        (source,) = [i for i, y in decoded.items() if torch.allclose(prediction, y, atol=1e-5)]
        order.append(source)
        error = masked_mean_error(prediction, image, batch["available"], fg)
        assert record["mse"] == pytest.approx(float(error), rel=1e-5)
        if len(order) == 1:
            assert "invariance" not in record  # the first source has no anchor yet
        else:  # Eq. 3: X'_i against the mean of the sources before it
            anchor = sum(fused[i] for i in order[:-1]) / (len(order) - 1)
            expected = float((fused[source] - anchor).pow(2).mean())
            assert record["invariance"] == pytest.approx(expected, rel=1e-4) and expected > 0
        assert record["loss"] == pytest.approx(record["mse"] + record.get("invariance", 0.0), rel=1e-6)
    assert sorted(order) == [0, 2, 3]


def test_per_modality_decoding_of_a_single_source(tiny_cfg):
    tiny_cfg.tune.train_decode = "per_modality"
    model = build_model(tiny_cfg, 4)
    task = SynthesisTask(model, tiny_cfg, "p2g")
    batch = _batch(n=1, labels=False)
    batch["available"][0, 1:] = False  # one modality: the subset is {t1n}
    calls = []
    terms = run_step(task, batch, torch.Generator().manual_seed(0), passes=calls)
    assert calls == [1] and terms["invariance"] == 0.0 and terms["mse"] > 0


@pytest.mark.parametrize("task", ["synthesis", "segmentation"])
def test_killed_and_resumed_tuning_is_bitwise_identical(demo_brain, tmp_path, task):
    common = [
        "finetune", "--task", task, "--data", str(demo_brain), "--config", "configs/tiny-cpu.yaml",
        "--device", "cpu", "--set", "data.modalities=[t1n,t2w]", "--set", "data.val_fraction=0",
    ]  # fmt: skip
    assert main([*common, "--out", str(tmp_path / "straight"), "--max-steps", "2"]) == 0
    assert main([*common, "--out", str(tmp_path / "run"), "--max-steps", "1"]) == 0
    assert main([*common, "--out", str(tmp_path / "run"), "--max-steps", "2", "--resume"]) == 0

    def logged(run):
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]

    assert logged(tmp_path / "straight") == logged(tmp_path / "run")
    assert [r["step"] for r in logged(tmp_path / "run")] == [1, 2]
    a = torch.load(tmp_path / "straight/checkpoints/last.pt", weights_only=True)
    b = torch.load(tmp_path / "run/checkpoints/last.pt", weights_only=True)
    assert a["step"] == b["step"] == 2
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(
        torch.equal(x, y)
        for k in a["optimizer"]["state"]
        for x, y in zip(a["optimizer"]["state"][k].values(), b["optimizer"]["state"][k].values(), strict=True)
    )


def test_baseline_step_zeroes_the_modalities_outside_the_subset(tiny_cfg):
    model = build_baseline(tiny_cfg, "swinunetr", 4)
    seen = []
    model.backbone.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    task = SegmentationTask(model, tiny_cfg, "swinunetr", "brats2023")
    batch = _batch(n=1)
    gen_copy = torch.Generator().manual_seed(5)
    subset = draw_subsets(batch["available"], batch["subject"], gen_copy)[0]
    terms = run_step(task, batch, torch.Generator().manual_seed(5))
    assert "invariance" not in terms  # no per-modality X' in a stacked baseline
    (x,) = seen
    assert torch.equal(x[0, ~subset], torch.zeros_like(x[0, ~subset]))
    assert torch.equal(x[0, subset], batch["image"][0, subset])


@pytest.mark.parametrize("architecture", ["p2g", "swinunetr"])
def test_every_one_of_the_15_subsets_segments(tiny_cfg, architecture):
    torch.manual_seed(0)
    model = (
        build_model(tiny_cfg, 4) if architecture == "p2g" else build_baseline(tiny_cfg, architecture, 4)
    ).eval()
    image = torch.randn(1, 4, *SHAPE)
    outputs = {}
    with torch.no_grad():
        for size in range(1, 5):
            for members in itertools.combinations(range(4), size):
                available = torch.zeros(4, dtype=torch.bool)
                available[list(members)] = True
                logits = model.forward_subset(image, available)
                assert logits.shape == (1, 4, *SHAPE) and torch.isfinite(logits).all()
                outputs[members] = logits
    assert len(outputs) == 15
    # what is not in the subset must not matter: change an absent channel, get the same prediction
    changed = image.clone()
    changed[:, 3] = 5.0
    with torch.no_grad():
        again = model.forward_subset(changed, torch.tensor([True, False, True, False]))
    torch.testing.assert_close(again, outputs[(0, 2)])


def _item(image, label=None):
    return SimpleNamespace(
        image=image,
        available=torch.ones(image.shape[0], dtype=torch.bool),
        foreground=torch.ones(1, *image.shape[1:], dtype=torch.bool),
        label=label,
    )


class _Stub(torch.nn.Module):
    """A model whose prediction is a function of the window: validation checked against known answers."""

    def __init__(self, fn):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.fn = fn

    def forward_subset(self, x, available):
        return self.fn(x, available)


def test_segmentation_validation_scores_perfect_and_empty_predictions(tiny_cfg):
    label = torch.zeros(1, 40, 36, 70, dtype=torch.int64)  # larger than the ROI: several windows
    label[0, 5:20, 5:20, 10:40] = 2
    label[0, 8:12, 8:12, 15:25] = 3
    label[0, 25:30, 20:30, 50:60] = 1
    image = label.float().repeat(4, 1, 1, 1)  # every channel carries the label: the stub can read it
    perfect = _Stub(
        lambda x, a: torch.nn.functional.one_hot(x[:, 0].round().long(), 4).movedim(-1, 1).float() * 10
    )
    background = _Stub(
        lambda x, a: torch.nn.functional.one_hot(torch.zeros_like(x[:, 0]).long(), 4).movedim(-1, 1).float()
    )
    validate = segmentation_validation([_item(image, label)], tiny_cfg, "brats2023")
    assert validate(perfect) == pytest.approx({"dice_wt": 1.0, "dice_tc": 1.0, "dice_et": 1.0, "dice": 1.0})
    assert validate(background)["dice"] == 0.0


def test_synthesis_validation_psnr_orders_good_and_bad(tiny_cfg):
    volume = torch.rand(1, 40, 36, 70)
    image = volume.repeat(4, 1, 1, 1)  # identical modalities: copying the source is a perfect synthesis
    copy = _Stub(lambda x, a: x[:, a.nonzero().flatten()[:1]].repeat(1, 4, 1, 1, 1))
    noise = _Stub(lambda x, a: torch.rand_like(x))
    validate = synthesis_validation([_item(image)], tiny_cfg)
    assert validate(copy)["psnr"] == pytest.approx(100.0)  # identical volumes: inf, capped
    assert validate(noise)["psnr"] < 20.0


def test_cli_refuses_bad_initialisation(tiny_cfg, demo_brain, tmp_path, capsys):
    args = [
        "finetune",
        "--task",
        "segmentation",
        "--data",
        str(demo_brain),
        "--config",
        "configs/tiny-cpu.yaml",
    ]
    assert main([*args, "--out", str(tmp_path / "a"), "--encoder-only"]) == 2
    assert "--encoder-only needs --init" in capsys.readouterr().err
    torch.save(
        {"state_dict": {"module.layers1.0.blocks.0.norm1.weight": torch.zeros(7)}}, tmp_path / "bad.pt"
    )
    assert (
        main(
            [
                *args,
                "--out",
                str(tmp_path / "b"),
                "--init-swinvit",
                str(tmp_path / "bad.pt"),
                "--max-steps",
                "1",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "layers1.0.blocks.0.norm1.weight" in err and "--allow-mismatch" in err
    assert not (tmp_path / "b" / "checkpoints").exists()


@pytest.mark.slow
def test_finetune_runs_from_a_pretrained_checkpoint_and_exports(tiny_cfg, demo_brain, tmp_path):
    from p2gmed.config import config_to_dict
    from p2gmed.train.checkpoint import load_checkpoint, save_checkpoint

    pre = build_model(tiny_cfg, 4)
    save_checkpoint(
        tmp_path / "pre.pt",
        model=pre,
        step=1,
        config=config_to_dict(tiny_cfg),
        task="pretrain",
        architecture="p2g",
        out_channels=4,
        modalities=list(tiny_cfg.data.modalities),
    )
    run = tmp_path / "seg"
    common = [
        "--data",
        str(demo_brain),
        "--config",
        "configs/tiny-cpu.yaml",
        "--set",
        "train.val_every=1",
        "--set",
        "train.val_subjects=1",
    ]
    assert (
        main(
            [
                "finetune",
                "--task",
                "segmentation",
                "--out",
                str(run),
                "--init",
                str(tmp_path / "pre.pt"),
                "--max-steps",
                "1",
                *common,
            ]
        )
        == 0
    )
    ckpt = load_checkpoint(run / "checkpoints" / "best.pt")
    assert (ckpt["task"], ckpt["architecture"], ckpt["out_channels"], ckpt["labels"]) == (
        "segmentation",
        "p2g",
        4,
        "brats2023",
    )
    report = json.loads((run / "init_report.json").read_text())
    assert report["init"] == "full" and not report["missing"] and not report["unexpected"]
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"dice", "ce", "loss", "val_dice"} <= set(record)
    assert (
        main(
            [
                "export",
                "--model",
                str(run / "checkpoints" / "last.pt"),
                "--format",
                "monai-swinunetr",
                "--out",
                str(tmp_path / "swin.pt"),
            ]
        )
        == 0
    )
    assert (
        main(
            ["finetune", "--task", "segmentation", "--out", str(run), "--resume", "--max-steps", "2", *common]
        )
        == 0
    )
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 2


@pytest.mark.parametrize("architecture", ["p2g", "swinunetr"])
def test_sources_and_targets_restrict_the_tuning_task(tiny_cfg, architecture, monkeypatch):
    """Table 6 (App. B.4): only NAC -> AC-PET and NAC -> CT are tuned; here t2f -> t1n, t2w stands in."""
    tiny_cfg.tune.sources, tiny_cfg.tune.targets = ("t2f",), ("t1n", "t2w")
    tiny_cfg.validate()
    torch.manual_seed(0)
    model = build_model(tiny_cfg, 4) if architecture == "p2g" else build_baseline(tiny_cfg, architecture, 4)
    task = SynthesisTask(model, tiny_cfg, architecture)
    compared = []
    import p2gmed.train.finetune as finetune_module

    error = finetune_module.masked_mean_error
    monkeypatch.setattr(finetune_module, "masked_mean_error",
                        lambda p, t, a, f, **kw: compared.append(a.clone()) or error(p, t, a, f, **kw))
    batch = _batch(n=2, labels=False)
    for step in range(4):
        list(task.run_step(batch, torch.Generator().manual_seed(step)))
    assert compared and all(a.tolist() == [[True, False, True, False]] * 2 for a in compared)
    if architecture == "p2g":
        inputs = []
        encode = model.encode
        monkeypatch.setattr(model, "encode", lambda x: inputs.append(x.detach()) or encode(x))
        list(task.run_step(batch, torch.Generator().manual_seed(9)))
        assert len(inputs) == 1 and torch.equal(inputs[0], batch["image"][:, 3:4].expand(-1, 4, -1, -1, -1))


def test_unknown_tuning_source_is_an_input_error(tiny_cfg):
    from p2gmed.errors import InputError

    tiny_cfg.tune.sources = ("pet_nac",)
    with pytest.raises(InputError, match="tune.sources"):
        tiny_cfg.validate()


def _row_titles(figure) -> list[str]:
    return [ax.get_ylabel() for ax in figure.axes if ax.get_ylabel()]


def test_synthesis_figure_shows_source_synthesized_targets_and_references(tiny_cfg):
    import matplotlib.pyplot as plt

    from p2gmed.train.validation import synthesis_figure

    volume = torch.rand(1, 40, 36, 70)
    item = _item(volume.repeat(4, 1, 1, 1))
    item.available[1] = False  # a missing modality is neither drawn as a source nor as a target
    copy = _Stub(lambda x, a: x[:, a.nonzero().flatten()[:1]].repeat(1, 4, 1, 1, 1))
    order = tiny_cfg.data.modalities
    figure = synthesis_figure([item], tiny_cfg)(copy)
    expected = [f"{order[0]} given"]
    for t in (2, 3):
        expected += [f"{order[t]} synthesized", f"{order[t]} reference"]
    assert _row_titles(figure) == expected
    # the synthesized row is the stub's prediction: here a copy of the source, so it equals its reference
    synthesized, reference = (np.asarray(figure.axes[3 * r].images[0].get_array()) for r in (1, 2))
    assert np.allclose(synthesized, reference, atol=1e-5)  # up to the sliding window's blending
    plt.close(figure)
    one = _item(volume.repeat(4, 1, 1, 1))
    one.available[1:] = False  # nothing to synthesize from a subject with one modality
    assert synthesis_figure([one], tiny_cfg)(copy) is None


def test_segmentation_figure_draws_predicted_and_reference_labels(tiny_cfg):
    import matplotlib.pyplot as plt

    from p2gmed.train.validation import segmentation_figure

    label = torch.zeros(1, 40, 36, 70, dtype=torch.int64)
    label[0, 5:20, 5:20, 10:40] = 2
    image = label.float().repeat(4, 1, 1, 1)
    perfect = _Stub(
        lambda x, a: torch.nn.functional.one_hot(x[:, 0].round().long(), 4).movedim(-1, 1).float() * 10
    )
    draw = segmentation_figure([_item(image), _item(image, label)], tiny_cfg, "brats2023")  # the first has no label
    figure = draw(perfect)
    order = tiny_cfg.data.modalities
    assert _row_titles(figure) == [f"{m} given" for m in order] + ["predicted", "reference"]
    predicted, reference = (np.asarray(figure.axes[3 * r].images[1].get_array()) for r in (4, 5))
    assert np.array_equal(predicted, reference) and predicted.any()  # a perfect model draws the reference
    plt.close(figure)
    assert segmentation_figure([_item(image)], tiny_cfg, "brats2023")(perfect) is None


@pytest.mark.parametrize("task", ["synthesis", "segmentation"])
def test_validation_logs_a_case_figure_to_tensorboard(demo_brain, tmp_path, task):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    args = [
        "finetune", "--task", task, "--data", str(demo_brain), "--config", "configs/tiny-cpu.yaml",
        "--device", "cpu", "--set", "data.modalities=[t1n,t2w]", "--out", str(run), "--max-steps", "1",
    ]  # fmt: skip
    assert main(args) == 0
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    (image,) = events.Images("validation/case")  # the one validation, at the final step
    assert image.step == 1 and image.height > 100 and image.width > 100
    (record,) = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"val_psnr", "val_dice"} & set(record)  # the figure comes from a real validation


def test_decomposition_figure_shows_the_given_modality_and_every_decoded_one(tiny_cfg):
    import matplotlib.pyplot as plt

    from p2gmed.train.validation import decomposition_figure

    image = torch.rand(1, 4, 16, 16, 16)
    available = torch.tensor([[False, True, True, True]])
    crop = {"image": image, "available": available, "subject": ["case-7"]}
    halve = _Stub(None)
    halve.forward = lambda x: x * 0.5  # decodes every channel as half the given modality
    order = tiny_cfg.data.modalities
    figure = decomposition_figure([crop], order)(halve)
    expected = [f"{order[1]} given"] + [r for t in (1, 2, 3) for r in (f"{order[t]} decoded", f"{order[t]} reference")]
    assert _row_titles(figure) == expected and figure._suptitle.get_text() == "case-7"
    decoded = np.asarray(figure.axes[3 * 3].images[0].get_array())  # order[2] decoded: half of the given order[1]
    given = np.asarray(figure.axes[0].images[0].get_array())
    assert np.allclose(decoded, given * 0.5)
    plt.close(figure)


def test_synthesis_ssim_weight_adds_the_term_and_zero_removes_it(tiny_cfg):
    """loss.ssim (not in the paper, docs/method.md): a positive weight adds 1 - SSIM to the MSE, 0 removes it."""
    batch = _batch(n=2, labels=False)
    results = {}
    for weight in (0.0, 0.5):
        tiny_cfg.loss.ssim = weight
        torch.manual_seed(0)
        task = SynthesisTask(build_model(tiny_cfg, 4), tiny_cfg, "p2g")
        results[weight] = run_step(task, batch, torch.Generator().manual_seed(2))
    assert "ssim" not in results[0.0] and set(results[0.5]) == {"mse", "ssim", "invariance", "loss"}
    assert results[0.5]["mse"] == pytest.approx(results[0.0]["mse"], rel=1e-5)
    with_term = results[0.5]
    assert with_term["loss"] == pytest.approx(with_term["mse"] + 0.5 * with_term["ssim"] + with_term["invariance"],
                                              rel=1e-5)
    assert 0.0 < with_term["ssim"] <= 2.0


def test_ce_weighting_setting_reaches_the_segmentation_loss(tiny_cfg):
    # the task's CE term is the loss function's own value for the configured weighting, on the same prediction
    from p2gmed.data.layouts import labels_to_classes
    from p2gmed.losses.segmentation import weighted_cross_entropy

    torch.manual_seed(0)
    prediction = torch.randn(2, 4, 8, 8, 8)
    batch = {"label": torch.randint(0, 4, (2, 1, 8, 8, 8)), "subject": ["a", "b"]}
    target = labels_to_classes(batch["label"], "brats2023")
    values = {}
    for weighting in ("mmformer", "uniform"):
        tiny_cfg.loss.ce_weighting = weighting
        task = SegmentationTask(build_model(tiny_cfg, 4), tiny_cfg, "p2g", "brats2023")
        values[weighting] = task.task_terms(prediction, batch, torch.tensor([0, 1]))["ce"]
        torch.testing.assert_close(values[weighting], weighted_cross_entropy(prediction, target, weighting))
    assert not torch.isclose(values["mmformer"], values["uniform"])
