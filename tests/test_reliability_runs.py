"""Training runs end in a state they can leave: divergence stops with exit 1 and a finite checkpoint, SIGTERM and
SIGINT save and exit 143 / 130, a second run on the same folder is refused, a killed run restarts or resumes,
changed settings on resume are refused or recorded (docs/reliability.md).

The network and task are small stand-ins (the engine around them is what is tested); the kill tests run `p2g` in
a subprocess through a launcher that installs the same stand-ins with a slower step."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from p2gmed.cli import main

CONFIG = str(Path(__file__).parents[1] / "configs" / "tiny-cpu.yaml")
SRC = str(Path(__file__).parents[1] / "src")
QUIET = ["--set", "data.val_fraction=0", "--set", "train.log_every=1", "--device", "cpu"]

LAUNCHER = '''
import sys, time
from torch import nn
import p2gmed.train.run as run

class SlowStandIn:
    terms = ("decomposition", "loss")
    def __init__(self, model, cfg):
        self.model = model
    def run_step(self, batch, generator):
        time.sleep(0.3)
        image = batch["image"]
        error = ((self.model(image) - image) ** 2).mean()
        yield {"decomposition": error, "loss": error}

run.build_architecture = lambda cfg, architecture, out_channels: nn.Conv3d(out_channels, out_channels, 1)
run.PretrainTask = SlowStandIn
from p2gmed.cli import main
sys.exit(main(sys.argv[1:]))
'''


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """3 subjects, brats23 layout, 36 x 36 x 64 voxels."""
    root = tmp_path_factory.mktemp("runs") / "brats"
    rng = np.random.default_rng(0)
    box = np.zeros((36, 36, 64), np.float32)
    box[6:30, 6:30, 8:56] = 1
    for i in range(3):
        case = f"BraTS-GLI-{i:05d}-000"
        (root / case).mkdir(parents=True)
        for j, name in enumerate(("t1n", "t1c", "t2w", "t2f")):
            arr = box * (100 + 50 * j + 20 * rng.random(box.shape, dtype=np.float32))
            nib.save(nib.Nifti1Image(arr, np.diag([2.0, 2.0, 2.0, 1.0])), root / case / f"{case}-{name}.nii.gz")
    return root


class StandInTask:
    terms = ("decomposition", "loss")
    #: set by a test: the loss stays finite but its gradient is NaN (sqrt at 0), as with an unstable layer
    poison = False

    def __init__(self, model, cfg, *args):
        self.model = model

    def run_step(self, batch, generator):
        image = batch["image"]
        error = ((self.model(image) - image) ** 2).mean()
        if StandInTask.poison:
            error = error + (self.model.weight * 0).abs().sqrt().sum()
        yield {"decomposition": error, "loss": error}


@pytest.fixture
def stand_ins(monkeypatch):
    import p2gmed.train.run as run

    monkeypatch.setattr(run, "build_architecture", lambda cfg, arch, out_channels: nn.Conv3d(out_channels,
                                                                                              out_channels, 1))
    monkeypatch.setattr(run, "PretrainTask", StandInTask)
    monkeypatch.setattr(run, "SynthesisTask", StandInTask)


def pretrain(data, run, *extra) -> int:
    return main(["pretrain", "--data", str(data), "--out", str(run), "--config", CONFIG, *QUIET, *extra])


def records(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def checkpoint_step(run: Path) -> int:
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    return int(ckpt["step"])


# ------------------------------------------------------------------------------------------- divergence, config


def test_a_learning_rate_that_is_not_positive_and_finite_is_refused(data, tmp_path, stand_ins, capsys):
    for value in ("-1", "0", ".inf", "1.0e+39"):
        assert pretrain(data, tmp_path / "run", "--max-steps", "1", "--set", f"train.lr={value}") == 2
        err = capsys.readouterr().err
        assert "train.lr must be a positive finite number" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_diverging_parameters_stop_the_run_with_exit_1_keeping_the_last_finite_checkpoint(data, tmp_path, stand_ins,
                                                                                         monkeypatch, capsys):
    run = tmp_path / "run"
    assert pretrain(data, run, "--max-steps", "2") == 0
    assert checkpoint_step(run) == 2
    monkeypatch.setattr(StandInTask, "poison", True)  # finite loss, NaN gradient: only the parameters show it
    rc = pretrain(data, run, "--max-steps", "4", "--resume")
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if "error:" in line]  # one sentence (beside progress bars)
    assert rc == 1 and "parameters became non-finite in the update of step 3" in line and "Traceback" not in err
    assert "keeps the last finite state" in line, line
    assert checkpoint_step(run) == 2
    assert [r["step"] for r in records(run)] == [1, 2]
    assert all(math.isfinite(v) for r in records(run) for v in r.values())

    fresh = tmp_path / "fresh"  # diverging before any checkpoint says so
    assert pretrain(data, fresh, "--max-steps", "3") == 1
    assert "before its first checkpoint" in capsys.readouterr().err
    assert records(fresh) == [] and not (fresh / "checkpoints" / "last.pt").exists()


def test_an_accepted_learning_rate_change_takes_effect_and_is_recorded(data, tmp_path, stand_ins, capsys):
    run = tmp_path / "run"
    assert pretrain(data, run, "--max-steps", "2", "--set", "train.schedule=constant") == 0
    assert pretrain(data, run, "--max-steps", "3", "--resume", "--set", "train.schedule=constant", "--set",
                    "train.lr=0.5", "--allow-config-change") == 0
    assert records(run)[-1]["lr"] == 0.5
    assert re.search(r"train.lr: [0-9.e-]+ -> 0.5", (run / "config-changes.jsonl").read_text())


def test_resume_refuses_changes_that_break_exact_resume_unless_allowed(data, tmp_path, stand_ins, capsys):
    run = tmp_path / "run"
    assert pretrain(data, run, "--max-steps", "2") == 0
    capsys.readouterr()
    assert pretrain(data, run, "--max-steps", "3", "--resume", "--set", "train.seed=7") == 2
    err = capsys.readouterr().err
    assert re.search(r"train.seed: \d+ -> 7", err) and "--allow-config-change" in err
    assert checkpoint_step(run) == 2 and not (run / "config-changes.jsonl").exists()
    assert pretrain(data, run, "--max-steps", "3", "--resume") == 0  # a longer run is no change
    assert checkpoint_step(run) == 3
    assert pretrain(data, run, "--max-steps", "4", "--resume", "--set", "train.seed=7", "--allow-config-change") == 0
    changes = [json.loads(line) for line in (run / "config-changes.jsonl").read_text().splitlines()]
    assert len(changes) == 1 and changes[0]["step"] == 3 and len(changes[0]["changes"]) == 1
    assert re.fullmatch(r"train.seed: \d+ -> 7", changes[0]["changes"][0])


def test_finetune_writes_init_report_only_once_the_device_is_accepted(data, tmp_path, stand_ins, monkeypatch,
                                                                      capsys):
    import p2gmed.train.engine as engine
    import p2gmed.train.run as run_module
    from p2gmed.errors import InputError

    monkeypatch.setattr(run_module, "initialise", lambda *a, **k: {"init": "full", "matched": ["w"]})
    resolve = engine.resolve_device

    def refuse(name):
        raise InputError("device 'cuda' asks for CUDA, but no CUDA device is available; use --device cpu")

    monkeypatch.setattr(engine, "resolve_device", refuse)
    run = tmp_path / "tune"
    argv = ["finetune", "--task", "synthesis", "--data", str(data), "--out", str(run), "--config", CONFIG,
            "--init", str(tmp_path / "unused.pt"), *QUIET, "--max-steps", "1"]
    assert main(argv) == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert not run.exists()  # nothing half-written: the same command works once the device is fixed
    monkeypatch.setattr(engine, "resolve_device", resolve)
    assert main(argv) == 0
    assert json.loads((run / "init_report.json").read_text())["init"] == "full"


# ------------------------------------------------------------------------------------------- signals and kills


def default_sigint() -> None:
    """pytest-xdist workers ignore SIGINT, and children inherit that; a user's shell does not."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def launch(tmp_path: Path, data: Path, run: Path, *extra: str) -> subprocess.Popen:
    script = tmp_path / "launcher.py"
    script.write_text(LAUNCHER)
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    argv = ["pretrain", "--data", str(data), "--out", str(run), "--config", CONFIG, *QUIET, *extra]
    return subprocess.Popen([sys.executable, str(script), *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)


def wait_for_steps(run: Path, proc: subprocess.Popen, n: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(records(run)) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early (exit {proc.returncode}): {proc.stderr.read()[-2000:]}")
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("the run logged no steps in time")


@pytest.mark.parametrize(("signum", "code", "name"), [
    (signal.SIGTERM, 143, "SIGTERM"),
    pytest.param(signal.SIGINT, 130, "SIGINT", marks=pytest.mark.slow),  # the same path; Ctrl-C in the demo is fast
])
def test_a_signal_saves_a_checkpoint_exits_with_the_convention_and_the_run_resumes(data, tmp_path, signum, code, name):
    run = tmp_path / "run"
    proc = launch(tmp_path, data, run, "--max-steps", "500", "--set", "train.checkpoint_every=0")
    wait_for_steps(run, proc, 2)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Traceback" not in err and f"stopped by {name} after step" in err and "--resume" in err
    stopped = checkpoint_step(run)
    assert stopped >= 2 and [r["step"] for r in records(run)] == list(range(1, stopped + 1))
    again = launch(tmp_path, data, run, "--max-steps", str(stopped + 2), "--resume")
    _, err = again.communicate(timeout=180)
    assert again.returncode == 0, err
    assert checkpoint_step(run) == stopped + 2
    assert [r["step"] for r in records(run)] == list(range(1, stopped + 3))


def test_a_second_run_is_refused_and_a_killed_run_restarts_from_step_0(data, tmp_path):
    run = tmp_path / "run"
    first = launch(tmp_path, data, run, "--max-steps", "500", "--set", "train.checkpoint_every=0")
    wait_for_steps(run, first, 1)
    second = launch(tmp_path, data, run, "--max-steps", "5", "--resume")
    _, err = second.communicate(timeout=120)
    assert second.returncode == 2 and f"in use by another p2g run (pid {first.pid} " in err, err
    first.kill()  # SIGKILL: nothing saved, the lock is left behind by a dead process
    first.communicate(timeout=60)
    assert not (run / "checkpoints" / "last.pt").exists()
    orphan = run / "checkpoints" / ".last.pt.ab12cd34.pt"
    orphan.parent.mkdir(exist_ok=True)
    orphan.write_bytes(b"half a checkpoint of a killed write")
    third = launch(tmp_path, data, run, "--max-steps", "2")
    _, err = third.communicate(timeout=180)
    assert third.returncode == 0, err
    assert "starting from step 0" in err and not orphan.exists()
    assert checkpoint_step(run) == 2 and [r["step"] for r in records(run)] == [1, 2]
