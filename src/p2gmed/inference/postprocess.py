"""Optional post-processing of predicted label maps (`inference.keep_largest_component`)."""

from __future__ import annotations

import numpy as np
import torch


def keep_largest_component(labels: np.ndarray) -> np.ndarray:
    """Keep the largest connected lesion of a label map and set every other labelled voxel to background.

    All non-zero labels count as one lesion (26-connectivity), so a tumour's necrosis, edema and enhancing ring
    stay together; only separate blobs (false positives far from the tumour) are removed. nnU-Net decides the
    same post-processing per data set from validation Dice; here it is a documented switch, off by default,
    because it assumes one lesion per subject.

    Args:
        labels: (D, H, W) integer label map, 0 = background.

    Returns:
        (D, H, W) label map of the same dtype; unchanged when it has at most one component.
    """
    from monai.transforms.utils import get_largest_connected_component_mask

    lesion = torch.from_numpy(np.asarray(labels) != 0)
    if not bool(lesion.any()):
        return labels
    keep = get_largest_connected_component_mask(lesion, connectivity=3).numpy().astype(bool)
    return np.where(keep, labels, 0).astype(labels.dtype)
