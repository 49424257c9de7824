"""Small free helpers of the training loop: per-step seeds, the learning-rate schedule, batches to a device,
metric logs. Pure functions of their arguments, so the `Trainer` stays about the loop and each helper can be
tested on its own.
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


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor of a (nested) batch to `device`; other values pass through."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in batch):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def append_metrics(path: Path, record: dict[str, float], writer: Any = None) -> None:
    """Append one record to `metrics.jsonl` and, given a TensorBoard writer, its scalars (loss/*, val/*,
    train/lr, train/seconds) at `record["step"]`."""
    with open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")
    if writer is None:
        return
    for key, value in record.items():
        if key == "step":
            continue
        tag = key.replace("val_", "val/", 1) if key.startswith("val_") else f"loss/{key}"
        if key in ("lr", "seconds"):
            tag = f"train/{key}"
        writer.add_scalar(tag, value, record["step"])


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
