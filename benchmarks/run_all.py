"""Run every benchmark: `python benchmarks/run_all.py [--device cuda] [--threads N]`.

Each benchmark prints its numbers as ratios against a baseline measured in the same run, with the device name;
tiny sizes, about two minutes on a CPU. Speed and memory are never asserted in tests.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import bench_data  # noqa: E402
import bench_pretrain_step  # noqa: E402
import bench_sliding_window  # noqa: E402

BENCHMARKS = {"pretrain": bench_pretrain_step, "sliding": bench_sliding_window, "data": bench_data}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--only", choices=tuple(BENCHMARKS), action="append", help="run only these")
    args = p.parse_args()
    common_args = ["--device", args.device] + (["--threads", str(args.threads)] if args.threads else [])
    start = time.perf_counter()
    for name in args.only or BENCHMARKS:
        BENCHMARKS[name].main(common_args)
    print(f"\nall benchmarks: {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
