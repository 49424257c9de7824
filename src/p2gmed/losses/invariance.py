"""Invariance constraint, Eq. 3: every modality's X'_i of one subject should equal the subject's X'.

    L_inv = sum_i || X'_i - X' ||^2,   X' = mean(X'_i, X'_j, ...)      (Sec. 3.2)

Algorithm 1 computes it one modality at a time "for saving memory": the anchor X' is built from the modalities
already seen, is detached (no graph is kept across modalities) and the term starts at the second modality.
`RunningAnchor` keeps that anchor per crop: either the running mean of the X'_i seen so far (Eq. 3, "mean"),
or the (X' + X'_i) / 2 update written in Algorithm 1 and used by the release ("halving", later modalities
weigh more).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn


class InvarianceLoss(nn.Module):
    """Mean squared distance between X'_i and the anchor; the anchor is detached here.

    The squared norm of Eq. 3 is averaged over elements (as the release's `nn.MSELoss`) so that its weight
    does not depend on the bottleneck size.

    Shapes:
        fused: (N, C, d, h, w) X'_i; anchor: same shape (receives no gradient); output: () scalar.

    Raises:
        ValueError: if the shapes differ.
    """

    def forward(self, fused: Tensor, anchor: Tensor) -> Tensor:
        if fused.shape != anchor.shape:
            raise ValueError(f"X' {tuple(fused.shape)} and anchor {tuple(anchor.shape)} must have one shape")
        return (fused.float() - anchor.detach().float()).pow(2).mean()


class RunningAnchor:
    """Per-crop anchor X' of the invariance loss over the modalities of one step.

    Args:
        num_crops: N, crops of the step.
        mode: "mean": X' = mean of the X'_i seen so far; "halving": X' <- (X' + X'_i) / 2 (Algorithm 1).

    Crops may lack modalities (a missing one is skipped for that crop), so each crop keeps its own count.
    Values are stored detached, in float32.
    """

    def __init__(self, num_crops: int, mode: Literal["mean", "halving"] = "mean") -> None:
        if mode not in ("mean", "halving"):
            raise ValueError(f"anchor mode must be 'mean' or 'halving', got {mode!r}")
        self.mode = mode
        self.count = torch.zeros(num_crops, dtype=torch.long)  # modalities seen per crop
        self.value: Tensor | None = None  # (N, C, d, h, w), allocated by the first update

    def seen(self, rows: Tensor) -> Tensor:
        """rows (R,) int64 indices into the N crops -> (R,) bool: which already have an anchor."""
        return self.count[rows.cpu()] > 0

    def get(self, rows: Tensor) -> Tensor:
        """rows (R,) -> anchor (R, C, d, h, w) (meaningful only where `seen(rows)`)."""
        if self.value is None:
            raise RuntimeError("the anchor is empty: update it with the first modality before reading it")
        return self.value[rows.to(self.value.device)]

    def update(self, fused: Tensor, rows: Tensor) -> None:
        """Fold X'_i (R, C, d, h, w) of the crops `rows` (R,) into their anchors."""
        fused = fused.detach().float()
        rows = rows.cpu()
        if self.value is None:
            self.value = fused.new_zeros((len(self.count), *fused.shape[1:]))
        idx = rows.to(self.value.device)
        count = self.count[rows].to(fused.device).view(-1, *([1] * (fused.ndim - 1))).float()
        old = self.value[idx]
        if self.mode == "mean":
            new = old + (fused - old) / (count + 1)
        else:  # halving; the first modality of a crop sets its anchor
            new = torch.where(count > 0, (old + fused) / 2, fused)
        self.value[idx] = new
        self.count[rows] += 1
