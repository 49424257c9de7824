"""Steps side by side (`report/lanes.py`, `steps.execute(lanes=...)`): pinned, recorded, resumable, stoppable.

The lanes' commands are replaced by a stand-in script (`lanes.COMMAND`) that reports what it was given (cores,
threads, arguments, when it ran) and obeys instructions in its arguments (sleep, fail, wait for a signal).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from p2gmed.errors import InputError
from p2gmed.outputs import OutputFolder
from p2gmed.report import lanes
from p2gmed.report.steps import Step, StepResult, execute, plan_seconds

SRC = str(Path(__file__).parents[1] / "src")

STAND_IN = textwrap.dedent('''
    import json, os, signal, sys, time
    report, action = sys.argv[1], sys.argv[2]
    got = []
    signal.signal(signal.SIGTERM, lambda s, f: got.append(s))
    record = {"pid": os.getpid(), "cores": sorted(os.sched_getaffinity(0)),
              "threads": os.environ.get("OMP_NUM_THREADS"), "start": time.time(), "action": action}
    print("working 1/2", flush=True)
    if action.startswith("fail"):  # fail[:seconds]: exit 2 after a while
        time.sleep(float(action.split(":")[1]) if ":" in action else 0.0)
        sys.exit(2)
    seconds = float(action.split(":")[1]) if ":" in action else 0.0
    deadline = time.time() + seconds
    while time.time() < deadline and not got:
        time.sleep(0.02)
    time.sleep(0.3)  # a second forwarded signal would arrive here
    record.update(end=time.time(), signals=len(got))
    with open(report, "w") as f:
        json.dump(record, f)
    sys.exit(143 if got else 0)
''')


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    monkeypatch.setattr(lanes, "COMMAND", [sys.executable, str(script)])
    return tmp_path / "reports"


def _step(name: str, lane: str, reports: Path, action: str) -> Step:
    reports.mkdir(exist_ok=True)
    return Step(name, f"{name} stand-in", [[str(reports / f"{name}.json"), action]], lane=lane)


def _read(reports: Path, name: str) -> dict:
    return json.loads((reports / f"{name}.json").read_text())


def test_plan_seconds_counts_each_side_by_side_block_by_its_slowest_lane():
    r = lambda s, lane="": StepResult("x", "", "ran", s, [], lane)  # noqa: E731
    assert plan_seconds([]) == 0.0
    assert plan_seconds([r(1.0), r(2.0)]) == 3.0
    # 1 + max(4, 2 + 1) + 0.5, then a second block max(3, 1)
    assert plan_seconds([r(1.0), r(4.0, "a"), r(2.0, "b"), r(1.0, "b"), r(0.5), r(3.0, "a"), r(1.0, "c")]) == 8.5


def test_split_cores_deals_every_core_once():
    assert lanes.split_cores([0, 1], 2) == [frozenset({0}), frozenset({1})]
    assert lanes.split_cores([0, 1, 2, 3, 4], 2) == [frozenset({0, 2, 4}), frozenset({1, 3})]
    assert lanes.split_cores([3], 2) == [frozenset({3})]  # one core: no lanes


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPU cores")
def test_lanes_run_at_once_on_their_own_cores_with_logs_and_markers(tmp_path, stand_in):
    out = tmp_path / "plan"
    steps = [Step("first", "alone", action=lambda: None),
             _step("syn", "synthesis", stand_in, "sleep:1.0"),
             _step("seg", "segmentation", stand_in, "sleep:0.4"),
             _step("base", "segmentation", stand_in, "sleep:0.4"),
             Step("last", "alone again", action=lambda: None)]
    lines = []
    cores = sorted(os.sched_getaffinity(0))[:2]
    results = execute(steps, out / ".state", echo=lines.append, lanes=2, cores=cores, progress_every=0.5)
    assert [r.name for r in results] == ["first", "syn", "seg", "base", "last"]
    assert [r.lane for r in results] == ["", "synthesis", "segmentation", "segmentation", ""]
    syn, seg, base = (_read(stand_in, n) for n in ("syn", "seg", "base"))
    assert syn["cores"] == [cores[0]] and seg["cores"] == base["cores"] == [cores[1]]
    assert syn["threads"] == seg["threads"] == "1"
    assert syn["start"] < seg["end"] and seg["start"] < syn["end"]  # the lanes overlapped
    assert seg["end"] <= base["start"]  # one lane keeps its order
    assert any(line.startswith("    [synthesis] working 1/2") for line in lines)
    folder = OutputFolder(out)
    for name in ("syn", "seg", "base"):
        assert folder.owns(out / "logs" / f"{name}.log")
        assert json.loads((out / ".state" / f"{name}.json").read_text())["lane"]
    # a re-run reuses every step, and still knows which ran side by side
    again = execute(steps, out / ".state", echo=lines.append, lanes=2, cores=cores)
    assert [r.status for r in again] == ["reused"] * 5 and plan_seconds(again) == pytest.approx(plan_seconds(results))


def test_one_lane_or_one_core_runs_everything_here_in_order(tmp_path, stand_in):
    ran = []
    steps = [Step(n, n, [[n]], lane=lane) for n, lane in (("a", "x"), ("b", "y"), ("c", "x"))]
    results = execute(steps, tmp_path / "p" / ".state", echo=lambda _: None, runner=ran.append, lanes=1)
    assert ran == [["a"], ["b"], ["c"]] and all(r.lane == "" for r in results)
    ran.clear()
    execute(steps, tmp_path / "q" / ".state", echo=lambda _: None, runner=ran.append, lanes=2, cores=[0])
    assert ran == [["a"], ["b"], ["c"]]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPU cores")
def test_a_failing_lane_stops_the_other_and_names_its_command(tmp_path, stand_in):
    steps = [_step("slow", "a", stand_in, "sleep:60"), _step("broken", "b", stand_in, "fail:1.0"),
             _step("never", "b", stand_in, "sleep:0")]
    started = time.monotonic()
    with pytest.raises(InputError, match=r"failed \(exit 2\); its output is in .*broken\.log"):
        execute(steps, tmp_path / "p" / ".state", echo=lambda _: None, lanes=2,
                cores=sorted(os.sched_getaffinity(0))[:2])
    assert time.monotonic() - started < 30  # the slow lane was stopped, not waited for
    assert _read(stand_in, "slow")["signals"] == 1
    assert not (stand_in / "never.json").exists()
    assert not (tmp_path / "p" / ".state" / "slow.json").exists()  # not finished: redone (resumed) next time


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPU cores")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_reaches_every_lane_once_and_exits_with_the_shell_code(tmp_path, signum):
    """p2g is signalled (SIGINT as a terminal's Ctrl-C would reach p2g alone: lanes run in their own session)."""
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    reports = tmp_path / "reports"
    reports.mkdir()
    driver = textwrap.dedent(f'''
        import os, signal, sys
        signal.signal(signal.SIGINT, signal.default_int_handler)
        from p2gmed.errors import Interrupted
        from p2gmed.report import lanes
        from p2gmed.report.steps import Step, execute
        lanes.COMMAND = [sys.executable, {str(script)!r}]
        steps = [Step(n, n, [[{str(reports)!r} + "/" + n + ".json", "sleep:60"]], lane=n) for n in ("a", "b")]
        try:
            execute(steps, __import__("pathlib").Path({str(tmp_path / "p" / ".state")!r}), lanes=2,
                    cores=sorted(os.sched_getaffinity(0))[:2], progress_every=0.2)
        except Interrupted as exc:
            print("interrupted", exc.exit_code, flush=True)
            sys.exit(exc.exit_code)
    ''')
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", driver], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all((tmp_path / "p" / "logs" / f"{n}.log").is_file()
                                                  and "working" in (tmp_path / "p" / "logs" / f"{n}.log").read_text()
                                                  for n in ("a", "b")):
        time.sleep(0.1)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err
    assert f"interrupted {128 + signum}" in out
    for name in ("a", "b"):
        # SIGINT reaches the stand-in as SIGINT, which it does not catch: it dies of it (no report)
        if signum == signal.SIGTERM:
            assert _read(reports, name)["signals"] == 1
