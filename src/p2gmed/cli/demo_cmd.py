"""`p2g demo`: pre-train, tune, predict, evaluate and report on the built-in simulated data."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="the main job on the built-in data: pre-train, tune, evaluate, report",
        description=(
            "Runs the whole method on simulated brain MRI in minutes on a CPU and writes report.md/report.html. "
            "Re-running into the same folder skips finished stages (markers in OUT/.state/), resumes an "
            "interrupted training and redoes any other interrupted stage; --force redoes everything. OUT must be "
            "new, empty or an earlier demo: p2g removes or replaces only the files it recorded there."
        ),
    )
    p.add_argument("--out", type=Path, default=Path("p2g-demo"), help="output folder (default: ./p2g-demo)")
    p.add_argument("--quick", action="store_true", help="fewer subjects and steps: under 3 minutes on 2 CPU cores")
    p.add_argument("--force", action="store_true", help="redo every stage instead of continuing (p2g's own files only)")
    p.add_argument("--threads", type=int, help="CPU cores to use (default: every core this process may use); with "
                   "2 or more the synthesis tuning runs beside the segmentation tunings, each on its share; 1 runs "
                   "the stages one after the other")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from p2gmed.errors import InputError
    from p2gmed.report.demo import run_demo

    if args.out.exists() and not args.out.is_dir():
        raise InputError(f"--out {args.out} exists and is not a folder")
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be at least 1, got {args.threads}")
    run_demo(args.out, quick=args.quick, force=args.force, threads=args.threads)
    return 0
