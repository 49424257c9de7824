"""Arguments every training command shares (`p2g pretrain`, `p2g finetune`): one definition, one parser."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from p2gmed.config import Config


def add_run_arguments(
    p: argparse.ArgumentParser, *, data_help: str = "data set folder (any supported layout)"
) -> None:
    """--data, --out, --config, --max-steps, --resume, --set, --device."""
    p.add_argument("--data", required=True, type=Path, metavar="DIR", help=data_help)
    p.add_argument(
        "--out", required=True, type=Path, metavar="RUN", help="run folder (new, or existing with --resume)"
    )
    add_config_arguments(p)


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    """--config, --max-steps, --resume, --allow-config-change, --set, --device."""
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
        help="continue RUN from checkpoints/last.pt (model, optimizer, schedule, RNG, step) to --max-steps; "
        "a folder a killed run left without any checkpoint starts again from step 0",
    )
    p.add_argument(
        "--allow-config-change",
        action="store_true",
        help="with --resume: accept settings that differ from the checkpoint's (seed, lr, split, ...), which "
        "breaks exact resume; they are recorded in RUN/config-changes.jsonl",
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
    p.add_argument(
        "--channels", metavar="0=ct,1=pet",
        help="nnU-Net data sets: name the channels by modality instead of dataset.json (sets data.channels)",
    )


def run_config(args: argparse.Namespace, **sections: dict[str, Any]) -> Config:
    """The preset and its `--set` overrides, then the command's flags as typed fields (the flags win).

    `--device` sets train.device; `--max-steps N` sets train.max_steps = N and train.epochs = 0 (it replaces
    an epoch count); `sections` are the command's own fields, e.g. `tune={"task": "segmentation"}`. When
    neither the preset (with its `extends`) nor `--set` names `data.modalities`, they are the modalities the
    data set at `--data` has, so that the MRI default does not meet an AutoPET folder.

    Raises:
        InputError: a bad preset or override, --max-steps below 1, or a data set with no known modality.
    """
    from p2gmed.config import load_config, names_setting, replace_fields
    from p2gmed.errors import InputError

    train: dict[str, Any] = {}
    if args.device:
        train["device"] = args.device
    if args.max_steps is not None:
        if args.max_steps < 1:
            raise InputError(f"--max-steps must be at least 1, got {args.max_steps}")
        train.update(max_steps=args.max_steps, epochs=0)
    cfg = load_config(args.config, args.overrides)
    if args.channels:
        cfg = replace_fields(cfg, data={"channels": args.channels})
    if not names_setting(args.config, args.overrides, "data", "modalities"):
        modalities = dataset_modalities(args.data, cfg.data.layout, cfg.data.channels)
        cfg = replace_fields(cfg, data={"modalities": modalities})
    return replace_fields(cfg, train=train, **sections).validate()


def dataset_modalities(data_dir: Path, layout: str, channels: str = "") -> tuple[str, ...]:
    """The modalities p2gmed knows that the data set has, in canonical order."""
    from p2gmed.data.manifests import parse_channels
    from p2gmed.data.read import read_dataset
    from p2gmed.errors import InputError
    from p2gmed.modalities import ALL

    named = parse_channels(channels) if channels else None
    present = {m for subject in read_dataset(data_dir, layout, channels=named) for m in subject.images}
    modalities = tuple(m for m in ALL if m in present)
    if not modalities:
        raise InputError(f"{data_dir} has none of the modalities p2gmed knows ({', '.join(ALL)})")
    logging.getLogger(__name__).info("data.modalities from the data set: %s", ", ".join(modalities))
    return modalities


def run_on_every_rank(train: Callable[[], Path]) -> tuple[Path, bool]:
    """Join torchrun's process group when there is one, run `train`, leave the group.

    Returns:
        (what `train` returned, whether this is the main process). Other ranks log warnings only, so the
        terminal hears one voice.
    """
    from p2gmed.train import distributed

    distributed.init_from_env()
    main_process = distributed.is_main()
    if not main_process:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        result = train()
    finally:
        if distributed.is_distributed():
            import torch.distributed

            torch.distributed.destroy_process_group()
    return result, main_process

