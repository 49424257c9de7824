"""The one resolver from a device name (`train.device`, `--device`) to a `torch.device`."""

from __future__ import annotations

import torch

from p2gmed.errors import InputError
from p2gmed.train.distributed import local_rank


def resolve_device(name: str) -> torch.device:
    """The device a name means.

    "auto" -> this process's GPU if CUDA is available, else the CPU; "cuda" -> this process's GPU (torchrun's LOCAL_RANK, 0 without torchrun); "cpu" and "cuda:N" as written.

    Raises:
        InputError: a string that names no device, or CUDA asked for on a machine without it.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"device {name!r} is not a device name (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {name!r} asks for CUDA, but no CUDA device is available; use --device cpu")
    return torch.device("cuda", local_rank()) if name == "cuda" else device
