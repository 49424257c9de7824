"""The voxel spacing a model is trained at, recorded in its checkpoint so that prediction can match it.

As nnU-Net's "target spacing": when `data.spacing` resamples every subject, that is it; otherwise the subjects
keep their native grids and the median of their voxel sizes (per RAS axis, read from the headers only) stands for
the scale the network has seen. `p2g predict` resamples each input to it and back (`inference.geometry`).
"""

from __future__ import annotations

from collections.abc import Iterable

import nibabel as nib
import numpy as np
from nibabel import orientations

from p2gmed.data.records import Subject


def ras_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel sizes (mm) of a grid along the R, A, S axes, whatever the voxel order of the file."""
    zooms = nib.affines.voxel_sizes(affine)
    ornt = orientations.io_orientation(affine)
    ras = np.empty(3)
    for axis, (target, _) in enumerate(ornt):
        ras[int(target)] = zooms[axis]
    return tuple(float(v) for v in ras)  # type: ignore[return-value]


def training_spacing(subjects: Iterable[Subject], configured=None) -> tuple[float, float, float] | None:
    """The spacing the model sees: `configured` (`data.spacing`) if set, else the per-axis median over subjects.

    Only headers are read. None when there is no readable image.
    """
    if configured is not None:
        return tuple(float(v) for v in configured)  # type: ignore[return-value]
    spacings = []
    for subject in subjects:
        path = next(iter(subject.images.values()), None)
        if path is None:
            continue
        try:
            spacings.append(ras_spacing(nib.load(str(path)).affine))
        except Exception:  # noqa: BLE001 - unreadable files are reported by the loaders, not here
            continue
    if not spacings:
        return None
    return tuple(round(float(v), 6) for v in np.median(np.asarray(spacings), axis=0))  # type: ignore[return-value]
