"""The one resolver from a device name (`train.device`, `--device`) to a `torch.device`, and from a precision name
(`train.precision`) to the autocast precision that device runs well."""

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


def bf16_is_fast(device: torch.device) -> bool:
    """Whether bf16 3D convolutions have fast kernels on `device`.

    CUDA: the GPU supports bf16 (Ampere and later). CPU: oneDNN supports bf16 here (x86 with AVX-512; natively
    fast with AVX512_BF16 or AMX). Without it PyTorch runs bf16 convolutions in its reference kernel
    (`aten::slow_conv3d_forward`), 20-40x slower than fp32 (docs/performance.md).
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def resolve_precision(name: str, device: torch.device) -> str:
    """The autocast precision a `train.precision` name means on `device` ("fp32", "bf16" or "fp16").

    "auto" -> bf16 on a GPU with bf16 support, else fp32; on the CPU always fp32, where bf16 autocast made the
    tiny preset's step no faster and is catastrophic without oneDNN bf16 kernels (docs/performance.md). An
    explicit "bf16" on a CPU without those kernels is kept, with a warning.
    """
    import logging

    if name == "auto":
        return "bf16" if device.type == "cuda" and bf16_is_fast(device) else "fp32"
    if name == "bf16" and device.type == "cpu" and not bf16_is_fast(device):
        logging.getLogger(__name__).warning(
            "train.precision bf16 on this CPU: oneDNN has no bf16 kernels here (it needs AVX-512), so 3D "
            "convolutions run in PyTorch's reference kernel, 20-40x slower than fp32; use train.precision fp32"
        )
    return name
