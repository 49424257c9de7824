"""The pieces that make a run safe to leave and re-enter: lock, signals, finite check, resume changes, run folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from p2gmed.errors import InputError
from p2gmed.train.safety import (
    CHANGES_NAME,
    RunLock,
    StopSignals,
    check_resume_changes,
    non_finite_parameters,
    prepare_run_folder,
    resume_changes,
)

SRC = str(Path(__file__).parents[1] / "src")
HOLD = ("from p2gmed.train.safety import RunLock; import sys, time; lock = RunLock(sys.argv[1]).acquire(); "
        "print('held', flush=True); time.sleep(120)")


def hold_lock(run: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], env={**os.environ, "PYTHONPATH": SRC},
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_is_refused_naming_the_holder_and_a_dead_holder_is_taken_over(tmp_path):
    proc = hold_lock(tmp_path / "run")
    try:
        with pytest.raises(InputError, match=f"in use by another p2g run \\(pid {proc.pid} "):
            RunLock(tmp_path / "run").acquire()
    finally:
        proc.kill()
        proc.wait()
    with RunLock(tmp_path / "run") as lock:  # the kernel released the dead holder's lock
        assert f"pid {os.getpid()}" in lock.holder()


def test_stop_signals_turn_sigterm_into_a_request_and_restore_the_handler():
    before = signal.getsignal(signal.SIGTERM)
    # a shell starts background jobs with SIGINT ignored, and StopSignals keeps an ignored signal ignored (next
    # test): give SIGINT Python's default handler, as in a terminal, whatever this process inherited
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        # raise_signal delivers to this thread, so the handler has run when it returns
        with StopSignals() as stop:
            signal.raise_signal(signal.SIGTERM)
            assert stop.requested == signal.SIGTERM and stop.exit_code == 143
            with pytest.raises(KeyboardInterrupt):  # a second signal stops at once
                signal.raise_signal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, inherited)
    assert signal.getsignal(signal.SIGTERM) is before


def test_non_finite_parameters_are_named():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    assert non_finite_parameters(net) == []
    with torch.no_grad():
        net[1].bias.fill_(float("inf"))
        net[0].weight[0, 0] = float("nan")
    assert non_finite_parameters(net) == ["0.weight", "1.bias"]


def test_resume_changes_ignore_length_and_logging_but_not_seed_lr_or_split(tmp_path):
    saved = {"train": {"seed": 0, "lr": 1e-4, "max_steps": 10, "log_every": 1, "device": "cuda"},
             "data": {"val_fraction": 0.2, "roi_size": [32, 32, 64]}}
    same = {"train": {**saved["train"], "max_steps": 50, "log_every": 5, "device": "cpu"},
            "data": {"val_fraction": 0.2, "roi_size": (32, 32, 64)}}
    assert resume_changes(saved, same) == []
    changed = {"train": {**same["train"], "seed": 1, "lr": 2e-4}, "data": {**same["data"], "val_fraction": 0.1}}
    assert resume_changes(saved, changed) == ["data.val_fraction: 0.2 -> 0.1", "train.lr: 0.0001 -> 0.0002",
                                              "train.seed: 0 -> 1"]
    with pytest.raises(InputError, match="--allow-config-change"):
        check_resume_changes(tmp_path, saved, changed, 10, allow=False)
    assert not (tmp_path / CHANGES_NAME).exists()
    check_resume_changes(tmp_path, saved, changed, 10, allow=True)
    assert "train.seed: 0 -> 1" in (tmp_path / CHANGES_NAME).read_text()


def test_run_folder_without_checkpoint_restarts_and_foreign_files_are_refused(tmp_path):
    run = tmp_path / "run"
    assert prepare_run_folder(run, resume=False) is False  # new
    with pytest.raises(InputError, match="--resume needs"):  # nothing to resume: a typo in --out, maybe
        prepare_run_folder(run, resume=True)
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("x")
    (run / "metrics.jsonl").write_text("")
    orphan = run / "checkpoints" / ".last.pt.ab12cd34.pt"
    orphan.write_bytes(b"half a checkpoint")
    assert prepare_run_folder(run, resume=True) is False and not orphan.exists()  # killed before step 1
    assert prepare_run_folder(run, resume=False) is False
    (run / "checkpoints" / "last.pt").write_bytes(b"ckpt")
    assert prepare_run_folder(run, resume=True) is True
    with pytest.raises(InputError, match="pass --resume"):
        prepare_run_folder(run, resume=False)
    other = tmp_path / "other"
    other.mkdir()
    (other / "thesis.tex").write_text("mine")
    with pytest.raises(InputError, match="thesis.tex"):
        prepare_run_folder(other, resume=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        prepare_run_folder(tmp_path / "file", resume=False)


def test_a_signal_the_process_ignores_stays_ignored():
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as under nohup or in a background job
    try:
        with StopSignals() as stop:
            signal.raise_signal(signal.SIGINT)
            assert stop.requested is None and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, old)
