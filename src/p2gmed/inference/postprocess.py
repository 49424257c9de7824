"""Optional post-processing of predicted label maps: which connected lesions to keep (`inference.lesions`).

* ``all``: keep every predicted voxel (default; the paper has no post-processing).
* ``largest``: keep the largest connected lesion, against false-positive blobs far from the tumour.
* ``core``: keep the connected lesion that holds the most predicted tumour core (BraTS NCR + ET); a glioma's edema
  surrounds its core, so an edema-only blob is a false positive even when it is larger than the tumour (a small
  tumour beside bright white matter). Falls back to ``largest`` when no core is predicted (FLAIR alone often
  shows none).

A lesion is a 26-connected component of all non-zero labels together, so a tumour's necrosis, edema and
enhancing ring stay one lesion. Both filters assume one lesion per subject: true of the built-in brains and of
most gliomas, not of multifocal gliomas, metastases or AutoPET (docs/method.md §8). nnU-Net decides the same kind
of step per data set from validation Dice; here it is a documented switch, chosen for `p2g demo` on held-out
development subjects (docs/results.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from p2gmed.data.layouts import REGIONS
from p2gmed.errors import InputError

LESION_FILTERS = ("all", "largest", "core")


def _components(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """26-connected components of the non-zero voxels: (D, H, W) int32 ids 1..n (0 = background), n."""
    return ndimage.label(np.asarray(labels) != 0, structure=np.ones((3, 3, 3), dtype=bool))


def _keep(labels: np.ndarray, components: np.ndarray, component: int) -> np.ndarray:
    return np.where(components == component, labels, 0).astype(labels.dtype)


def keep_largest_component(labels: np.ndarray) -> np.ndarray:
    """Keep the largest connected lesion of a label map and set every other labelled voxel to background.

    Args:
        labels: (D, H, W) integer label map, 0 = background.

    Returns:
        (D, H, W) label map of the same dtype; unchanged when it has at most one component.
    """
    components, n = _components(labels)
    if n <= 1:
        return labels
    sizes = np.bincount(components.ravel(), minlength=n + 1)[1:]
    return _keep(labels, components, 1 + int(np.argmax(sizes)))


def keep_component_with_core(labels: np.ndarray, core_labels: Sequence[int]) -> np.ndarray:
    """Keep the connected lesion holding the most voxels of `core_labels`; the largest lesion when none holds any.

    Args:
        labels: (D, H, W) integer label map, 0 = background.
        core_labels: the label values of the tumour core, e.g. (1, 3) for BraTS 2023 (NCR, ET).

    Returns:
        (D, H, W) label map of the same dtype; unchanged when it has at most one component. Ties in core voxels
        go to the larger lesion.
    """
    components, n = _components(labels)
    if n <= 1:
        return labels
    sizes = np.bincount(components.ravel(), minlength=n + 1)[1:]
    core_voxels = np.bincount(components[np.isin(labels, tuple(core_labels))], minlength=n + 1)[1:]
    # most core first, then the larger lesion; without any core simply the largest
    best = np.lexsort((sizes, core_voxels))[-1] if core_voxels.any() else np.argmax(sizes)
    return _keep(labels, components, 1 + int(best))


def check_lesion_filter(name: str, label_set: str) -> None:
    """Refuse a filter the model's labels cannot support (InputError naming the setting)."""
    if name not in LESION_FILTERS:
        raise InputError(f"inference.lesions must be one of {', '.join(LESION_FILTERS)}, got {name!r}")
    if name == "core" and "tc" not in REGIONS.get(label_set, {}):
        raise InputError(
            f"inference.lesions: core keeps the lesion with the most tumour core, which {label_set} labels do not "
            "have; use 'largest' or 'all'"
        )


def filter_lesions(labels: np.ndarray, name: str, label_set: str) -> np.ndarray:
    """Apply the lesion filter `name` ("all", "largest", "core") to a (D, H, W) label map of `label_set`."""
    check_lesion_filter(name, label_set)
    if name == "largest":
        return keep_largest_component(labels)
    if name == "core":
        return keep_component_with_core(labels, REGIONS[label_set]["tc"])
    return labels
