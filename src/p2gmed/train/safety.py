"""What keeps a training run safe to leave and re-enter (docs/reliability.md):

- `RunLock`: one run per run folder; a second start is refused naming the holder's pid. The lock is an OS
  file lock (`flock`), so a killed run's lock is released by the kernel and the next start takes it over.
- `StopSignals`: SIGTERM (SLURM, Kubernetes) and SIGINT (Ctrl-C) ask the loop to stop after the current step;
  the trainer saves a checkpoint and the command exits 143 / 130. A second signal stops at once.
- `non_finite_parameters`: the names of parameters that hold NaN or infinite values after an update.
- `resume_changes`: the settings of a resumed run that differ from its checkpoint and break exact resume.
- `prepare_run_folder`: a folder a killed run left without any checkpoint restarts from step 0; the temporary
  files of an interrupted checkpoint write are removed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from p2gmed.errors import InputError, RunError
from p2gmed.outputs import remove_orphan_temporaries

logger = logging.getLogger(__name__)

LOCK_NAME = ".lock"
#: a record of every configuration change accepted on `--resume --allow-config-change`
CHANGES_NAME = "config-changes.jsonl"
#: files and folders a p2g run writes into its folder (anything else there is the user's)
RUN_FILES = ("config.yaml", "metrics.jsonl", "tb", "checkpoints", "init_report.json", LOCK_NAME, CHANGES_NAME,
             ".p2g-outputs.json")
#: settings that may change on resume without changing what the run computes (the initialisation is not
#: re-applied on resume, so `--resume` need not repeat `--init`)
RESUME_FREE = ("train.max_steps", "train.epochs", "train.log_every", "train.checkpoint_every", "train.val_every",
               "train.early_stopping", "train.device", "inference.", "tune.init", "tune.allow_mismatch")


class NonFiniteError(RunError):
    """Parameters, loss or a validation metric became NaN or infinite: the run stops (exit 1)."""


# --------------------------------------------------------------------------------------------------- lock


class RunLock:
    """An exclusive lock on a run folder, held while the run writes there.

    Args:
        run_dir: the run folder (created).
    """

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK_NAME
        self._handle: Any = None

    def holder(self) -> str:
        try:
            info = json.loads(self.path.read_text())
            return f"pid {info['pid']} on {info['host']}, since {info['since']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "another process"

    def acquire(self) -> RunLock:
        """Take the lock, or raise InputError naming the process that holds it."""
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - kept open while the lock is held
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise InputError(f"{self.path.parent} is in use by another p2g run ({self.holder()}); wait for it to "
                             "finish or stop it, or choose another --out") from None
        except OSError as exc:  # a file system without locks (some network mounts): go on, unguarded
            logger.warning("cannot lock %s (%s); make sure no other run writes into this folder", self.path, exc)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S")}))
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing releases the flock; the file stays (it is harmless and tiny)
            self._handle = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def run_folder_lock(run_dir: Path, take: bool = True) -> Iterator[None]:
    """Hold the run folder's lock for the block (`take` False: another process of the run holds it). A folder
    this call created is removed again if the run fails before writing anything into it."""
    if not take:
        yield
        return
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(f"--out {run_dir} is a file, not a run folder")
    created = not run_dir.exists()
    lock = RunLock(run_dir).acquire()
    try:
        yield
    except BaseException:
        lock.release()
        if created and [p.name for p in run_dir.iterdir()] == [LOCK_NAME]:
            lock.path.unlink()
            run_dir.rmdir()
        raise
    lock.release()


# --------------------------------------------------------------------------------------------------- signals


class StopSignals:
    """Inside the block, SIGTERM and SIGINT set `requested` (the signal number) instead of killing the process.

    A second signal raises KeyboardInterrupt at once (checkpoints are written atomically, so that is safe).
    A signal the process was started ignoring stays ignored; outside the main thread (where handlers cannot be
    installed) it does nothing.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.requested: int | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signum
        logger.warning("%s received: stopping after this step and saving a checkpoint (send it again to stop "
                       "at once)", signal.Signals(signum).name)

    def agreed(self, world: int = 1) -> bool:
        """Whether a signal asked the run to stop, agreed over the ranks (they must save and leave together)."""
        requested = self.requested is not None
        if world > 1:
            from p2gmed.train import distributed

            requested = distributed.reduce_mean({"stop": float(requested)})["stop"] > 0
        return requested

    @property
    def exit_code(self) -> int:
        return 128 + int(self.requested or signal.SIGINT)

    @property
    def name(self) -> str:
        return signal.Signals(self.requested or signal.SIGINT).name

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                if signal.getsignal(signum) is signal.SIG_IGN:
                    continue  # started ignoring it (nohup, a background job): keep ignoring it
                self._old[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, old in self._old.items():
            signal.signal(signum, old)
        self._old.clear()


# --------------------------------------------------------------------------------------------------- finite


def non_finite_parameters(model: Any) -> list[str]:
    """Names of the parameters holding a NaN or infinite value (one device sync for the whole model)."""
    import torch

    named = [(n, p) for n, p in model.named_parameters()]
    if not named:
        return []
    flags = torch.stack([torch.isfinite(p.detach()).all() for _, p in named])
    if bool(flags.all()):
        return []
    return [n for (n, _), ok in zip(named, flags.tolist()) if not ok]


ADVICE = ("lower train.lr, set train.grad_clip or use train.precision fp32, then continue with --resume "
          "--allow-config-change or start again")


def kept_sentence(checkpoint_dir: Path) -> str:
    """What a stopped run keeps, for the one sentence that reports it."""
    last = checkpoint_dir / "last.pt"
    if last.is_file():
        return f"the run stopped and {last} keeps the last finite state"
    return "the run stopped before its first checkpoint"


def check_parameters(model: Any, index: int, checkpoint_dir: Path) -> None:
    """After the update of step `index + 1`: stop before a non-finite parameter is ever saved or used (the same on
    every rank, since the gradients were averaged).

    Raises:
        NonFiniteError: naming the step, how many tensors and one of them.
    """
    bad = non_finite_parameters(model)
    if bad:
        raise NonFiniteError(f"the parameters became non-finite in the update of step {index + 1} ({len(bad)} "
                             f"tensors, e.g. {bad[0]}); {kept_sentence(checkpoint_dir)}; {ADVICE}")


# --------------------------------------------------------------------------------------------------- resume


def apply_optimizer_settings(optimizer: Any, scheduler: Any, lr: float, weight_decay: float) -> None:
    """After restoring an optimizer and a LambdaLR schedule from a checkpoint, let a learning rate or weight decay
    changed on resume (`--allow-config-change`) take effect; the restored states would keep the checkpoint's.
    Unchanged values are left untouched (bit-exact resume)."""
    groups = optimizer.param_groups
    if any(g["weight_decay"] != weight_decay for g in groups):
        for group in groups:
            group["weight_decay"] = weight_decay
    if scheduler.base_lrs != [lr] * len(groups):
        scheduler.base_lrs = [lr] * len(groups)
        for group, factor in zip(groups, scheduler.lr_lambdas):
            group["initial_lr"] = lr
            group["lr"] = lr * factor(scheduler.last_epoch)


def _flatten(mapping: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def resume_changes(saved: dict, current: dict) -> list[str]:
    """Settings ("key: old -> new") where `current` differs from the checkpoint's `saved` configuration in a way
    that breaks exact resume (seed, learning rate, schedule, data split, losses, ...). Keys in `RESUME_FREE` only
    decide how long or where the run goes on, and are allowed to change."""
    old, new = _flatten(saved), _flatten(current)
    changes = []
    for key in sorted(set(old) | set(new)):
        if key.startswith(RESUME_FREE) or key in RESUME_FREE:
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, list | tuple) and isinstance(b, list | tuple):
            a, b = list(a), list(b)
        if a != b:
            changes.append(f"{key}: {a!r} -> {b!r}")
    return changes


def check_resume_changes(
    run_dir: Path, saved: dict, current: dict, step: int, allow: bool, record: bool = True
) -> list[str]:
    """Refuse changed settings on resume unless `allow`; accepted changes are appended to RUN/config-changes.jsonl.

    Raises:
        InputError: naming the changed settings and the way out.
    """
    changes = resume_changes(saved, current)
    if changes and not allow:
        shown = "; ".join(changes[:6]) + (f"; and {len(changes) - 6} more" if len(changes) > 6 else "")
        raise InputError(f"--resume with other settings than {run_dir / 'checkpoints' / 'last.pt'} would not "
                         f"continue the same run ({shown}); resume with the run's own config.yaml, or pass "
                         "--allow-config-change to accept them (they are recorded in the run folder)")
    if changes and record:
        entry = {"step": int(step), "time": time.strftime("%Y-%m-%d %H:%M:%S"), "changes": changes}
        with open(run_dir / CHANGES_NAME, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
        logger.warning("resuming %s at step %d with changed settings: %s", run_dir, step, "; ".join(changes))
    return changes


# --------------------------------------------------------------------------------------------------- folder


def prepare_run_folder(run_dir: Path, resume: bool, clean: bool = True) -> bool:
    """Decide how a run starts in `run_dir`; returns whether it resumes from `checkpoints/last.pt`.

    - new or empty folder: a fresh start (`resume` is refused: there is nothing to resume, maybe a typo);
    - a checkpoint: `resume` continues it; without `resume` the run is refused (it would be overwritten);
    - no checkpoint, only what a p2g run writes (a run killed before its first checkpoint): a fresh start from
      step 0 in place, with or without `resume`;
    - anything else in the folder: refused, nothing touched.
    Orphan temporary files of an interrupted checkpoint write are removed first (with `clean`: by the one
    process of a multi-GPU run that writes files).

    Raises:
        InputError: `run_dir` is a file, holds a run and `resume` is not given, or holds files p2g did not write.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(f"--out {run_dir} is a file, not a run folder")
    removed = []
    if clean:
        removed = remove_orphan_temporaries(run_dir / "checkpoints", ["last.pt", "best.pt"])
        removed += remove_orphan_temporaries(run_dir, ["config.yaml", "init_report.json"])
    if removed:
        logger.info("removed %d temporary file(s) an interrupted run left: %s", len(removed),
                    ", ".join(p.name for p in removed))
    last = run_dir / "checkpoints" / "last.pt"
    if last.is_file():
        if not resume:
            raise InputError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
        return True
    foreign = sorted(p.name for p in run_dir.iterdir() if p.name not in RUN_FILES) if run_dir.is_dir() else []
    if foreign:
        raise InputError(f"{run_dir} is not empty and holds no checkpoint (it holds {foreign[0]}"
                         f"{' and more' if len(foreign) > 1 else ''}); choose another --out")
    started = run_dir.is_dir() and any(p.name != LOCK_NAME for p in run_dir.iterdir())
    if resume and not started:
        raise InputError(f"--resume needs {last}, which does not exist; start the run without --resume")
    if started:
        logger.warning("%s holds no checkpoint yet (the run stopped before its first one): starting from step 0",
                       run_dir)
        if clean:  # the logs of the steps that were lost go with them
            (run_dir / "metrics.jsonl").unlink(missing_ok=True)
            for events in (run_dir / "tb").glob("events.out.tfevents.*"):
                events.unlink()
    return False
