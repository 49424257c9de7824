"""`p2g pretrain`: personalized-invariant pre-training (the paper's Algorithm 1).

    p2g pretrain --data DIR --out RUN [--config YAML] [--max-steps N] [--resume]
                 [--set key=value ...] [--device D]

Several GPUs: `torchrun --nproc_per_node=G -m p2gmed pretrain ...` (one process per GPU; the process group is
set up from torchrun's environment variables, and only rank 0 writes files).
"""

from __future__ import annotations

import argparse
import logging

from p2gmed.cli.run_args import add_run_arguments, run_config, run_on_every_rank

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
    add_run_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from p2gmed.train.run import run_training

    cfg = run_config(args)
    last, main_process = run_on_every_rank(
        lambda: run_training("pretrain", args.data, args.out, cfg, resume=args.resume)
    )
    if main_process:
        log.info("pre-training done: %s", last)
    return 0
