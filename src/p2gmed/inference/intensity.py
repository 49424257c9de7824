"""Intensities of predicted volumes: training normalisation in, its inverse out (`data/normalization.py`).

A given modality is normalised with its own statistics and a reconstruction of it goes back with them. A
synthesized modality has no scan of its own, so:

* CT and PET use fixed maps (HU window -> [-1, 1], SUV / scale): the inverse needs no scan, results are in HU / SUV;
* MRI is a z-score: the synthesized volume is put on the scale of the given MRI scans, with the mean of their
  means and the mean of their standard deviations (`reference_stats`). Without any given MRI (e.g. a PET/CT case
  fed to a model that also knows MRI) mean 0 and std 1 are used and the sidecar says so.
* With `data.mri_norm = "nonzero"` the MRI background is 0 in the scans; synthesized MRI is set to 0 outside the
  union of the given scans' non-zero voxels (`foreground`), as the skull-stripped inputs are.
"""

from __future__ import annotations

import logging

import numpy as np

from p2gmed.data.normalization import NormStats, denormalize, normalize, stats_for
from p2gmed.modalities import KIND

log = logging.getLogger(__name__)

__all__ = ["DESCRIPTION", "foreground", "normalize", "output_stats", "reference_stats", "to_native_units"]

DESCRIPTION = (
    "inputs normalised as in training (MRI z-score, CT HU window -> [-1, 1], PET SUV / scale); outputs in native "
    "units: CT in HU, PET in SUV, synthesized MRI with the mean of the given MRI scans' means and standard "
    "deviations, zero outside the given scans' non-zero voxels when MRI was normalised over non-zero voxels"
)


def reference_stats(given: dict[str, NormStats]) -> NormStats | None:
    """Pooled z-score statistics of the given MRI modalities (mean of shifts, mean of scales), or None."""
    mri = [s for s in given.values() if s.kind == "mri"]
    if not mri:
        return None
    return NormStats(
        "mri",
        float(np.mean([s.shift for s in mri])),
        float(np.mean([s.scale for s in mri])),
        nonzero=mri[0].nonzero,
    )


def output_stats(modality: str, given: dict[str, NormStats], data_cfg) -> NormStats:
    """Statistics to bring a predicted `modality` back to native units.

    Args:
        modality: canonical name of the output channel.
        given: statistics of the given modalities (from `normalize`).
        data_cfg: the model's `Config.data`.
    """
    if modality in given:
        return given[modality]
    if KIND[modality] != "mri":
        return stats_for(modality, None, data_cfg)  # fixed maps: no scan needed
    pooled = reference_stats(given)
    if pooled is None:
        log.warning("no MRI given: synthesized %s is written as a z-score (mean 0, std 1)", modality)
        return NormStats("mri", 0.0, 1.0, nonzero=data_cfg.mri_norm == "nonzero")
    return pooled


def foreground(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """(X, Y, Z) bool: voxels non-zero in any given scan."""
    masks = [a != 0 for a in arrays.values()]
    return np.logical_or.reduce(masks) if len(masks) > 1 else masks[0]


def to_native_units(
    volume: np.ndarray, modality: str, stats: NormStats, mask: np.ndarray | None = None
) -> np.ndarray:
    """(X, Y, Z) normalised prediction -> float32 in the modality's units (MRI scale, HU, SUV).

    `mask` (bool, same shape) zeroes MRI background; it is ignored for CT and PET.
    """
    keep = mask if (mask is not None and KIND[modality] == "mri" and stats.nonzero) else None
    return np.asarray(denormalize(volume, stats, foreground=keep), dtype=np.float32)
