"""Per-modality intensity normalisation and its exact inverse.

The modality's kind (`modalities.KIND`) decides the mapping:

* MRI: z-score. `data.mri_norm = "nonzero"` takes mean/std over the non-zero (brain) voxels and leaves the
  background at 0 (as nnU-Net and MONAI `NormalizeIntensity(nonzero=True)`); `"volume"` uses the whole volume
  as the authors' code does (`NormalizeIntensityd`, nonzero=False), so the background becomes -mean/std.
* CT: the HU window `data.ct_window` is clipped and mapped linearly onto [-1, 1].
* PET: SUV divided by `data.pet_scale`, no clipping (lesions may exceed 1).

`normalize` returns the `NormStats` that `denormalize` needs, so predictions can be written back in the
modality's native units without the configuration. Works on numpy arrays and torch tensors alike.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from p2gmed.errors import InputError
from p2gmed.modalities import KIND


@dataclass(frozen=True)
class NormStats:
    """What the inverse of one modality's normalisation needs: normalised = (raw - shift) / scale.

    Attributes:
        kind: "mri", "ct" or "pet".
        shift: subtracted first (MRI mean; CT window centre; 0 for PET).
        scale: divided by next (MRI std; CT window half-width; PET scale).
        nonzero: MRI only: zeros stay zero both ways (background excluded from the statistics).
        clip: CT only: the HU window (low, high) the raw values were clipped to; None otherwise.
    """

    kind: str
    shift: float
    scale: float
    nonzero: bool = False
    clip: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form (JSON / `torch.load(weights_only=True)` safe)."""
        d = asdict(self)
        d["clip"] = list(self.clip) if self.clip is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NormStats:
        clip = d.get("clip")
        return cls(
            d["kind"],
            float(d["shift"]),
            float(d["scale"]),
            bool(d.get("nonzero", False)),
            tuple(clip) if clip is not None else None,
        )  # type: ignore[arg-type]

    @property
    def background(self) -> float:
        """The normalised value of empty space: raw 0 for MRI/PET, the lowest HU of the window for CT."""
        if self.kind == "ct":
            return -1.0
        if self.nonzero:
            return 0.0
        return -self.shift / self.scale


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch") or hasattr(x, "is_floating_point")


def _float(x: Any) -> Any:
    """float32 copy-free view where possible; integer inputs become float32."""
    if _is_torch(x):
        return x.float() if not x.is_floating_point() else x
    x = np.asarray(x)
    return x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float32)


def _where(cond: Any, a: Any, b: Any) -> Any:
    if _is_torch(cond):
        return torch.where(
            cond, a, torch.as_tensor(b, dtype=a.dtype, device=a.device) if not _is_torch(b) else b
        )
    return np.where(cond, a, b).astype(np.asarray(a).dtype, copy=False)


def mri_stats(x: Any, nonzero: bool) -> NormStats:
    """z-score statistics of one MRI volume (any shape). A constant volume gets std 1 (as MONAI does)."""
    values = _float(x)
    if nonzero:
        values = values[values != 0]
    if values.numel() if _is_torch(values) else values.size:
        mean = float(values.double().mean()) if _is_torch(values) else float(values.mean(dtype=np.float64))
        std = (
            float(values.double().std(unbiased=False))
            if _is_torch(values)
            else float(values.std(dtype=np.float64))
        )
    else:
        mean, std = 0.0, 1.0
    return NormStats("mri", mean, std if std > 0 else 1.0, nonzero=nonzero)


def stats_for(modality: str, x: Any, data_cfg: Any) -> NormStats:
    """The normalisation statistics of `modality` for volume `x` under the configuration `data_cfg`."""
    kind = KIND.get(modality)
    if kind == "mri":
        return mri_stats(x, nonzero=data_cfg.mri_norm == "nonzero")
    if kind == "ct":
        low, high = (float(v) for v in data_cfg.ct_window)
        if not high > low:
            raise InputError(f"data.ct_window must be (low, high) with low < high, got {data_cfg.ct_window}")
        return NormStats("ct", (low + high) / 2, (high - low) / 2, clip=(low, high))
    if kind == "pet":
        if not data_cfg.pet_scale > 0:
            raise InputError(f"data.pet_scale must be > 0, got {data_cfg.pet_scale}")
        return NormStats("pet", 0.0, float(data_cfg.pet_scale))
    raise InputError(f"unknown modality '{modality}'")


def apply(x: Any, stats: NormStats) -> Any:
    """Normalise a raw volume (any shape) with given statistics; returns a new float array/tensor."""
    x = _float(x)
    if stats.clip is not None:
        x = x.clip(*stats.clip)
    y = (x - stats.shift) / stats.scale
    return _where(x == 0, 0.0 * y, y) if stats.nonzero else y


def normalize(x: Any, modality: str, data_cfg: Any) -> tuple[Any, NormStats]:
    """Normalise one raw volume of `modality`.

    Args:
        x: raw intensities, any shape (e.g. (D, H, W) or (1, D, H, W)), numpy or torch.
        modality: canonical modality name; its `KIND` picks the mapping.
        data_cfg: `Config.data` (mri_norm, ct_window, pet_scale).

    Returns:
        (normalised volume of the same shape, float; the `NormStats` of the inverse).
    """
    stats = stats_for(modality, x, data_cfg)
    return apply(x, stats), stats


def denormalize(y: Any, stats: NormStats | dict, foreground: Any = None) -> Any:
    """Back to native units (MRI intensity, HU, SUV): the exact inverse of `normalize` on its range.

    CT results are clipped to the window, so a round trip keeps HU inside it. For MRI with `nonzero`, exact
    zeros stay zero (the forward map sent the background there); `foreground` (bool, broadcastable to `y`)
    additionally sets everything outside it to 0, for synthesised images whose background is only near zero.

    Args:
        y: normalised values, any shape, numpy or torch.
        stats: from `normalize` (or its `to_dict()`).
        foreground: optional mask of the voxels to keep.
    """
    if isinstance(stats, dict):
        stats = NormStats.from_dict(stats)
    y = _float(y)
    x = y * stats.scale + stats.shift
    if stats.clip is not None:
        x = x.clip(*stats.clip)
    if stats.nonzero:
        x = _where(y == 0, 0.0 * x, x)
    if foreground is not None:
        x = _where(foreground, x, 0.0 * x)
    return x
