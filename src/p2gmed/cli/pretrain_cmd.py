"""`p2g pretrain`: personalized-invariant pre-training (the paper's Algorithm 1).

    p2g pretrain --data DIR --out RUN [--config YAML] [--max-steps N] [--resume]
                 [--set key=value ...] [--device D]

Several GPUs: `torchrun --nproc_per_node=G -m p2gmed pretrain ...` (one process per GPU; the process group is
set up from torchrun's environment variables, and only rank 0 writes files).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pretrain",
        help="personalized-invariant pre-training (Algorithm 1)",
        description=(
            "Pre-train the encoder, learnable prior and decoder on every subject of a data set. Writes "
            "RUN/config.yaml, RUN/metrics.jsonl, RUN/tb (TensorBoard) and RUN/checkpoints/{last,best}.pt. "
            "A step is one batch of subjects through all their modalities and one optimizer update."
        ),
    )
    p.add_argument(
        "--data", required=True, type=Path, metavar="DIR", help="data set folder (any supported layout)"
    )
    p.add_argument(
        "--out", required=True, type=Path, metavar="RUN", help="run folder (new, or existing with --resume)"
    )
    p.add_argument(
        "--config", type=Path, metavar="YAML", help="configuration preset (e.g. configs/tiny-cpu.yaml)"
    )
    p.add_argument(
        "--max-steps",
        type=int,
        metavar="N",
        help="stop after N optimizer steps (default: train.max_steps, or train.epochs if set)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue RUN from checkpoints/last.pt (model, optimizer, schedule, RNG, step) to --max-steps",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="override one setting, e.g. --set train.lr=1e-4 (repeatable)",
    )
    p.add_argument(
        "--device", metavar="D", help="auto (CUDA if available), cpu, cuda, cuda:N (sets train.device)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from p2gmed.config import load_config
    from p2gmed.errors import InputError
    from p2gmed.train import distributed as dist_utils
    from p2gmed.train.pretrain import run_pretrain

    overrides = list(args.overrides)
    if args.device:
        overrides.append(f"train.device={args.device}")
    cfg = load_config(args.config, overrides)
    if args.max_steps is not None and args.max_steps < 1:
        raise InputError(f"--max-steps must be at least 1, got {args.max_steps}")
    dist_utils.init_from_env()
    main_process = dist_utils.is_main()
    if not main_process:
        logging.getLogger().setLevel(logging.WARNING)  # one voice in the terminal
    try:
        last = run_pretrain(args.data, args.out, cfg, max_steps=args.max_steps, resume=args.resume)
    finally:
        if dist_utils.is_distributed():
            import torch.distributed

            torch.distributed.destroy_process_group()
    if main_process:
        log.info("pre-training done: %s", last)
    return 0
