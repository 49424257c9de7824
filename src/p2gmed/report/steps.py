"""Plans as lists of `Step`s of ordinary `p2g` command lines, run in order with resumable state markers.

Shared by `p2g reproduce` and `p2g demo`. Every command runs in this process (steps marked with a `lane` may run
side by side in their own processes instead, `report/lanes.py`), so `--dry-run` prints exactly what a user could
type by hand. A finished step leaves a marker `STATE/<name>.json`; running the plan again skips
finished steps and redoes an interrupted one; `force` redoes all. An interrupted training run is resumed from its
last checkpoint (`--resume`); any other step is redone after removing the files p2g recorded for it
(`p2gmed.outputs`): the plan's folder is p2g's own, and whatever the user put into it stays.
"""

from __future__ import annotations

import json
import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from p2gmed.errors import InputError, Interrupted
from p2gmed.io import write_text
from p2gmed.outputs import MANIFEST, OutputFolder, remove_recorded_tree
from p2gmed.train.safety import RUN_FILES


def fmt_cmd(argv: list[str]) -> str:
    """The command line a user would type: `p2g` and the shell-quoted arguments."""
    return "p2g " + " ".join(shlex.quote(a) for a in argv)


@dataclass
class Step:
    """One unit of a plan: `p2g` command lines and/or a Python action, skipped once finished.

    Attributes:
        name: unique within the plan; the marker is `STATE/<name>.json`.
        about: one line for the progress header and the report.
        commands: `p2g` argument lists known when the plan is built.
        expand: returns more argument lists when the step runs (e.g. one `p2g predict` per test case).
        template: what `expand` will run, shown by `--dry-run`.
        action: Python work run after the commands (writing a split, a table, a report).
        outputs: files/folders the step writes; p2g's files there are removed before the step is redone.
        configs: config files written before the commands run (path -> YAML mapping).
        run: the training run folder of a training step: an interrupted one is resumed, not redone.
        lane: steps that follow each other with (different or equal) non-empty lanes may run at the same time,
            one lane per group of cores; the steps of one lane keep their order (`execute(lanes=...)`).
    """

    name: str
    about: str
    commands: list[list[str]] = field(default_factory=list)
    expand: Callable[[], list[list[str]]] | None = None
    template: str = ""
    action: Callable[[], None] | None = None
    outputs: tuple[Path, ...] = ()
    configs: dict[Path, dict] = field(default_factory=dict)
    run: Path | None = None
    lane: str = ""


@dataclass
class StepResult:
    name: str
    about: str
    status: str
    """ran | reused (finished in an earlier invocation) | planned (dry run)"""
    seconds: float
    commands: list[str]
    lane: str = ""
    """the lane it ran in when it ran beside other steps; empty when it ran alone"""


def plan_seconds(results: list[StepResult]) -> float:
    """Wall-clock seconds of a plan: steps alone add up; of steps run side by side, the slowest lane counts."""
    total, block = 0.0, {}
    for result in [*results, StepResult("", "", "", 0.0, [])]:
        if result.lane:
            block[result.lane] = block.get(result.lane, 0.0) + result.seconds
            continue
        total += max(block.values(), default=0.0) + result.seconds
        block = {}
    return total


def run_p2g(argv: list[str]) -> None:
    """Run one `p2g` command in this process; a non-zero exit becomes an InputError naming the command."""
    from p2gmed.cli import main

    try:
        rc = main(list(argv))
    except SystemExit as exc:  # argparse usage errors
        rc = exc.code if isinstance(exc.code, int) else 2
    if rc in (130, 143):  # interrupted (SIGINT / SIGTERM): the whole plan stops the same way
        raise Interrupted(f"interrupted during `{fmt_cmd(argv)}`; run the same command again to continue", rc)
    if rc:
        raise InputError(f"the command `{fmt_cmd(argv)}` failed (exit {rc}); see its message above")


def write_configs(step: Step, top: OutputFolder | None = None) -> None:
    if top is not None:
        top.check_targets(step.configs, force=True)
        top.record(step.configs)
    for path, mapping in step.configs.items():
        write_text(path, "# written by p2gmed (reproduce/demo); edit the preset it extends instead\n"
                   + yaml.safe_dump(mapping, sort_keys=False))


def execute(
    steps: list[Step],
    state_dir: Path,
    *,
    force: bool = False,
    dry_run: bool = False,
    echo: Callable[[str], None] = print,
    runner: Callable[[list[str]], None] = run_p2g,
    lanes: int = 1,
    cores: list[int] | None = None,
    progress_every: float = 30.0,
) -> list[StepResult]:
    """Run the steps in order, skipping those with a marker in `state_dir` (unless `force`).

    Args:
        steps: the plan.
        state_dir: where the per-step markers (JSON: seconds, commands) are kept.
        force: redo every step.
        dry_run: print the commands, run nothing, write nothing.
        echo: progress printer.
        runner: executes one `p2g` argument list (tests pass a stub).
        lanes: with more than 1 (and at least 2 cores), consecutive steps with a `lane` run at the same time,
            each lane in its own processes on its share of `cores`; their console output goes to
            `state_dir/../logs/<step>.log`. 1 runs everything in this process, one step after the other.
        cores: the CPU cores to share among the lanes (default: those this process may use).
        progress_every: seconds between the progress lines of lanes running side by side.

    Returns:
        One StepResult per step, in plan order.
    """
    names = [s.name for s in steps]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate step names in plan: {names}")
    top = OutputFolder(state_dir.parent) if dry_run else OutputFolder.claim(state_dir.parent)
    plan = _Plan(steps, state_dir, top, force, echo)
    if dry_run:
        return [plan.show(step) for step in steps]
    from p2gmed.report.lanes import available_cores, run_lanes, split_cores

    groups = split_cores(cores if cores is not None else available_cores(), lanes)
    results: dict[str, StepResult] = {}
    index = 0
    while index < len(steps):
        block = [steps[index]]
        while block[0].lane and index + len(block) < len(steps) and steps[index + len(block)].lane:
            block.append(steps[index + len(block)])
        lane_names = list(dict.fromkeys(step.lane for step in block))
        if len(lane_names) < 2 or len(groups) < 2:  # nothing to run beside it: this process, as always
            results[block[0].name] = plan.run(block[0], runner)
            index += 1
            continue
        workers = min(len(groups), len(lane_names))  # more lanes than core groups share them in turn
        queues: list[list[Step]] = [[] for _ in range(workers)]
        for step in block:
            queues[lane_names.index(step.lane) % workers].append(step)

        def work(queue: list[Step]) -> Callable:
            def go(make_runner: Callable) -> None:
                for step in queue:
                    log = state_dir.parent / "logs" / f"{step.name}.log"
                    results[step.name] = plan.run(step, make_runner(log), log=log)
            return go

        echo(f"==> {workers} lanes side by side: " + " | ".join(
            (" -> ".join(s.name for s in q) if len(q) <= 4 else f"{q[0].name} -> ... -> {q[-1].name} ({len(q)} steps)")
            + f" on core(s) {','.join(map(str, sorted(g)))}" for q, g in zip(queues, groups, strict=False)))
        run_lanes({q[0].lane: work(q) for q in queues}, groups[:workers], echo=echo, progress_every=progress_every)
        index += len(block)
    return [results[step.name] for step in steps]


class _Plan:
    """The bookkeeping of one `execute` call; `run` may be called from several lanes' threads at once."""

    def __init__(self, steps: list[Step], state_dir: Path, top: OutputFolder, force: bool,
                 echo: Callable[[str], None]) -> None:
        self.position = {step.name: i for i, step in enumerate(steps, 1)}
        self.total, self.state_dir, self.top, self.force = len(steps), state_dir, top, force
        self.lock = threading.Lock()
        self._echo = echo

    def echo(self, line: str) -> None:
        with self.lock:
            self._echo(line)

    def header(self, step: Step) -> str:
        return f"[{self.position[step.name]}/{self.total}] {step.name}: {step.about}"

    def show(self, step: Step) -> StepResult:
        self._echo(f"# {self.header(step)}")
        for path in step.configs:
            self._echo(f"#   writes {path}")
        shown = [fmt_cmd(c) for c in step.commands] + ([step.template] if step.template else [])
        for line in shown:
            self._echo(line)
        if step.action is not None and not shown:
            self._echo("#   (Python step, no command)")
        return StepResult(step.name, step.about, "planned", 0.0, shown)

    def run(self, step: Step, runner: Callable[[list[str]], None], log: Path | None = None) -> StepResult:
        marker = self.state_dir / f"{step.name}.json"
        lane = step.lane if log is not None else ""
        with self.lock:
            if marker.is_file() and not self.force:
                record = json.loads(marker.read_text())
                self._echo(f"==> {self.header(step)} (done earlier, {record['seconds']:.0f} s; skipped)")
                return StepResult(step.name, step.about, "reused", record["seconds"], record["commands"],
                                  record.get("lane", ""))
            self._echo(f"==> {self.header(step)}" + (f" (console output: {log})" if log is not None else ""))
            self.top.check_targets([marker], force=True)
            marker.unlink(missing_ok=True)
            resume = _prepare(step, self.top, self.force)
            before = _files_under(step.outputs)
            if resume:  # the files an interrupted run wrote are p2g's too, and get recorded with the rest
                before = {f for f in before if f.relative_to(step.run).parts[0] not in RUN_FILES}
            if log is not None:
                self.top.check_targets([log], force=True)
                self.top.record([log])
                log.unlink(missing_ok=True)
            start = time.perf_counter()
            write_configs(step, self.top)
            commands = list(step.commands) + (step.expand() if step.expand else [])
        for argv in commands:
            if resume and "--out" in argv and Path(argv[argv.index("--out") + 1]) == step.run:
                argv = [*argv, "--resume"]
                self.echo(f"    (resuming the interrupted run {step.run} from its last checkpoint)")
            self.echo(f"    $ {fmt_cmd(argv)}")
            runner(argv)
        with self.lock:
            if step.action is not None:
                step.action()
            self.top.record(sorted(_files_under(step.outputs) - before))
            seconds = time.perf_counter() - start
            shown = [fmt_cmd(c) for c in commands]
            self.top.record([marker])
            write_text(marker, json.dumps({"seconds": seconds, "commands": shown, "lane": lane}, indent=1))
            self._echo(f"    {step.name} finished in {seconds:.1f} s")
        return StepResult(step.name, step.about, "ran", seconds, shown, lane)


def _files_under(paths: tuple[Path, ...]) -> set[Path]:
    found: set[Path] = set()
    for path in paths:
        if path.is_file():
            found.add(path)
        elif path.is_dir():  # the records of sub-commands stay theirs
            found |= {p for p in path.rglob("*") if p.is_file() and p.name != MANIFEST}
    return found


def _prepare(step: Step, top: OutputFolder, force: bool) -> bool:
    """Make room for a step about to run; returns whether its training run resumes from a checkpoint.

    Files p2g recorded for the step are removed; the user's files stay (a command that then cannot write says
    so). A training run left with a checkpoint by an interrupted invocation is resumed instead (unless `force`).
    """
    for path in step.outputs:
        if path.is_file() and not top.owns(path):
            raise InputError(f"{path} already exists and was not written by p2g; it is left alone, move it away "
                             "or choose another --out")
    if step.run is not None and not force and (step.run / "checkpoints" / "last.pt").is_file():
        return True
    for path in step.outputs:
        remove_recorded_tree(path, top)
    return False
