"""Independent steps of a plan side by side: one lane per group of CPU cores, each command in its own process.

Why: PyTorch's intra-op threads scale poorly on the tiny 3D crops of CPU runs. On 2 cores a synthesis tuning step
of the demo takes 1.24 s on both cores and 1.45 s on one (beside another job), a segmentation step 0.73 and 0.82 s,
so two tunings each on its own core finish sooner than one after the other on both: 0.82 of the time for the
demo's two tunings at 30 + 60 steps (`benchmarks/lanes.py`, process start-up included), less for the demo's
hundreds of steps (docs/results.md, "Two tunings side by side").

A plan marks such steps with `Step.lane`; `steps.execute(..., lanes=2)` runs each lane's steps in order in a
worker thread, the lanes at once. Each command runs as `python -m p2gmed ...` pinned to its lane's cores
(`sched_setaffinity`, `OMP_NUM_THREADS`), its console output going to a log file whose last progress line is
echoed every `progress_every` seconds. A stop is forwarded: SIGINT or SIGTERM to p2g reaches every running
command once (each saves a checkpoint and exits 130/143, as it would alone), and a command dies with p2g
(`PR_SET_PDEATHSIG`), so no training is left running that a re-run would collide with.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from p2gmed.errors import InputError, Interrupted

#: how a lane starts a `p2g` command (tests put a stand-in here)
COMMAND = [sys.executable, "-m", "p2gmed"]


def split_cores(cores: list[int], lanes: int) -> list[frozenset[int]]:
    """`cores` dealt into `lanes` groups of (nearly) equal size; fewer groups when there are fewer cores."""
    lanes = max(1, min(lanes, len(cores)))
    return [frozenset(cores[i::lanes]) for i in range(lanes)]


def available_cores() -> list[int]:
    """The CPU cores this process may run on (all of them where affinity is unknown)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return list(range(os.cpu_count() or 1))


def side_by_side(wanted: int, threads: int | None = None) -> tuple[int, list[int]]:
    """(lanes, cores) for a plan with `wanted` independent lanes on the first `threads` cores (default: all).

    One lane where side by side gains nothing: a GPU (the lanes would share one device), one core, one lane wanted.
    """
    import torch

    cores = available_cores()[: threads or None]
    return (1 if torch.cuda.is_available() else max(1, min(wanted, len(cores)))), cores


class Processes:
    """The commands running now, so that a stop request can be forwarded to each of them once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen] = set()
        self.stopping: int | None = None

    def add(self, process: subprocess.Popen) -> None:
        with self._lock:
            self._running.add(process)
            if self.stopping is not None:  # started just as the stop came in
                process.send_signal(self.stopping)

    def discard(self, process: subprocess.Popen) -> None:
        with self._lock:
            self._running.discard(process)

    def stop(self, signum: int, *, escalate: bool = True) -> None:
        """Forward `signum` to every running command (the first request), or kill them (a second one, unless
        `escalate` is False: a lane that failed asks the others to stop, which is no reason to kill them)."""
        with self._lock:
            again = self.stopping is not None
            if again and not escalate:
                return
            self.stopping = signum
            for process in self._running:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGKILL if again else signum)


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if p2g itself dies (Linux), so no orphan keeps training."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class LaneRunner:
    """Runs `p2g` argument lists as processes pinned to `cores`, appending their output to `log`.

    Args:
        cores: the CPU cores of the lane.
        log: console log of the lane's current step (created by the caller's bookkeeping).
        processes: the shared table of running commands.
    """

    def __init__(self, cores: frozenset[int], log: Path, processes: Processes) -> None:
        self.cores, self.log, self.processes = cores, log, processes

    def __call__(self, argv: list[str]) -> None:
        from p2gmed.report.steps import fmt_cmd

        if self.processes.stopping is not None:  # another lane failed or a stop came: start nothing new
            raise Interrupted(f"stopped before `{fmt_cmd(argv)}`", 128 + int(self.processes.stopping))
        threads = str(len(self.cores))
        env = os.environ | {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTHONUNBUFFERED": "1"}
        cores = set(self.cores)

        def prepare() -> None:
            _die_with_parent()
            with contextlib.suppress(AttributeError, OSError):
                os.sched_setaffinity(0, cores)

        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            log.write(f"$ {fmt_cmd(argv)}\n".encode())
            log.flush()
            # own session: a Ctrl-C in the terminal reaches p2g only, which forwards it exactly once
            process = subprocess.Popen([*COMMAND, *argv], stdout=log, stderr=log,
                                       stdin=subprocess.DEVNULL, env=env, preexec_fn=prepare,
                                       start_new_session=True)
            self.processes.add(process)
            try:
                rc = process.wait()
            finally:
                self.processes.discard(process)
        if rc in (130, 143) or rc < 0:
            raise Interrupted(f"interrupted during `{fmt_cmd(argv)}`; run the same command again to continue",
                              rc if rc > 0 else 128 - rc)
        if rc:
            raise InputError(f"the command `{fmt_cmd(argv)}` failed (exit {rc}); its output is in {self.log}")


def last_progress(log: Path, limit: int = 4096) -> str:
    """The last line (or progress-bar update) of a console log; empty if there is none yet."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - limit))
            tail = f.read().decode(errors="replace")
    except OSError:
        return ""
    parts = [p.strip() for p in tail.replace("\r", "\n").split("\n") if p.strip()]
    return parts[-1] if parts else ""


@contextlib.contextmanager
def forwarded_stops(processes: Processes) -> Iterator[None]:
    """In the main thread: SIGINT/SIGTERM stop the running commands (which checkpoint) instead of p2g."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            old[signum] = signal.signal(signum, lambda s, _f: processes.stop(s))
    try:
        yield
    finally:
        for signum, handler in old.items():
            signal.signal(signum, handler)


def run_lanes(
    lanes: dict[str, Callable[[Callable[[Path], LaneRunner]], None]],
    cores: list[frozenset[int]],
    *,
    echo: Callable[[str], None],
    progress_every: float = 30.0,
) -> None:
    """Run each lane's work at once, lane i on cores[i]; returns when all are done.

    Args:
        lanes: lane name -> work, called in a worker thread with a function that takes the log file of the step
            the lane is about to run and returns that step's runner.
        cores: one core group per lane (same order as `lanes`).
        echo: progress printer (called from the main thread only).
        progress_every: seconds between progress echoes.

    Raises:
        Interrupted: a stop request (or a command that was stopped); the other lanes were stopped too.
        InputError / other: the first lane that failed; the other lanes were stopped (they checkpoint).
    """
    processes = Processes()
    errors: dict[str, BaseException] = {}
    current: dict[str, Path] = {}

    def worker(name: str, work: Callable, group: frozenset[int]) -> None:
        def runner(log: Path) -> LaneRunner:
            current[name] = log
            return LaneRunner(group, log, processes)

        try:
            work(runner)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            errors[name] = exc
            processes.stop(signal.SIGTERM, escalate=False)  # the others checkpoint and stop: reported at once
        finally:
            current.pop(name, None)  # a finished lane has no progress left to show

    threads = [threading.Thread(target=worker, args=(name, work, group), name=f"lane-{name}", daemon=True)
               for (name, work), group in zip(lanes.items(), cores, strict=True)]
    with forwarded_stops(processes):
        for thread in threads:
            thread.start()
        next_echo = time.monotonic() + progress_every
        while alive := [t for t in threads if t.is_alive()]:
            alive[0].join(timeout=0.5)  # short waits: the main thread must stay free to take a signal
            if time.monotonic() >= next_echo:
                next_echo += progress_every
                for name, log in list(current.items()):
                    line = last_progress(log)
                    if line:
                        echo(f"    [{name}] {line}")
    if errors:
        interrupted = [e for e in errors.values() if isinstance(e, Interrupted)]
        failed = [e for e in errors.values() if not isinstance(e, Interrupted)]
        if failed:
            raise failed[0]
        if processes.stopping is not None:
            raise Interrupted("interrupted; run the same command again to continue (each training resumes from "
                              "its last checkpoint)", 128 + int(processes.stopping))
        raise interrupted[0]
