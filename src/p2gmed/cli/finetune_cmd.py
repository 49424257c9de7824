"""`p2g finetune`: downstream tuning (the paper's Algorithm 2) for any-subset synthesis or segmentation.

    p2g finetune --task synthesis|segmentation --data DIR --out RUN [--init CKPT] [--encoder-only]
        [--init-swinvit FILE] [--architecture p2g|swinunetr|unetr] [--allow-mismatch] [--config YAML]
        [--max-steps N] [--resume] [--set key=value ...] [--device D]

Initialisations (the paper's comparisons): `--init CKPT` all weights of our pre-training into our
architecture; `--init CKPT --encoder-only` everything but the decoder: the pre-trained Swin encoder into stock
MONAI SwinUNETR, or with `--architecture p2g` also the prior O, its attention and the fusion (Table 6);
`--init-swinvit FILE` the Swin encoder of Tang et al. 2022 (`model_swinvit.pt`) into stock SwinUNETR;
neither: from scratch.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from p2gmed.cli.run_args import add_config_arguments, run_config, run_on_every_rank

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "finetune",
        help="downstream tuning for any-subset synthesis or missing-modality segmentation (Algorithm 2)",
        description=(
            "Tune a model so that any subset of a subject's modalities gives every modality (synthesis) or a "
            "segmentation. One subset is drawn per subject and step. Writes RUN/config.yaml, "
            "RUN/metrics.jsonl, RUN/tb, RUN/checkpoints/{last,best}.pt and, when weights are loaded, "
            "RUN/init_report.json (every key "
            "matched, missing, unexpected or of another shape)."
        ),
    )
    p.add_argument("--task", required=True, choices=("synthesis", "segmentation"), help="the downstream task")
    p.add_argument(
        "--data", required=True, type=Path, metavar="DIR", help="data set folder (any supported layout)"
    )
    p.add_argument(
        "--out", required=True, type=Path, metavar="RUN", help="run folder (new, or existing with --resume)"
    )
    init = p.add_mutually_exclusive_group()
    init.add_argument(
        "--init", type=Path, metavar="CKPT", help="p2gmed checkpoint to start from (e.g. a pre-training)"
    )
    init.add_argument(
        "--init-swinvit",
        type=Path,
        metavar="FILE",
        help="Swin encoder weights of Tang et al. 2022 (model_swinvit.pt); the 1-channel patch "
        "embedding is repeated over the M input channels and divided by M",
    )
    p.add_argument(
        "--encoder-only",
        action="store_true",
        help="with --init: load everything but the decoder (the Swin encoder; with --architecture p2g also the "
        "prior O, its attention and the fusion); default architecture then swinunetr",
    )
    p.add_argument(
        "--architecture",
        choices=("p2g", "swinunetr", "unetr"),
        help="p2g (ours), or a stock MONAI baseline reading all modalities with missing ones zeroed "
        "(default: tune.architecture, or swinunetr with --encoder-only / --init-swinvit)",
    )
    p.add_argument(
        "--allow-mismatch",
        action="store_true",
        help="load the weights that match even when keys are missing, unexpected or of another shape",
    )
    add_config_arguments(p)
    p.set_defaults(func=run)


def tune_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The command-line choices as `tune.*` settings (they win over the preset and over `--set`)."""
    from p2gmed.errors import InputError

    if args.encoder_only and args.init is None:
        raise InputError("--encoder-only needs --init CKPT")
    if args.init_swinvit is not None:
        init = "swinvit"
    elif args.init is not None:
        init = "encoder" if args.encoder_only else "full"
    else:
        init = "scratch"
    fields: dict[str, Any] = {"task": args.task, "init": init}
    architecture = args.architecture or ("swinunetr" if init in ("encoder", "swinvit") else None)
    if architecture:
        fields["architecture"] = architecture
    if args.allow_mismatch:
        fields["allow_mismatch"] = True
    return fields


def run(args: argparse.Namespace) -> int:
    from p2gmed.train.run import run_training

    cfg = run_config(args, tune=tune_fields(args))
    last, main_process = run_on_every_rank(
        lambda: run_training(
            cfg.tune.task, args.data, args.out, cfg, init=args.init, init_swinvit=args.init_swinvit,
            resume=args.resume,
        )
    )
    if main_process:
        log.info("%s tuning done: %s", cfg.tune.task, last)
    return 0
