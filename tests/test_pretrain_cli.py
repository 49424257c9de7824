"""`p2g pretrain` end to end: run folder, refusals (exit 2), resume, epochs; the real model in a slow test.

The fast tests swap the network and the Algorithm-1 task for tiny stand-ins (the wiring, files and refusals
are what is tested here); `test_real_pretraining_*` runs the real P2GNet on the built-in brain data.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from p2gmed.cli import main

CONFIG = str(Path(__file__).parents[1] / "configs" / "tiny-cpu.yaml")


@pytest.fixture(scope="module")
def tiny_brats(tmp_path_factory) -> Path:
    """4 subjects, brats23 layout, 36 x 36 x 64 voxels, a box of signal in zero background."""
    root = tmp_path_factory.mktemp("tiny") / "brats"
    rng = np.random.default_rng(0)
    box = np.zeros((36, 36, 64), np.float32)
    box[6:30, 6:30, 8:56] = 1
    for i in range(4):
        case = f"BraTS-GLI-{i:05d}-000"
        (root / case).mkdir(parents=True)
        for j, name in enumerate(("t1n", "t1c", "t2w", "t2f")):
            arr = box * (100 + 50 * j + 20 * rng.random(box.shape, dtype=np.float32))
            nib.save(
                nib.Nifti1Image(arr, np.diag([2.0, 2.0, 2.0, 1.0])), root / case / f"{case}-{name}.nii.gz"
            )
        nib.save(
            nib.Nifti1Image(np.zeros(box.shape, np.uint8), np.diag([2.0, 2.0, 2.0, 1.0])),
            root / case / f"{case}-seg.nii.gz",
        )
    return root


class StandInTask:
    """Reconstructs every modality from the input with foreground MSE; reports two named terms."""

    terms = ("decomposition", "contrast", "loss")

    def __init__(self, model, cfg):
        self.model = model

    def run_step(self, batch, generator):
        image, fg = batch["image"], batch["foreground"].float()
        error = ((self.model(image) - image) ** 2 * fg).sum() / fg.sum().clamp_min(1) / image.shape[1]
        yield {"decomposition": error, "contrast": torch.tensor(0.5), "loss": error + 0.5}


@pytest.fixture
def stand_ins(monkeypatch):
    import p2gmed.train.run as run

    monkeypatch.setattr(
        run,
        "build_architecture",
        lambda cfg, architecture, out_channels: nn.Conv3d(out_channels, out_channels, 1),
    )
    monkeypatch.setattr(run, "PretrainTask", StandInTask)


def pretrain(data, run, *extra) -> int:
    return main(
        ["pretrain", "--data", str(data), "--out", str(run), "--config", CONFIG, "--device", "cpu", *extra]
    )


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# --------------------------------------------------------------------------------------------------


def test_pretrain_run_folder_resume_and_refusals(tiny_brats, tmp_path, stand_ins, capsys):
    run = tmp_path / "run"
    assert pretrain(tiny_brats, run, "--max-steps", "2") == 0
    assert (run / "config.yaml").is_file() and (run / "checkpoints/last.pt").is_file()
    assert "max_steps: 2" in (run / "config.yaml").read_text()
    assert (run / "checkpoints/best.pt").is_file()  # 4 subjects, val_fraction 0.25: one held out
    first = records(run)
    assert [r["step"] for r in first] == [1, 2]
    assert "val_decomposition_mse" in first[-1] and math.isfinite(first[-1]["val_decomposition_mse"])
    last_bytes = (run / "checkpoints/last.pt").read_bytes()

    capsys.readouterr()
    assert pretrain(tiny_brats, run, "--max-steps", "3") == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err
    assert (run / "checkpoints/last.pt").read_bytes() == last_bytes  # nothing touched

    assert pretrain(tiny_brats, run, "--max-steps", "3", "--resume", "--set", "model.feature_size=24") == 2
    assert "model.feature_size: 12 -> 24" in capsys.readouterr().err

    assert pretrain(tiny_brats, run, "--max-steps", "3", "--resume") == 0
    after = records(run)
    assert after[:2] == first and [r["step"] for r in after] == [1, 2, 3]
    assert torch.load(run / "checkpoints/last.pt", weights_only=True)["step"] == 3


def test_resume_without_checkpoint_and_bad_arguments_exit_2(tiny_brats, tmp_path, stand_ins, capsys):
    assert pretrain(tiny_brats, tmp_path / "new", "--max-steps", "1", "--resume") == 2
    assert "last.pt, which does not exist" in capsys.readouterr().err
    assert pretrain(tiny_brats, tmp_path / "zero", "--max-steps", "0") == 2
    assert pretrain(tiny_brats, tmp_path / "badkey", "--set", "train.nonsense=1") == 2
    assert "train.nonsense" in capsys.readouterr().err
    assert pretrain(tmp_path / "no-such-data", tmp_path / "nodata", "--max-steps", "1") == 2
    assert not (tmp_path / "nodata").exists()  # nothing half-written
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("mine")
    assert pretrain(tiny_brats, tmp_path / "used", "--max-steps", "1") == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "used" / "notes.txt").read_text() == "mine"


def test_epochs_set_the_number_of_steps(tiny_brats, tmp_path, stand_ins):
    # 3 training subjects, batch size 1: 3 steps per epoch
    run = tmp_path / "epochs"
    assert pretrain(tiny_brats, run, "--set", "train.epochs=2", "--set", "train.val_every=0") == 0
    assert [r["step"] for r in records(run)] == [1, 2, 3, 4, 5, 6]


def test_resume_refuses_a_checkpoint_of_another_task(tiny_brats, tmp_path, stand_ins, capsys):
    from p2gmed.config import config_to_dict, load_config
    from p2gmed.train.checkpoint import save_checkpoint

    run = tmp_path / "tuned"
    save_checkpoint(
        run / "checkpoints/last.pt",
        model=nn.Linear(1, 1),
        step=1,
        config=config_to_dict(load_config(CONFIG)),
        task="synthesis",
        architecture="p2g",
        out_channels=4,
        modalities=["t1n", "t1c", "t2w", "t2f"],
    )
    assert pretrain(tiny_brats, run, "--max-steps", "2", "--resume") == 2
    assert "synthesis checkpoint" in capsys.readouterr().err


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--data", "--out", "--config", "--max-steps", "--resume", "--set", "--device"):
        assert option in out


# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "first,final", [(1, 2), pytest.param(2, 3, marks=pytest.mark.slow, id="2-then-3-vs-straight")]
)
def test_real_pretraining_then_resume(demo_brain, tmp_path, first, final):
    run = tmp_path / "real"
    two_modalities = ("--set", "data.modalities=[t1n,t2w]")  # halves the time; invariance still active
    assert pretrain(demo_brain, run, "--max-steps", str(first), *two_modalities) == 0
    logged = records(run)
    assert [r["step"] for r in logged] == list(range(1, first + 1))
    for record in logged:
        for term in ("loss", "contrast", "equivariance", "invariance", "decomposition", "lr"):
            assert math.isfinite(record[term]), term
        assert record["invariance"] > 0  # two modalities: the second one is compared with the anchor
    ckpt = torch.load(run / "checkpoints/last.pt", weights_only=True)
    assert ckpt["step"] == first and ckpt["task"] == "pretrain" and ckpt["modalities"] == ["t1n", "t2w"]
    assert ckpt["out_channels"] == 2 and ckpt["versions"]["monai"]

    assert pretrain(demo_brain, run, "--max-steps", str(final)) == 2  # no --resume
    assert pretrain(demo_brain, run, "--max-steps", str(final), "--resume", *two_modalities) == 0
    after = records(run)
    assert after[:first] == logged and [r["step"] for r in after] == list(range(1, final + 1))
    # resumed == uninterrupted, bit for bit, with the real network and Algorithm 1
    straight = tmp_path / "straight"
    assert pretrain(demo_brain, straight, "--max-steps", str(final), *two_modalities) == 0
    drop_time = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    # the interrupted run validated once more (at its end, step `first`); training terms must agree exactly
    train_terms = lambda rows: [{k: v for k, v in r.items() if not k.startswith("val_")} for r in rows]  # noqa: E731
    assert train_terms(drop_time(records(straight))) == train_terms(drop_time(records(run)))
    a = torch.load(straight / "checkpoints/last.pt", weights_only=True)["model"]
    b = torch.load(run / "checkpoints/last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # every validation drew the held-out crop's decomposition into TensorBoard
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(straight / "tb"))
    events.Reload()
    assert [image.step for image in events.Images("validation/case")] == [final]


def test_pretraining_batches_keep_the_rotation_plane(tiny_brats, tmp_path, stand_ins, monkeypatch):
    """The equivariance label is phi's k only if the data augmentation leaves phi's plane alone (Eq. 5)."""
    import p2gmed.data.sampling as sampling
    import p2gmed.train.run as run_module

    kept = []

    class Recording(sampling.TrainBatches):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            kept.append(self.keep_rotation_plane)

    monkeypatch.setattr(run_module, "TrainBatches", Recording)
    assert pretrain(tiny_brats, tmp_path / "run", "--max-steps", "1", "--set", "train.val_every=0") == 0
    assert kept[0] is True  # the training batches (validation crops are not augmented at all)
