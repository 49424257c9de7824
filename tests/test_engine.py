"""Training engine, checkpoints and distributed helpers, tested with a tiny stand-in task (no MONAI model)."""

from __future__ import annotations

import json
import math
import os
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from p2gmed.config import Config
from p2gmed.errors import InputError
from p2gmed.train import checkpoint as ckpt_mod
from p2gmed.train import distributed as dist_utils
from p2gmed.train.engine import NonFiniteLossError, Trainer
from p2gmed.train.validation import Validation
from p2gmed.train.runtime import lr_factor, step_seed, truncate_metrics

# --------------------------------------------------------------------------------------------------
# stand-in task: two "modalities", each forward + backward, dropout (global RNG) and generator noise


class TinyTask:
    terms = ("first", "second", "loss")

    def __init__(self, model: nn.Module, nan_at: int | None = None):
        self.model = model
        self.nan_at = nan_at

    def run_step(self, batch, generator):
        for index, name in enumerate(("first", "second")):
            x = batch["image"][:, index : index + 1]
            noise = torch.randn(x.shape, generator=generator)
            loss = ((self.model(x + 0.1 * noise) - batch["target"]) ** 2).mean()
            if self.nan_at is not None and batch["step"] == self.nan_at:
                loss = loss * float("nan")
            yield {name: loss, "loss": loss}


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Dropout(0.3), nn.Conv3d(4, 1, 1))


class Batches:
    """Deterministic in the step; optionally 'crashes' when asked for one step index."""

    def __init__(self, crash_at: int | None = None):
        self.crash_at = crash_at

    def __call__(self, step: int) -> dict:
        if step == self.crash_at:
            raise KeyboardInterrupt("simulated kill")
        g = torch.Generator().manual_seed(1000 + step)
        image = torch.randn(2, 2, 4, 4, 4, generator=g)
        return {"image": image, "target": image.mean(1, keepdim=True), "subject": ["a", "b"], "step": step}


def fixed_validation(model: nn.Module) -> dict:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(1, 1, 4, 4, 4, generator=g)
    with torch.no_grad():
        return {"mse": float(((model(x) - x) ** 2).mean())}


def make_cfg(**train) -> Config:
    cfg = Config()
    cfg.train.device = "cpu"
    cfg.train.log_every = 1
    cfg.train.checkpoint_every = 4
    cfg.train.lr = 1e-2
    for key, value in train.items():
        setattr(cfg.train, key, value)
    return cfg


def make_trainer(run, cfg, *, seed=0, crash_at=None, resume=False, max_steps=8, nan_at=None, validation=True):
    model = tiny_model(seed)
    return Trainer(
        model,
        TinyTask(model, nan_at),
        Batches(crash_at),
        cfg,
        run,
        task_name="pretrain",
        out_channels=1,
        modalities=["t1n", "t2w"],
        validation=Validation(fixed_validation, "mse", "min") if validation else None,
        max_steps=max_steps,
        resume=resume,
    )


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def without_time(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


# --------------------------------------------------------------------------------------------------
# resume exactness


@pytest.mark.parametrize(
    "update,schedule,precision",
    [
        ("per_step", "warmup_cosine", "fp32"),
        ("per_modality", "constant", "fp32"),
        ("per_modality", "constant", "fp16"),
    ],
)
def test_killed_and_resumed_run_is_bitwise_identical(tmp_path, update, schedule, precision):
    cfg = make_cfg(
        update=update, schedule=schedule, warmup_steps=2, grad_clip=1.0, val_every=2, precision=precision
    )
    straight = make_trainer(tmp_path / "a", cfg)
    straight.fit()

    # killed while preparing step 6: steps 5 was logged but the last checkpoint is at step 4
    with pytest.raises(KeyboardInterrupt):
        make_trainer(tmp_path / "b", cfg, crash_at=5).fit()
    assert [r["step"] for r in read_metrics(tmp_path / "b")] == [1, 2, 3, 4, 5]
    # a different initialisation proves the weights come from the checkpoint
    resumed = make_trainer(tmp_path / "b", cfg, seed=123, resume=True)
    resumed.fit()

    for (name, p), q in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(p, q), name
    assert without_time(read_metrics(tmp_path / "a")) == without_time(read_metrics(tmp_path / "b"))
    a = torch.load(tmp_path / "a/checkpoints/last.pt", weights_only=True)
    b = torch.load(tmp_path / "b/checkpoints/last.pt", weights_only=True)
    assert a["step"] == b["step"] == 8 and a["best"] == b["best"]
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 8


def rng_hungry_figure(model: nn.Module):
    """A validation figure that draws from the global RNG (as a dropout forward would) and plots the output."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = torch.rand(1, 1, 4, 4, 4)
    figure, ax = plt.subplots()
    ax.imshow(model(x)[0, 0, 2].float().numpy())
    return figure


def test_validation_figure_is_logged_and_resume_stays_bitwise_identical(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = make_cfg(val_every=2, checkpoint_every=4)

    def trainer(run, **kwargs):
        t = make_trainer(run, cfg, **kwargs)
        t.validation.figure = rng_hungry_figure
        return t

    straight = trainer(tmp_path / "a")
    straight.fit()
    # a run to step 5 validates (and draws) at its end, which the straight run does not: only a figure that leaves
    # the training RNG streams alone lets the resumed run match the straight one
    trainer(tmp_path / "b", max_steps=5).fit()
    resumed = trainer(tmp_path / "b", seed=123, resume=True)
    resumed.fit()
    for (name, p), q in zip(straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    def train_terms(run):
        return [{k: v for k, v in r.items() if not k.startswith("val_")} for r in without_time(read_metrics(run))]

    assert train_terms(tmp_path / "a") == train_terms(tmp_path / "b")

    events = EventAccumulator(str(tmp_path / "a" / "tb"))
    events.Reload()
    assert [image.step for image in events.Images("validation/case")] == [2, 4, 6, 8]  # one per validation
    assert all(image.height > 0 for image in events.Images("validation/case"))


def test_resume_past_max_steps_does_nothing_and_resume_needs_last(tmp_path):
    cfg = make_cfg()
    make_trainer(tmp_path / "r", cfg, max_steps=4, validation=False).fit()
    before = (tmp_path / "r/metrics.jsonl").read_text()
    make_trainer(tmp_path / "r", cfg, max_steps=4, resume=True, validation=False).fit()
    assert (tmp_path / "r/metrics.jsonl").read_text() == before
    with pytest.raises(InputError, match="last.pt"):
        make_trainer(tmp_path / "empty", cfg, resume=True).fit()


def test_truncate_metrics_drops_later_and_cut_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 1}\n{"step": 2, "loss": 2}\n{"step": 3, "loss": 3}\n{"step": 4, "lo')
    truncate_metrics(path, 2)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]


# --------------------------------------------------------------------------------------------------
# logs, checkpoints, validation


def test_metrics_config_tensorboard_and_checkpoint_contents(tmp_path):
    cfg = make_cfg(log_every=2, val_every=4)
    trainer = make_trainer(tmp_path, cfg, max_steps=6)
    trainer.fit()
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == [2, 4, 6]
    for r in records:
        assert {"step", "loss", "first", "second", "lr", "seconds"} <= set(r)
        assert all(math.isfinite(v) for v in r.values())
        # each term is the mean over the backward passes that computed it, "loss" over all of them
        assert r["loss"] == pytest.approx((r["first"] + r["second"]) / 2)
    assert "val_mse" in records[1] and "val_mse" in records[2] and "val_mse" not in records[0]
    assert (tmp_path / "config.yaml").read_text().startswith("data:")
    assert any((tmp_path / "tb").iterdir())

    last = ckpt_mod.load_checkpoint(tmp_path / "checkpoints/last.pt")
    expected = set(ckpt_mod.CHECKPOINT_KEYS) | set(ckpt_mod.RESUME_KEYS) | {"labels"}
    assert expected <= set(last)
    assert last["step"] == 6 and last["task"] == "pretrain" and last["modalities"] == ["t1n", "t2w"]
    assert set(last["versions"]) == {"p2gmed", "monai", "torch"}
    assert last["config"]["train"]["log_every"] == 2
    best = ckpt_mod.load_checkpoint(tmp_path / "checkpoints/best.pt")
    assert best["best"]["name"] == "mse" and best["best"]["step"] in (4, 6)
    val = {r["step"]: r["val_mse"] for r in records if "val_mse" in r}
    assert best["best"]["value"] == pytest.approx(min(val.values()))
    # the stored weights are the ones that scored best
    model = tiny_model()
    model.load_state_dict(best["model"])
    model.eval()
    assert fixed_validation(model)["mse"] == pytest.approx(best["best"]["value"], rel=1e-6)


def test_learning_rate_follows_the_schedule(tmp_path):
    cfg = make_cfg(schedule="warmup_cosine", warmup_steps=2, lr=0.1)
    make_trainer(tmp_path, cfg, max_steps=6, validation=False).fit()
    lrs = [r["lr"] for r in read_metrics(tmp_path)]
    # hand-worked: warmup 0.05, 0.1; then 0.05 * (1 + cos(pi * k / 4)) for k = 0..3
    expected = [0.05, 0.1] + [0.05 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]
    assert lrs == pytest.approx(expected)


def test_lr_factor_constant_and_bad_name():
    assert [lr_factor("constant", i, 3, 10) for i in range(5)] == pytest.approx([1 / 3, 2 / 3, 1, 1, 1])
    assert lr_factor("warmup_cosine", 0, 0, 4) == 1.0
    assert lr_factor("warmup_cosine", 2, 0, 4) == pytest.approx(0.0 + 0.5 * (1 + math.cos(math.pi / 2)))
    with pytest.raises(InputError):
        lr_factor("linear", 0, 0, 4)


def test_early_stopping_stops_after_patience(tmp_path):
    cfg = make_cfg(val_every=1, early_stopping=2, lr=0.0)  # lr 0: the metric never improves after step 1
    trainer = make_trainer(tmp_path, cfg, max_steps=20)
    trainer.fit()
    assert trainer.step == 3
    assert ckpt_mod.load_checkpoint(tmp_path / "checkpoints/last.pt")["step"] == 3


def test_non_finite_loss_stops_without_a_bad_checkpoint(tmp_path):
    cfg = make_cfg(checkpoint_every=2)
    with pytest.raises(NonFiniteLossError, match="step 4"):
        make_trainer(tmp_path, cfg, nan_at=3, validation=False).fit()
    assert ckpt_mod.load_checkpoint(tmp_path / "checkpoints/last.pt")["step"] == 2
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(math.isfinite(v) for r in records for v in r.values())


def test_a_step_with_nothing_to_learn_updates_nothing(tmp_path, caplog):
    class Idle(TinyTask):
        def run_step(self, batch, generator):
            return iter(())  # e.g. invariance alone on a batch of single-modality crops

    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = Trainer(
        model, Idle(model), Batches(), make_cfg(), tmp_path, task_name="pretrain", out_channels=1,
        modalities=["t1n"], max_steps=1,
    )  # fmt: skip
    trainer.fit()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    (record,) = read_metrics(tmp_path)
    assert record["loss"] == record["first"] == 0.0 and "computed no loss" in caplog.text


def test_step_seed_depends_on_every_part():
    seeds = {step_seed(s, t, r) for s in (0, 1) for t in (0, 1) for r in (0, 1)}
    assert len(seeds) == 8 and step_seed(3, 4, 5) == step_seed(3, 4, 5)


# --------------------------------------------------------------------------------------------------
# checkpoint files


def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    common = dict(
        model=nn.Linear(2, 2),
        config={},
        task="pretrain",
        architecture="p2g",
        out_channels=2,
        modalities=["t1n"],
    )
    ckpt_mod.save_checkpoint(path, step=1, **common)
    original = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(InputError, match=r"could not write .*last.pt \(disk full\); the earlier last.pt is unchanged"):
        ckpt_mod.save_checkpoint(path, step=2, **common)
    assert path.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        ckpt_mod.load_checkpoint(tmp_path / "nothing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(InputError, match="junk.pt"):
        ckpt_mod.load_checkpoint(junk)
    text = tmp_path / "text.pt"
    text.write_text("junk\n")  # torch.load raises KeyError on this one
    with pytest.raises(InputError, match="text.pt"):
        ckpt_mod.load_checkpoint(text)
    plain = tmp_path / "plain.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, plain)
    with pytest.raises(InputError, match="is not a p2gmed checkpoint"):
        ckpt_mod.load_checkpoint(plain)
    good = tmp_path / "good.pt"
    ckpt_mod.save_checkpoint(
        good,
        model=nn.Linear(2, 2),
        step=0,
        config={},
        task="pretrain",
        architecture="p2g",
        out_channels=2,
        modalities=["t1n"],
    )
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:500])
    with pytest.raises(InputError, match="truncated.pt"):
        ckpt_mod.load_checkpoint(truncated)
    unsafe = tmp_path / "unsafe.pt"
    unsafe.write_bytes(pickle.dumps(Path("x")))
    with pytest.raises(InputError):
        ckpt_mod.load_checkpoint(unsafe)


def test_rng_state_round_trip():
    import random

    import numpy as np

    state = ckpt_mod.capture_rng()
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.random(), np.random.rand(), torch.rand(3)
    ckpt_mod.restore_rng(state)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


def test_check_monai_version(monkeypatch):
    import monai

    monkeypatch.setattr(monai, "__version__", "1.6.1")
    ckpt_mod.check_monai_version({"versions": {"monai": "1.5.0"}})
    with pytest.raises(InputError, match="1.3.0"):
        ckpt_mod.check_monai_version({"versions": {"monai": "1.3.0"}}, path="old.pt")
    ckpt_mod.check_monai_version({"versions": {"monai": "1.3.0"}}, allow=True)  # warns only
    monkeypatch.setattr(monai, "__version__", "1.4.0")
    with pytest.raises(InputError):
        ckpt_mod.check_monai_version({"versions": {"monai": "1.5.2"}})


# --------------------------------------------------------------------------------------------------
# distributed helpers


def test_single_process_helpers_are_identities():
    t = torch.arange(6.0).reshape(3, 2)
    assert dist_utils.all_gather_with_grad(t) is t
    assert dist_utils.reduce_mean({"a": 1.5}) == {"a": 1.5}
    assert (dist_utils.rank(), dist_utils.world_size(), dist_utils.is_main()) == (0, 1, True)
    assert not dist_utils.is_distributed() and not dist_utils.init_from_env()


def _join_as(rank: int, world: int, port: int) -> None:
    """Set the environment torchrun gives `rank` (one thread, so two ranks share the two cores). As under
    torchrun, the store the ranks meet at is hosted by the launcher (TORCHELASTIC_USE_AGENT_STORE)."""
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        TORCHELASTIC_USE_AGENT_STORE="True",
    )
    torch.set_num_threads(1)


def _run_two_ranks(worker, tmp_path) -> None:
    """Run `worker(rank, 2, port, str(tmp_path))` in two forked processes.

    This process hosts their rendezvous store on a port the operating system assigns and that stays bound
    until both ranks are done (what torchrun's agent does), so no other test can take the port in between.
    """
    import datetime

    import torch.multiprocessing as mp

    store = torch.distributed.TCPStore(
        "127.0.0.1", 0, is_master=True, wait_for_workers=False, timeout=datetime.timedelta(seconds=120)
    )
    mp.start_processes(worker, args=(2, store.port, str(tmp_path)), nprocs=2, join=True, start_method="fork")


def _gather_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    _join_as(rank, world, port)
    assert dist_utils.init_from_env()
    x = torch.full((2, 3), float(rank + 1), requires_grad=True)
    gathered = dist_utils.all_gather_with_grad(x)
    # loss on rank r weights every row by (r + 1) * row index: the gradient reaching rank r's rows is the sum
    weights = torch.arange(gathered.shape[0], dtype=torch.float32)[:, None] * (rank + 1)
    (gathered * weights).sum().backward()
    mean = dist_utils.reduce_mean({"v": float(rank)})
    torch.save({"gathered": gathered.detach(), "grad": x.grad, "mean": mean}, f"{out_dir}/{rank}.pt")
    torch.distributed.destroy_process_group()


def test_all_gather_with_grad_two_processes(tmp_path):
    _run_two_ranks(_gather_worker, tmp_path)
    for rank in range(2):
        out = torch.load(tmp_path / f"{rank}.pt", weights_only=True)
        assert torch.equal(out["gathered"][:, 0], torch.tensor([1.0, 1.0, 2.0, 2.0]))
        rows = torch.arange(2 * rank, 2 * rank + 2, dtype=torch.float32)
        # d/dx of sum_k sum_i (k + 1) * i * g_i = (1 + 2) * i for this rank's rows i
        assert torch.equal(out["grad"], (3 * rows)[:, None].expand(2, 3))
        assert out["mean"] == {"v": 0.5}


def _average_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    _join_as(rank, world, port)
    assert dist_utils.init_from_env()
    shared, only_rank0, unused = (torch.nn.Parameter(torch.zeros(3)) for _ in range(3))
    loss = ((rank + 1) * shared).sum()
    if rank == 0:  # a branch only rank 0's batch reaches
        loss = loss + (4.0 * only_rank0).sum()
    loss.backward()
    dist_utils.average_gradients([shared, only_rank0, unused])
    torch.save({"shared": shared.grad, "only_rank0": only_rank0.grad, "unused": unused.grad}, f"{out_dir}/{rank}.pt")
    torch.distributed.destroy_process_group()


def test_average_gradients_when_ranks_used_different_parameters(tmp_path):
    # without the agreement on which parameters have gradients, rank 0 would reduce 6 numbers and rank 1 three
    _run_two_ranks(_average_worker, tmp_path)
    for rank in range(2):
        out = torch.load(tmp_path / f"{rank}.pt", weights_only=True)
        assert torch.equal(out["shared"], torch.full((3,), 1.5))  # (1 + 2) / 2
        assert torch.equal(out["only_rank0"], torch.full((3,), 2.0))  # (4 + 0) / 2, the same on both ranks
        assert out["unused"] is None


# --------------------------------------------------------------------------------------------------
# precision and devices


def test_bf16_on_cpu_trains_and_missing_cuda_is_refused(tmp_path):
    trainer = make_trainer(tmp_path / "bf16", make_cfg(precision="bf16"), max_steps=2, validation=False)
    trainer.fit()
    assert all(math.isfinite(r["loss"]) for r in read_metrics(tmp_path / "bf16"))
    before = tiny_model(0).state_dict()
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())  # it learned
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA device"):
            make_trainer(tmp_path / "cuda", make_cfg(device="cuda"))


def _updates(run, precision, update):
    """One training step: the gradients the optimizer sees at each update, conv output dtypes, trainer."""
    trainer = make_trainer(run, make_cfg(precision=precision, update=update), max_steps=1, validation=False)
    seen, dtypes = [], []
    trainer.optimizer.register_step_pre_hook(
        lambda *_: seen.append([p.grad.clone() for p in trainer.model.parameters()])
    )
    trainer.model[0].register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    trainer.fit()
    return seen, dtypes, trainer


@pytest.mark.parametrize("update", ["per_step", "per_modality"])
def test_fp16_scales_the_loss_and_updates_with_unscaled_gradients(tmp_path, update):
    reference, dtypes32, _ = _updates(tmp_path / "fp32", "fp32", update)
    scaled, dtypes16, trainer = _updates(tmp_path / "fp16", "fp16", update)
    assert set(dtypes32) == {torch.float32} and set(dtypes16) == {torch.float16}  # autocast is on
    assert trainer.scaler.is_enabled() and trainer.scaler.get_scale() > 1  # the backward ran on scaled losses
    assert len(scaled) == len(reference) == (2 if update == "per_modality" else 1)
    # the optimizer sees the gradients of fp32 up to fp16 rounding, never the scaled ones (x 65536); with
    # per_modality the gradients kept from the first modality are brought back to the loss scale before the
    # second backward adds to them
    for ours, theirs in zip(scaled, reference, strict=True):
        for g16, g32 in zip(ours, theirs, strict=True):
            torch.testing.assert_close(g16, g32, rtol=3e-2, atol=3e-3)
    saved = torch.load(tmp_path / "fp16/checkpoints/last.pt", weights_only=True)["scaler"]
    assert saved["scale"] == trainer.scaler.get_scale()


def _train_worker(rank: int, world: int, port: int, run: str) -> None:
    _join_as(rank, world, port)
    dist_utils.init_from_env()
    torch.manual_seed(rank)  # different initial weights: the broadcast must make them equal
    model = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 1, 1))
    batches = Batches()
    trainer = Trainer(
        model,
        TinyTask(model),
        lambda step: batches(10 * step + rank),
        make_cfg(),
        run,
        task_name="pretrain",
        out_channels=1,
        modalities=["t1n", "t2w"],
        max_steps=3,
    )
    trainer.fit()
    torch.save(model.state_dict(), f"{run}/weights-{rank}.pt")
    torch.distributed.destroy_process_group()


def test_two_process_training_keeps_ranks_in_sync_and_writes_once(tmp_path):
    _run_two_ranks(_train_worker, tmp_path)
    a, b = (torch.load(tmp_path / f"weights-{r}.pt", weights_only=True) for r in range(2))
    assert all(torch.equal(a[k], b[k]) for k in a)  # ranks saw different batches, yet identical weights
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3]  # rank 0 alone wrote the log
    saved = ckpt_mod.load_checkpoint(tmp_path / "checkpoints/last.pt")["model"]
    assert all(torch.equal(saved[k], a[k]) for k in a)


def _shard_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    """Load the training data as `run_training` does and record which subjects this rank read from disk."""
    from p2gmed.config import load_config
    from p2gmed.data import volumes
    from p2gmed.data.read import read_dataset
    from p2gmed.data.sampling import TrainBatches
    from p2gmed.train.run import load_training_shard

    _join_as(rank, world, port)
    assert dist_utils.init_from_env()
    read: list[str] = []
    original = volumes.load_subject

    def recording(subject, *args, **kwargs):
        read.append(subject.subject_id)
        return original(subject, *args, **kwargs)

    volumes.load_subject = recording
    cfg = load_config(Path(__file__).parents[1] / "configs" / "tiny-cpu.yaml")
    subjects = read_dataset(Path(out_dir) / "data")
    loaded = load_training_shard(subjects, cfg, dist_utils.rank(), dist_utils.world_size(), with_label=True)
    batches = TrainBatches(loaded, cfg, seed=cfg.train.seed, rank=rank, world=world)
    drawn = sorted({name for step in range(6) for name in batches.batch(step)["subject"]})
    labels = loaded[0].label.dtype
    Path(out_dir, f"shard{rank}.json").write_text(json.dumps({"read": read, "drawn": drawn, "label": str(labels)}))
    torch.distributed.destroy_process_group()


def test_each_rank_loads_and_draws_only_its_shard(tmp_path):
    from p2gmed.data.synthetic import make_demo

    make_demo(tmp_path / "data", kind="brain", subjects=4, seed=0)
    _run_two_ranks(_shard_worker, tmp_path)
    shards = [json.loads((tmp_path / f"shard{r}.json").read_text()) for r in range(2)]
    reads = [set(s["read"]) for s in shards]
    assert all(len(s["read"]) == 2 for s in shards)  # each rank read two subjects from disk, once each
    assert reads[0].isdisjoint(reads[1]) and len(reads[0] | reads[1]) == 4
    assert all(set(s["drawn"]) <= r for s, r in zip(shards, reads))  # batches only from the rank's own shard
    assert all(s["label"] == "torch.uint8" for s in shards)
