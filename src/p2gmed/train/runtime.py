"""Small free helpers of the training loop: per-step seeds, the learning-rate schedule, devices, metric logs.

They are pure functions of their arguments (besides the device query), so the `Trainer` stays about the loop
and each helper can be tested on its own.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from p2gmed.errors import InputError
from p2gmed.io import write_text
from p2gmed.train import distributed as dist_utils


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """A 63-bit seed that depends on (seed, step, rank) only, well mixed (NumPy SeedSequence)."""
    return int(
        np.random.SeedSequence([seed, step, rank]).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1)
    )


def lr_factor(schedule: str, step_index: int, warmup_steps: int, max_steps: int) -> float:
    """Learning-rate multiplier for the update `step_index + 1` (0-based index of completed updates).

    constant: 1 after a linear warmup. warmup_cosine: linear warmup over `warmup_steps` updates
    (1/w, 2/w, ..., 1), then a half cosine from 1 down towards 0 at `max_steps`.
    """
    update = step_index + 1
    if warmup_steps > 0 and update <= warmup_steps:
        return update / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "warmup_cosine":
        span = max(1, max_steps - warmup_steps)
        progress = min(1.0, (update - warmup_steps - 1) / span)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise InputError(f"train.schedule must be constant or warmup_cosine, got {schedule!r}")


def select_device(name: str) -> torch.device:
    """cfg.train.device -> torch.device ("auto": this rank's GPU if CUDA is available, else CPU)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"train.device is {name!r} but no CUDA device is available; use --device cpu")
        if name == "cuda":
            name = f"cuda:{dist_utils.local_rank()}"
    try:
        return torch.device(name)
    except RuntimeError:
        raise InputError(f"train.device {name!r} is not a device name (auto, cpu, cuda, cuda:N)") from None


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor of a (nested) batch to `device`; other values pass through."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in batch):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop the lines of `metrics.jsonl` after `last_step` (a killed run logged steps it never saved)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= last_step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue  # a line cut in half by the kill
    write_text(path, "".join(f"{line}\n" for line in kept))


def load_run_data(
    data_dir: Path, subjects: list[Any], cfg: Any, *, with_label: bool, max_steps: int | None,
    keep_rotation_plane: bool = False,
) -> tuple[Any, Any, Any]:
    """Split by patient, load and cache both parts, build the step-indexed batches, fix the number of steps.

    Sets `cfg.train.max_steps` from `max_steps` (the command line), else from `train.epochs` x steps per
    epoch, else keeps it. `keep_rotation_plane` (pre-training) keeps the augmentation out of phi's plane
    (`TrainBatches`).

    Returns:
        (train LoadedSubjects, validation LoadedSubjects or None, TrainBatches).

    Raises:
        InputError: no training subject left after the split, or fewer than 1 step.
    """
    from p2gmed.data.sampling import TrainBatches, split_subjects
    from p2gmed.data.volumes import load_subjects

    train_subjects, val_subjects = split_subjects(subjects, cfg.data, cfg.train.seed)
    if not train_subjects:
        raise InputError(
            f"{data_dir}: no training subjects left after the validation split; lower "
            "data.val_fraction or fix data.split_file"
        )
    if cfg.train.val_subjects > 0:
        val_subjects = val_subjects[: cfg.train.val_subjects]
    progress = dist_utils.is_main()
    train_loaded = load_subjects(train_subjects, cfg.data, progress=progress, with_label=with_label)
    batches = TrainBatches(
        train_loaded, cfg, seed=cfg.train.seed, rank=dist_utils.rank(), world=dist_utils.world_size(),
        keep_rotation_plane=keep_rotation_plane,
    )
    if max_steps is not None:
        cfg.train.max_steps = int(max_steps)
    elif cfg.train.epochs > 0:
        cfg.train.max_steps = cfg.train.epochs * batches.steps_per_epoch
    if cfg.train.max_steps < 1:
        raise InputError(f"the number of steps must be at least 1, got {cfg.train.max_steps}")
    val_loaded = (
        load_subjects(val_subjects, cfg.data, progress=progress, with_label=with_label) if val_subjects else None
    )
    return train_loaded, val_loaded, batches
