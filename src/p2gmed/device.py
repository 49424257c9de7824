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


def _cpu_has_native_bf16() -> bool:
    """Whether the CPU has bf16 instructions (AVX512_BF16 or AMX; Linux /proc/cpuinfo, False elsewhere)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def bf16_is_fast(device: torch.device) -> bool:
    """Whether bf16 autocast runs 3D convolutions faster than fp32 on `device`.

    CUDA: the GPU supports bf16 (Ampere and later). CPU: oneDNN supports bf16 here and the CPU has bf16
    instructions (AVX512_BF16 or AMX). With AVX-512 but without them, oneDNN emulates bf16 (slower than fp32);
    without AVX-512, PyTorch runs bf16 convolutions in its reference kernel (`aten::slow_conv3d_forward`),
    20-40x slower than fp32 (docs/performance.md).
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()) and _cpu_has_native_bf16()
    return False


def resolve_precision(name: str, device: torch.device) -> str:
    """The autocast precision a `train.precision` name means on `device` ("fp32", "bf16" or "fp16").

    "auto" -> bf16 on a GPU with bf16, else fp32. Never bf16 on a CPU, however fast: with torch 2.13 oneDNN's bf16
    conv3d weight gradients are wrong and vary from call to call on small feature maps (2x2x2 and 2x2x4 measured:
    relative error above 1 against fp32, sometimes NaN; 3x3x3 and 4x4x4 were exact), which a 32x32x64 or 64^3
    ROI produces in SwinUNETR's bottleneck and first decoder block (docs/performance.md). An explicit "bf16" on a
    CPU is kept, with a warning.
    """
    import logging

    if name == "auto":
        return "bf16" if device.type == "cuda" and bf16_is_fast(device) else "fp32"
    if name == "bf16" and device.type == "cpu":
        slow = "" if bf16_is_fast(device) else (
            " It is also slower than fp32 on this CPU: it has no bf16 instructions (AVX512_BF16 or AMX), and "
            "without AVX-512 3D convolutions run in PyTorch's reference kernel, 20-40x slower."
        )
        logging.getLogger(__name__).warning(
            "train.precision bf16 on a CPU: oneDNN's bf16 conv3d weight gradients are wrong on small feature "
            "maps (2x2x2, 2x2x4: SwinUNETR's bottleneck at ROIs such as 32x32x64 or 64^3), so a step can "
            "diverge or learn from garbage.%s Use train.precision fp32 on CPUs.", slow
        )
    return name
