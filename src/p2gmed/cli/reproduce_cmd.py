"""`p2g reproduce TABLE`: one table of the paper end to end (trainings, baselines, predictions, evaluation)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "reproduce",
        help="one paper table (table1 ... table10) end to end",
        description=(
            "Builds the table's plan (configs, pre-training(s), tunings, baselines, predictions, evaluations) and "
            "runs it in order; finished steps are skipped on a re-run (markers in OUT/.state/), an interrupted "
            "training resumes, and only files p2g recorded in OUT are ever removed or replaced. Writes "
            "OUT/<table>.md and OUT/<table>.csv with the measured numbers next to the paper's. Tables: 1/2/8/9 "
            "MRI synthesis, 3/10 missing-modality segmentation, 4 PET/CT ablation synthesis, 5 AutoPET "
            "segmentation with baselines, 6 NAC-PET synthesis, 7 segmentation ablation."
        ),
    )
    # the names are checked by report.reproduce (TABLES); importing it here would load torch for `p2g --help`
    p.add_argument("table", metavar="TABLE", help="table1 ... table10")
    p.add_argument("--data", required=True, type=Path, help="data set the table is trained on (any layout)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--scale", choices=("tiny", "small", "paper"), default="tiny",
                   help="tiny: tiny-cpu overrides on each paper preset (CPU smoke runs, built-in data); small: the "
                        "tiny network with the demo's learning settings and step budgets (models that learn on 2 "
                        "CPU cores, about 12 minutes per seed for Table 3); paper: the presets")
    p.add_argument("--pretrain-data", type=Path, help="separate pre-training data (e.g. BraTS23 for Table 3)")
    p.add_argument("--test-data", type=Path, help="held-out test set (default: 20%% of the patients of --data)")
    p.add_argument("--max-steps", type=int, help="cap every training run at N steps (smoke runs)")
    p.add_argument("--seeds", type=int, default=1, metavar="N",
                   help="run every configuration N times (other initial weights and crops, the same split); the "
                   "table shows mean ± std and which differences exceed the spread (paired Wilcoxon test)")
    p.add_argument("--dry-run", action="store_true", help="print the plan's commands, run nothing")
    p.add_argument("--force", action="store_true", help="redo every step instead of skipping finished ones")
    p.add_argument("--threads", type=int, help="CPU cores to use: torch threads, or with --seeds N the cores the "
                   "seeds share when they run side by side (default: every core this process may use)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from p2gmed.errors import InputError
    from p2gmed.report.reproduce import reproduce

    for name in ("max_steps", "threads", "seeds"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if not args.dry_run:
        import torch

        from p2gmed.report.demo import default_threads

        torch.set_num_threads(args.threads or default_threads())
    reproduce(args.table, args.data, args.out, args.scale, pretrain_data=args.pretrain_data,
              test_data=args.test_data, max_steps=args.max_steps, dry_run=args.dry_run, force=args.force,
              seeds=args.seeds, threads=args.threads)
    return 0
