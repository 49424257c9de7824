"""The geometric transformations phi of the equivariance constraint: rotations by 0/90/180/270 degrees.

The paper (Sec. 3.2, after Tang et al. 2022) rotates each sub-volume by k x 90 degrees "along the z-axis" and
trains a head to predict k. Like Tang's and the authors' `rot_rand`, the rotation acts in the plane of the
first two spatial axes of a (B, C, D, H, W) tensor, i.e. about the LAST spatial axis (W). The configuration
guarantees D == H, so every rotated crop keeps its shape. Each sample of a batch has its own k.
"""

from __future__ import annotations

import torch
from torch import Tensor

NUM_ROTATIONS = 4
"""Rotation classes: k = 0, 1, 2, 3 quarter turns."""



def sample_rotations(n: int, generator: torch.Generator | None = None) -> Tensor:
    """Draw one rotation class per sample, uniformly from {0, 1, 2, 3}.

    Args:
        n: number of samples.
        generator: CPU random generator (makes the draw reproducible).

    Returns:
        (n,) int64 on the CPU.
    """
    return torch.randint(0, NUM_ROTATIONS, (n,), generator=generator)


def _check(x: Tensor, k: Tensor) -> Tensor:
    if x.ndim != 5:
        raise ValueError(f"expected a (B, C, D, H, W) tensor, got shape {tuple(x.shape)}")
    k = torch.as_tensor(k).reshape(-1)
    if k.numel() != x.shape[0]:
        raise ValueError(f"expected one rotation per sample ({x.shape[0]}), got {k.numel()}")
    if x.shape[2] != x.shape[3] and bool((k % 2 == 1).any()):
        raise ValueError(f"odd quarter turns need D == H, got shape {tuple(x.shape)}")
    return k


def rotate(x: Tensor, k: Tensor) -> Tensor:
    """Apply phi_k: rotate sample b by k[b] x 90 degrees in the (D, H) plane.

    Args:
        x: (B, C, D, H, W).
        k: (B,) integer rotation classes (any integers; taken modulo 4).

    Returns:
        (B, C, D, H, W), a new tensor (autograd flows through it).

    Raises:
        ValueError: if x is not 5-D, k has not B entries, or an odd turn meets D != H.
    """
    k = _check(x, k)
    return torch.stack([torch.rot90(x[b], int(k[b]) % NUM_ROTATIONS, dims=(1, 2)) for b in range(x.shape[0])])


def unrotate(x: Tensor, k: Tensor) -> Tensor:
    """Apply phi_k^{-1}: undo `rotate(., k)`, i.e. rotate by -k[b] x 90 degrees in the (D, H) plane.

    Args:
        x: (B, C, D, H, W).
        k: (B,) the rotation classes used by `rotate`.

    Returns:
        (B, C, D, H, W).
    """
    k = _check(x, k)
    return rotate(x, (-k) % NUM_ROTATIONS)
