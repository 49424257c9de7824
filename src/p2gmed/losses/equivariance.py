"""Equivariance constraint, Eq. 4-5: the rotation phi applied to the input must be recoverable from z.

    L_equ = - sum_r phi_r log F(z)_r     (cross entropy of the 4 rotation classes, Tang et al. 2022)
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from p2gmed.models.rotation import NUM_ROTATIONS


class RotationLoss(nn.Module):
    """Cross entropy between the predicted and the applied rotation class, averaged over the batch.

    Shapes:
        logits: (N, 4) un-normalised F(z); target: (N,) int64 in {0, 1, 2, 3}; output: () scalar.

    Raises:
        ValueError: if the shapes disagree or the logits do not have 4 classes.
    """

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        if logits.ndim != 2 or logits.shape[1] != NUM_ROTATIONS or target.shape != logits.shape[:1]:
            raise ValueError(
                f"expected logits (N, {NUM_ROTATIONS}) and target (N,), got {tuple(logits.shape)} and "
                f"{tuple(target.shape)}"
            )
        return F.cross_entropy(logits.float(), target.to(logits.device).long())
