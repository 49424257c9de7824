"""Segmentation targets and the segmentation task loss.

The loss is the mmFormer / RFNet / M2FTrans formulation the paper adopts (App. B.2.2, "Dice loss and the
weighted cross-entropy adopted by Shi et al. 2023"), computed as in `mmformer/utils/criterions.py`:

* weighted cross-entropy (`softmax_weighted_loss`): for every sample b and class k the weight is
  ``w_bk = 1 - (voxels of class k in sample b) / (voxels of sample b)``; the loss is
  ``mean over voxels and samples of  sum_k  -w_bk * y_bk * log(clamp(p_bk, 0.005, 1))`` with p the softmax;
* soft Dice (`dice_loss`): ``1 - mean_k 2 sum(p_k y_k) / (sum p_k + sum y_k + eps)``, sums over the whole
  batch.

Label conventions map to class indices here: BraTS 2023 labels (0, 1, 2, 3) are already classes 0..3;
BraTS 2018/21 label ET 4 becomes class 3 (and back); AutoPET (0, 1) is two classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import nn

from p2gmed.data.layouts import LABEL_VALUES, REGIONS
from p2gmed.errors import InputError

#: the log of the softmax probability is clamped below at this value, as mmFormer does
LOG_CLAMP = 0.005


def num_classes(convention: str) -> int:
    """Number of classes (background included) of a label convention: 4 for BraTS, 2 for AutoPET."""
    if convention not in LABEL_VALUES:
        raise InputError(f"unknown label convention '{convention}'; known: {', '.join(LABEL_VALUES)}")
    return len(LABEL_VALUES[convention])


def labels_to_classes(label: torch.Tensor, convention: str) -> torch.Tensor:
    """Map label values to class indices 0..K-1 (the i-th legal label value becomes class i).

    Args:
        label: integer tensor of label values, any shape (e.g. (B, 1, D, H, W)).
        convention: "brats2023", "brats2018" or "autopet".

    Returns:
        int64 tensor of the same shape with values in 0..K-1.

    Raises:
        InputError: a voxel holds a value the convention does not allow.
    """
    values = torch.tensor(LABEL_VALUES.get(convention, ()), dtype=torch.int64, device=label.device)
    if values.numel() == 0:
        raise InputError(f"unknown label convention '{convention}'; known: {', '.join(LABEL_VALUES)}")
    label = label.long()
    classes = torch.searchsorted(values, label.contiguous())
    ok = (classes < values.numel()) & (values[classes.clamp(max=values.numel() - 1)] == label)
    if not bool(ok.all()):
        bad = sorted(set(label[~ok].unique().tolist()))
        raise InputError(
            f"label values {bad} are not legal for the {convention} convention {LABEL_VALUES[convention]}"
        )
    return classes


def classes_to_labels(classes: torch.Tensor, convention: str) -> torch.Tensor:
    """Inverse of `labels_to_classes`: class indices (any shape) -> label values of the convention."""
    values = torch.tensor(LABEL_VALUES[convention], dtype=torch.int64, device=classes.device)
    return values[classes.long()]


def region_masks(label: torch.Tensor, convention: str) -> dict[str, torch.Tensor]:
    """Evaluation regions (BraTS WT/TC/ET, AutoPET lesion) of a label-value tensor as boolean masks."""
    return {
        name: torch.isin(label, torch.tensor(vals, device=label.device))
        for name, vals in REGIONS[convention].items()
    }


def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mmFormer's `softmax_weighted_loss`.

    Args:
        logits: (B, K, D, H, W) raw network outputs.
        target: (B, 1, D, H, W) int64 class indices.

    Returns:
        scalar: mean over all voxels of ``sum_k -w_bk y_bk log(clamp(softmax_k, 0.005, 1))`` with
        ``w_bk = 1 - fraction of sample b's voxels in class k``.
    """
    num_cls = logits.shape[1]
    onehot = F.one_hot(target[:, 0].long(), num_cls).movedim(-1, 1).to(logits.dtype)  # (B, K, D, H, W)
    spatial = tuple(range(2, logits.ndim))
    weight = 1.0 - onehot.sum(spatial) / onehot.sum(dim=(1, *spatial)).unsqueeze(1)  # (B, K)
    log_p = torch.log(torch.softmax(logits, dim=1).clamp(min=LOG_CLAMP, max=1.0))
    per_voxel = -(weight[(...,) + (None,) * len(spatial)] * onehot * log_p).sum(1)  # (B, D, H, W)
    return per_voxel.mean()


def mmformer_dice(eps: float = 1e-7) -> nn.Module:
    """Mean soft Dice over the classes as mmFormer's `dice_loss`: intersections summed over the whole batch."""
    return DiceLoss(softmax=True, to_onehot_y=True, batch=True, smooth_nr=0.0, smooth_dr=eps)


class SoftDiceLoss(nn.Module):
    """The Dice term of the segmentation loss: logits (B, K, D, H, W), classes (B, 1, D, H, W) -> scalar."""

    def __init__(self) -> None:
        super().__init__()
        self.dice = mmformer_dice()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.dice(logits, target)


class WeightedCrossEntropyLoss(nn.Module):
    """The weighted cross-entropy term (`weighted_cross_entropy`): logits (B, K, ...), classes (B, 1, ...)."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return weighted_cross_entropy(logits, target)


class DiceWeightedCELoss(nn.Module):
    """Mean soft Dice over classes + weighted cross-entropy (mmFormer / M2FTrans), each term returned by name.

    Args:
        dice_weight: factor of the Dice term in `total` (cfg.loss.dice).
        ce_weight: factor of the weighted cross-entropy in `total` (cfg.loss.ce).
        eps: Dice denominator epsilon (mmFormer: 1e-7).
    """

    def __init__(self, dice_weight: float = 1.0, ce_weight: float = 1.0, eps: float = 1e-7):
        super().__init__()
        self.dice_weight = dice_weight
        self.ce_weight = ce_weight
        self.dice = mmformer_dice(eps)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Compute the loss terms.

        Args:
            logits: (B, K, D, H, W) raw network outputs.
            target: (B, 1, D, H, W) int64 class indices in 0..K-1.

        Returns:
            {"dice": scalar, "ce": scalar, "total": dice_weight * dice + ce_weight * ce}.
        """
        dice = self.dice(logits, target)
        ce = weighted_cross_entropy(logits, target)
        return {"dice": dice, "ce": ce, "total": self.dice_weight * dice + self.ce_weight * ce}
