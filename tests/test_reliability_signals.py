"""Interrupted commands exit with the shell's convention (130 for SIGINT, 143 for SIGTERM) and can be re-entered
(docs/reliability.md). These tests start `p2g` in a subprocess and signal it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SRC = str(Path(__file__).parents[1] / "src")


def default_sigint() -> None:
    """pytest-xdist workers ignore SIGINT, and children inherit that; a user's shell does not."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1",
           "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "p2gmed", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)


def wait_for(proc: subprocess.Popen, text: str, timeout: float = 240) -> str:
    """Read stdout until a line holds `text`; returns what was read."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        if text in line:
            return "".join(seen)
    proc.kill()
    raise AssertionError(f"never saw {text!r}; output: {''.join(seen)[-2000:]} {proc.stderr.read()[-2000:]}")


def test_ctrl_c_inside_demo_is_an_interrupt_not_a_failure(tmp_path):
    proc = start("demo", "--quick", "--out", str(tmp_path / "demo"), "--threads", "1", cwd=tmp_path)
    wait_for(proc, "==> [1/")
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "failed (exit" not in err
    assert "interrupted" in err.splitlines()[-1]


def test_a_failed_write_keeps_the_earlier_file_and_says_so(tmp_path):
    """`ulimit -f` stands in for a full disk: the write fails half-way, the earlier file is untouched."""
    import resource

    import torch

    from p2gmed.config import config_to_dict, load_config
    from p2gmed.models.baselines import build_architecture
    from p2gmed.train.checkpoint import save_checkpoint

    cfg = load_config(Path(__file__).parents[1] / "configs" / "tiny-cpu.yaml")
    model = tmp_path / "model.pt"
    save_checkpoint(model, model=build_architecture(cfg, "p2g", 4), step=1, config=config_to_dict(cfg),
                    task="pretrain", architecture="p2g", out_channels=4, modalities=["t1n", "t1c", "t2w", "t2f"])
    out = tmp_path / "swin.pt"
    args = ["export", "--model", str(model), "--format", "monai-swinunetr", "--out", str(out)]
    first = start(*args, cwd=tmp_path)
    assert first.wait(timeout=240) == 0, first.stderr.read()
    before = out.read_bytes()

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))

    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-m", "p2gmed", *args, "--force"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, preexec_fn=small_files, timeout=240)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert f"could not write {out}" in proc.stderr and "unchanged" in proc.stderr
    assert out.read_bytes() == before and torch.load(out, weights_only=True)["state_dict"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".swin")) == []


@pytest.mark.slow
def test_sigterm_during_the_demo_training_resumes_on_the_next_run(tmp_path):
    out = tmp_path / "demo"
    proc = start("demo", "--quick", "--out", str(out), "--threads", "1", cwd=tmp_path)
    wait_for(proc, "==> [2/")  # pre-training
    metrics = out / "runs" / "pretrain" / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics.is_file() and metrics.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err
    assert (out / "runs" / "pretrain" / "checkpoints" / "last.pt").is_file()
    (out / "runs" / "pretrain" / "my-notes.txt").write_text("mine")
    again = start("demo", "--quick", "--out", str(out), "--threads", "1", cwd=tmp_path)
    text, err = again.communicate(timeout=900)
    assert again.returncode == 0, err
    assert "resuming the interrupted run" in text and (out / "report.md").is_file()
    assert (out / "runs" / "pretrain" / "my-notes.txt").read_text() == "mine"


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="seeds run side by side on two or more cores")
def test_sigterm_stops_the_seeds_running_side_by_side_and_the_rerun_resumes_both(tmp_path):
    """`p2g reproduce --seeds 2` trains its seeds in lanes (own processes): SIGTERM to p2g reaches both trainings,
    each saves a checkpoint, nothing keeps running, and the same command continues both."""
    data = tmp_path / "data"
    made = start("data", "make-demo", "--out", str(data), "--kind", "brain", "--subjects", "5", cwd=tmp_path)
    assert made.wait(timeout=120) == 0
    out = tmp_path / "o"
    argv = ("reproduce", "table2", "--data", str(data), "--out", str(out), "--max-steps", "400", "--seeds", "2")
    proc = start(*argv, cwd=tmp_path)
    runs = [out / "runs" / f"p2g-pretrain-seed{k}" for k in (0, 1)]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not all(
            (r / "metrics.jsonl").is_file() and len((r / "metrics.jsonl").read_text().splitlines()) >= 2 for r in runs):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-3000:]
    assert all((r / "checkpoints" / "last.pt").is_file() for r in runs)
    left = subprocess.run(["pgrep", "-f", str(out)], capture_output=True, text=True).stdout.split()
    assert not left, f"commands still running after p2g stopped: {left}"
    again = start(*argv, cwd=tmp_path)
    waiting, deadline = {f"resuming the interrupted run {r}" for r in runs}, time.monotonic() + 120
    while waiting and time.monotonic() < deadline:  # each lane resumes its own run, in either order
        line = again.stdout.readline()
        waiting = {w for w in waiting if w not in line}
    assert not waiting, waiting
    again.send_signal(signal.SIGTERM)
    again.communicate(timeout=300)
    assert again.returncode == 143
