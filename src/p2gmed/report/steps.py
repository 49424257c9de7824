"""Plans as lists of `Step`s of ordinary `p2g` command lines, run in order with resumable state markers.

Shared by `p2g reproduce` and `p2g demo`. Every command runs in this process, so `--dry-run` prints exactly what a
user could type by hand. A finished step leaves a marker `STATE/<name>.json`; running the plan again skips
finished steps and redoes an interrupted one; `force` redoes all. An interrupted training run is resumed from its
last checkpoint (`--resume`); any other step is redone after removing the files p2g recorded for it
(`p2gmed.outputs`): the plan's folder is p2g's own, and whatever the user put into it stays.
"""

from __future__ import annotations

import json
import shlex
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


@dataclass
class StepResult:
    name: str
    about: str
    status: str
    """ran | reused (finished in an earlier invocation) | planned (dry run)"""
    seconds: float
    commands: list[str]


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
) -> list[StepResult]:
    """Run the steps in order, skipping those with a marker in `state_dir` (unless `force`).

    Args:
        steps: the plan.
        state_dir: where the per-step markers (JSON: seconds, commands) are kept.
        force: redo every step.
        dry_run: print the commands, run nothing, write nothing.
        echo: progress printer.
        runner: executes one `p2g` argument list (tests pass a stub).

    Returns:
        One StepResult per step, in order.
    """
    names = [s.name for s in steps]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate step names in plan: {names}")
    results = []
    top = OutputFolder(state_dir.parent) if dry_run else OutputFolder.claim(state_dir.parent)
    for index, step in enumerate(steps, 1):
        marker = state_dir / f"{step.name}.json"
        header = f"[{index}/{len(steps)}] {step.name}: {step.about}"
        if dry_run:
            echo(f"# {header}")
            for path in step.configs:
                echo(f"#   writes {path}")
            shown = [fmt_cmd(c) for c in step.commands] + ([step.template] if step.template else [])
            for line in shown:
                echo(line)
            if step.action is not None and not shown:
                echo("#   (Python step, no command)")
            results.append(StepResult(step.name, step.about, "planned", 0.0, shown))
            continue
        if marker.is_file() and not force:
            record = json.loads(marker.read_text())
            echo(f"==> {header} (done earlier, {record['seconds']:.0f} s; skipped)")
            results.append(StepResult(step.name, step.about, "reused", record["seconds"], record["commands"]))
            continue
        echo(f"==> {header}")
        top.check_targets([marker], force=True)
        marker.unlink(missing_ok=True)
        resume = _prepare(step, top, force)
        before = _files_under(step.outputs)
        if resume:  # the files an interrupted run wrote are p2g's too, and get recorded with the rest
            before = {f for f in before if f.relative_to(step.run).parts[0] not in RUN_FILES}
        start = time.perf_counter()
        write_configs(step, top)
        commands = list(step.commands) + (step.expand() if step.expand else [])
        for argv in commands:
            if resume and "--out" in argv and Path(argv[argv.index("--out") + 1]) == step.run:
                argv = [*argv, "--resume"]
                echo(f"    (resuming the interrupted run {step.run} from its last checkpoint)")
            echo(f"    $ {fmt_cmd(argv)}")
            runner(argv)
        if step.action is not None:
            step.action()
        top.record(sorted(_files_under(step.outputs) - before))
        seconds = time.perf_counter() - start
        shown = [fmt_cmd(c) for c in commands]
        top.record([marker])
        write_text(marker, json.dumps({"seconds": seconds, "commands": shown}, indent=1))
        echo(f"    {step.name} finished in {seconds:.1f} s")
        results.append(StepResult(step.name, step.about, "ran", seconds, shown))
    return results


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
