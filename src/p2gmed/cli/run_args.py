"""Arguments every training command shares (`p2g pretrain`, `p2g finetune`): one definition, one parser."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path


def add_run_arguments(p: argparse.ArgumentParser, *, data_help: str = "data set folder (any supported layout)") -> None:
    """--data, --out, --config, --max-steps, --resume, --set, --device."""
    p.add_argument("--data", required=True, type=Path, metavar="DIR", help=data_help)
    p.add_argument(
        "--out", required=True, type=Path, metavar="RUN", help="run folder (new, or existing with --resume)"
    )
    add_config_arguments(p)


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    """--config, --max-steps, --resume, --set, --device."""
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


def check_max_steps(max_steps: int | None) -> None:
    from p2gmed.errors import InputError

    if max_steps is not None and max_steps < 1:
        raise InputError(f"--max-steps must be at least 1, got {max_steps}")


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


def load_run_config(config: Path | None, overrides: list[str], data_dir: Path):
    """The run's configuration; when neither the preset (with its `extends`) nor `--set` names `data.modalities`,
    they are the modalities the data set has (in canonical order), so that e.g. the MRI default does not meet an
    AutoPET folder.

    Raises:
        InputError: as `load_config`, or the data set has no modality p2gmed knows.
    """
    from p2gmed.config import _merge, _read_yaml, load_config, parse_override
    from p2gmed.errors import InputError
    from p2gmed.modalities import ALL

    raw: dict = _read_yaml(Path(config)) if config else {}
    for text in overrides:
        raw = _merge(raw, parse_override(text))
    if "modalities" in (raw.get("data") or {}):
        return load_config(config, overrides)
    cfg = load_config(config, overrides)
    from p2gmed.data.read import read_dataset

    present = {m for subject in read_dataset(data_dir, cfg.data.layout) for m in subject.images}
    modalities = [m for m in ALL if m in present]
    if not modalities:
        raise InputError(f"{data_dir} has none of the modalities p2gmed knows ({', '.join(ALL)})")
    logging.getLogger(__name__).info("data.modalities from the data set: %s", ", ".join(modalities))
    return load_config(config, [*overrides, f"data.modalities=[{','.join(modalities)}]"])
