"""The segmentation task loss of tuning: soft Dice + weighted cross-entropy.

The paper adopts the mmFormer / RFNet / M2FTrans formulation (App. B.2.2, "Dice loss and the weighted
cross-entropy adopted by Shi et al. 2023"), computed as mmFormer's `criterions.py`:

* weighted cross-entropy (`softmax_weighted_loss`): for every sample b and class k the weight is
  ``w_bk = 1 - (voxels of class k in sample b) / (voxels of sample b)``; the loss is
  ``mean over voxels and samples of  sum_k  -w_bk * y_bk * log(clamp(p_bk, 0.005, 1))`` with p the softmax;
* soft Dice (`dice_loss`): ``1 - mean_k 2 sum(p_k y_k) / (sum p_k + sum y_k + eps)``, sums over the whole
  batch: MONAI's `DiceLoss` with the arguments of `mmformer_dice`.

Targets are class indices 0..K-1 (`p2gmed.data.layouts.labels_to_classes`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss

#: the log of the softmax probability is clamped below at this value, as mmFormer does
LOG_CLAMP = 0.005


def mmformer_dice(eps: float = 1e-7) -> DiceLoss:
    """MONAI's DiceLoss computing mmFormer's `dice_loss`: logits (B, K, D, H, W), classes (B, 1, D, H, W) ->
    mean over the classes of the soft Dice, intersections summed over the whole batch."""
    return DiceLoss(softmax=True, to_onehot_y=True, batch=True, smooth_nr=0.0, smooth_dr=eps)


def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weighting: str = "mmformer") -> torch.Tensor:
    """mmFormer's `softmax_weighted_loss` (weighting "mmformer"), or the same clamped cross-entropy with every class
    weighted 1 (weighting "uniform", nnU-Net's plain CE up to the clamp).

    Args:
        logits: (B, K, D, H, W) raw network outputs.
        target: (B, 1, D, H, W) int64 class indices.

    Returns:
        scalar: mean over all voxels of ``sum_k -w_bk y_bk log(clamp(softmax_k, 0.005, 1))`` with
        ``w_bk = 1 - fraction of sample b's voxels in class k`` (mmformer) or 1 (uniform).
    """
    num_cls = logits.shape[1]
    onehot = F.one_hot(target[:, 0].long(), num_cls).movedim(-1, 1).to(logits.dtype)  # (B, K, D, H, W)
    spatial = tuple(range(2, logits.ndim))
    if weighting == "mmformer":
        weight = 1.0 - onehot.sum(spatial) / onehot.sum(dim=(1, *spatial)).unsqueeze(1)  # (B, K)
    elif weighting == "uniform":
        weight = torch.ones(onehot.shape[:2], dtype=logits.dtype, device=logits.device)
    else:
        raise ValueError(f"unknown cross-entropy weighting {weighting!r}; use 'mmformer' or 'uniform'")
    log_p = torch.log(torch.softmax(logits, dim=1).clamp(min=LOG_CLAMP, max=1.0))
    per_voxel = -(weight[(...,) + (None,) * len(spatial)] * onehot * log_p).sum(1)  # (B, D, H, W)
    return per_voxel.mean()
