"""Decomposition constraint, Eq. 6: X' must decode into every modality of the subject.

    L_decom = sum_i || phi_i^{-1}( D(X'_i | phi_i(x_h^i)) ) - X_h ||^2

The caller un-rotates the decoded volume (phi^{-1}); this module compares it with every AVAILABLE modality of
the crop. "During training, the background is excluded for modal generation" (Appendix B.2.1): background
voxels get weight `background_weight` (0 excludes them, the paper; the release effectively keeps them at ~0.1,
see docs/method.md §6). The squared error is normalised by the total weight, i.e. a weighted mean.
"""

from __future__ import annotations

from torch import Tensor, nn


class DecompositionLoss(nn.Module):
    """Weighted mean squared error over available modalities and foreground voxels.

    Args:
        background_weight: weight of voxels outside the foreground mask (>= 0; 0 excludes them).

    Shapes:
        prediction: (N, M, D, H, W) decoded modalities, already un-rotated; target: same (channels of missing
        modalities are ignored whatever they hold); available: (N, M) bool; foreground: (N, 1, D, H, W) bool,
        shared by the M channels; output: () scalar (0 when no voxel has weight).

    Raises:
        ValueError: if the shapes disagree.
    """

    def __init__(self, background_weight: float = 0.0) -> None:
        super().__init__()
        if background_weight < 0:
            raise ValueError(f"background_weight must be >= 0, got {background_weight}")
        self.background_weight = background_weight

    def forward(self, prediction: Tensor, target: Tensor, available: Tensor, foreground: Tensor) -> Tensor:
        n, m = prediction.shape[:2]
        if (
            prediction.ndim != 5
            or target.shape != prediction.shape
            or tuple(available.shape) != (n, m)
            or tuple(foreground.shape) != (n, 1, *prediction.shape[2:])
        ):
            raise ValueError(
                "expected prediction/target (N, M, D, H, W), available (N, M), foreground (N, 1, D, H, W); "
                f"got {tuple(prediction.shape)}, {tuple(target.shape)}, {tuple(available.shape)}, "
                f"{tuple(foreground.shape)}"
            )
        device = prediction.device
        fg = foreground.to(device)
        voxel_weight = fg.float() + self.background_weight * (~fg).float()  # (N, 1, D, H, W)
        weight = voxel_weight * available.to(device).float().view(n, m, 1, 1, 1)  # (N, M, D, H, W)
        # missing channels may hold anything (even NaN): select, never multiply, them away
        diff = (prediction.float() - target.to(device).float()).masked_fill(weight == 0, 0.0)
        total = weight.sum()
        return (weight * diff.pow(2)).sum() / total if total > 0 else diff.sum() * 0.0
