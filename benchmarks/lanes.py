"""The demo's two tunings one after the other on every core, against side by side, one lane per core.

Ten simulated brains; a synthesis tuning (the demo's: each source decoded alone, the SSIM term) and a
segmentation tuning, both from scratch with the demo's preset, as `report.steps.execute` runs them in `p2g demo`:
`lanes=1` (this process, torch on all the cores given) against `lanes=2` (each tuning its own process pinned to
half of them). Same steps, same commands; the ratio is what `p2g demo` gains on this machine. Runs alternate
(sequential, side by side, sequential, ...) so that a drifting load hits both.

    python benchmarks/lanes.py [--cores 2] [--synthesis-steps 30] [--segmentation-steps 60] [--repeats 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import common  # noqa: E402


def plan(folder: Path, data: Path, synthesis_steps: int, segmentation_steps: int) -> list:
    from p2gmed.report.demo import PRESET
    from p2gmed.report.planning import CPU_RUN_KINDS, configs_dir, merge_mappings
    from p2gmed.report.steps import Step

    steps = []
    for task, n, extra in (("synthesis", synthesis_steps, {"loss": {"ssim": 1.0}}), ("segmentation", segmentation_steps, {})):
        run, cfg = folder / "runs" / task, folder / "configs" / f"{task}.yaml"
        mapping = merge_mappings(merge_mappings({"extends": str(configs_dir() / PRESET)}, CPU_RUN_KINDS[task]),
                                 {**extra, "tune": {"task": task, "init": "scratch"}})
        argv = ["finetune", "--task", task, "--data", str(data), "--out", str(run), "--config", str(cfg),
                "--max-steps", str(n)]
        steps.append(Step(task, f"{task} tuning", [argv], outputs=(run,), configs={cfg: mapping}, run=run, lane=task))
    return steps


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cores", type=int, default=2, help="cores to use (the first N this process may run on)")
    p.add_argument("--synthesis-steps", type=int, default=30)
    p.add_argument("--segmentation-steps", type=int, default=60)
    p.add_argument("--repeats", type=int, default=1, help="timed rounds of each way")
    args = p.parse_args(argv)

    import torch

    from p2gmed.data.synthetic import make_demo
    from p2gmed.report.lanes import available_cores
    from p2gmed.report.steps import execute

    cores = available_cores()[: args.cores]
    if len(cores) < 2:
        raise SystemExit("side by side needs at least two cores")
    torch.set_num_threads(len(cores))
    times: dict[str, list[float]] = {"one after the other": [], "side by side": []}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        make_demo(data, kind="brain", subjects=10, layout="brats23", seed=0)
        for round_ in range(args.repeats):
            for name, lanes in (("one after the other", 1), ("side by side", 2)):
                folder = Path(tmp) / f"{lanes}-{round_}"
                start = time.perf_counter()
                execute(plan(folder, data, args.synthesis_steps, args.segmentation_steps), folder / ".state",
                        echo=lambda _: None, lanes=lanes, cores=cores)
                times[name].append(time.perf_counter() - start)
    median = {name: sorted(t)[len(t) // 2] for name, t in times.items()}
    common.report(f"synthesis {args.synthesis_steps} + segmentation {args.segmentation_steps} tuning steps, "
                  f"10 simulated brains, cores {cores}", torch.device("cpu"), [
                      ("one after the other (all cores)", f"{median['one after the other']:.1f} s"),
                      ("side by side (a core each)", f"{median['side by side']:.1f} s"),
                      ("side by side / one after the other", f"{median['side by side'] / median['one after the other']:.2f}"),
                  ])


if __name__ == "__main__":
    main()
