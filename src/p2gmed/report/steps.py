"""Plans as lists of `Step`s of ordinary `p2g` command lines, run in order with resumable state markers.

Shared by `p2g reproduce` and `p2g demo`. Every command runs in this process, so `--dry-run` prints exactly what a
user could type by hand. A finished step leaves a marker `STATE/<name>.json`; running the plan again skips
finished steps and redoes an interrupted one from scratch (its outputs are removed first); `force` redoes all.
"""

from __future__ import annotations

import json
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from p2gmed.errors import InputError
from p2gmed.io import write_text


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
        outputs: files/folders removed before an interrupted step is redone.
        configs: config files written before the commands run (path -> YAML mapping).
    """

    name: str
    about: str
    commands: list[list[str]] = field(default_factory=list)
    expand: Callable[[], list[list[str]]] | None = None
    template: str = ""
    action: Callable[[], None] | None = None
    outputs: tuple[Path, ...] = ()
    configs: dict[Path, dict] = field(default_factory=dict)


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
    if rc:
        raise InputError(f"the command `{fmt_cmd(argv)}` failed (exit {rc}); see its message above")


def write_configs(step: Step) -> None:
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
        marker.unlink(missing_ok=True)
        for path in step.outputs:  # an interrupted or forced step starts from a clean slate
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        start = time.perf_counter()
        write_configs(step)
        commands = list(step.commands) + (step.expand() if step.expand else [])
        for argv in commands:
            echo(f"    $ {fmt_cmd(argv)}")
            runner(argv)
        if step.action is not None:
            step.action()
        seconds = time.perf_counter() - start
        shown = [fmt_cmd(c) for c in commands]
        write_text(marker, json.dumps({"seconds": seconds, "commands": shown}, indent=1))
        echo(f"    {step.name} finished in {seconds:.1f} s")
        results.append(StepResult(step.name, step.about, "ran", seconds, shown))
    return results
