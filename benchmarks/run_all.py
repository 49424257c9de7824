"""Run every benchmark: `python benchmarks/run_all.py [--device cuda] [--threads N] [--size tiny|paper]`.

Each benchmark prints its numbers as ratios against a baseline measured in the same run, with the device name,
and the goal of issue-level targets (docs/performance.md):

1. step:    an Algorithm-1 pre-training step against the same passes in plain MONAI (goal <= 1.15x);
2. predict: `p2g predict` of a BraTS-sized case against MONAI's sliding window on a stock SwinUNETR (<= 1.2x);
3. step:    FLOP/s of the step against a large matrix product on the same device, fp32 and bf16;
4. data:    batch building as a fraction of step time (< 10%); memory: peak with/without activation checkpointing;
   then the older comparisons (pretrain: paper vs authors' update order; sliding: where the volume is stitched).

Tiny sizes by default (minutes on a CPU); `--size paper` is for a GPU (or an hour on a CPU). Speed and memory are
never asserted in tests.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import bench_data  # noqa: E402
import bench_memory  # noqa: E402
import bench_predict  # noqa: E402
import bench_pretrain_step  # noqa: E402
import bench_sliding_window  # noqa: E402
import bench_step  # noqa: E402

BENCHMARKS = {"step": bench_step, "predict": bench_predict, "data": bench_data, "memory": bench_memory,
              "pretrain": bench_pretrain_step, "sliding": bench_sliding_window}
SIZED = ("step", "predict", "data", "memory")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--size", choices=("tiny", "paper"), default="tiny", help="sizes of the goal benchmarks")
    p.add_argument("--repeats", type=int, default=2, help="timed repetitions")
    p.add_argument("--only", choices=tuple(BENCHMARKS), action="append", help="run only these")
    args = p.parse_args()
    common_args = ["--device", args.device, "--repeats", str(args.repeats)]
    common_args += ["--threads", str(args.threads)] if args.threads else []
    start = time.perf_counter()
    for name in args.only or BENCHMARKS:
        BENCHMARKS[name].main(common_args + (["--size", args.size] if name in SIZED else []))
    print(f"\nall benchmarks: {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
