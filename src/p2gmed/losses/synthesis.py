"""The synthesis task loss of tuning (L_ori of Eq. 8): every modality of the subject, foreground only."""

from __future__ import annotations

from torch import Tensor, nn


class MaskedRegressionLoss(nn.Module):
    """Mean squared (or absolute) error over available modalities and foreground voxels.

    Shapes:
        prediction, target: (N, M, D, H, W); available: (N, M) bool; foreground: (N, 1, D, H, W) bool;
        output: () scalar (0 when no voxel counts).
    """

    def __init__(self, kind: str = "mse") -> None:
        super().__init__()
        if kind not in ("mse", "l1"):
            raise ValueError(f"synthesis loss must be mse or l1, got {kind!r}")
        self.kind = kind

    def forward(self, prediction: Tensor, target: Tensor, available: Tensor, foreground: Tensor) -> Tensor:
        n, m = prediction.shape[:2]
        weight = foreground.float() * available.to(prediction.device).float().view(n, m, 1, 1, 1)
        diff = (prediction.float() - target.float()).masked_fill(weight == 0, 0.0)
        error = diff.pow(2) if self.kind == "mse" else diff.abs()
        total = weight.sum()
        return (weight * error).sum() / total if total > 0 else diff.sum() * 0.0
