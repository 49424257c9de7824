"""Decomposition constraint, Eq. 6: X' must decode into every modality of the subject.

    L_decom = sum_i || phi_i^{-1}( D(X'_i | phi_i(x_h^i)) ) - X_h ||^2

The caller un-rotates the decoded volume (phi^{-1}); this module compares it with every AVAILABLE modality of
the crop. "During training, the background is excluded for modal generation" (Appendix B.2.1): background
voxels get weight `background_weight` (0 excludes them, the paper; the authors' release effectively keeps them
at about 0.1, docs/method.md section 6). The squared error is normalised by the total weight, a weighted mean.

`masked_mean_error` is that error on its own; the synthesis loss of tuning and the pre-training validation
use it too.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn


def masked_mean_error(
    prediction: Tensor,
    target: Tensor,
    available: Tensor,
    foreground: Tensor,
    *,
    background_weight: float = 0.0,
    kind: Literal["mse", "l1"] = "mse",
) -> Tensor:
    """Weighted mean squared (or absolute) error over the available modalities, foreground voxels weighing 1.

    Args:
        prediction: (N, M, D, H, W).
        target: (N, M, D, H, W); channels of missing modalities are ignored whatever they hold (even NaN).
        available: (N, M) bool.
        foreground: (N, 1, D, H, W) bool, shared by the M channels.
        background_weight: weight of the other voxels (0 excludes them).
        kind: "mse" or "l1".

    Returns:
        () float32 scalar; 0 (with the graph kept) when no voxel has weight.

    Raises:
        ValueError: shapes that disagree or an unknown `kind`.
    """
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
    if kind not in ("mse", "l1"):
        raise ValueError(f"the masked error is mse or l1, got {kind!r}")
    device = prediction.device
    fg = foreground.to(device)
    voxel_weight = fg.float() + background_weight * (~fg).float()  # (N, 1, D, H, W)
    weight = voxel_weight * available.to(device).float().view(n, m, 1, 1, 1)  # (N, M, D, H, W)
    # missing channels may hold anything (even NaN): select, never multiply, them away
    diff = (prediction.float() - target.to(device).float()).masked_fill(weight == 0, 0.0)
    error = diff.pow(2) if kind == "mse" else diff.abs()
    total = weight.sum()
    return (weight * error).sum() / total if total > 0 else diff.sum() * 0.0


class DecompositionLoss(nn.Module):
    """Eq. 6: `masked_mean_error` (squared) of the un-rotated decoded modalities against the crop.

    Args:
        background_weight: weight of voxels outside the foreground mask (>= 0; 0 excludes them).

    Shapes:
        prediction: (N, M, D, H, W) decoded modalities, already un-rotated; target: same; available: (N, M)
        bool; foreground: (N, 1, D, H, W) bool; output: () scalar.
    """

    def __init__(self, background_weight: float = 0.0) -> None:
        super().__init__()
        if background_weight < 0:
            raise ValueError(f"background_weight must be >= 0, got {background_weight}")
        self.background_weight = background_weight

    def forward(self, prediction: Tensor, target: Tensor, available: Tensor, foreground: Tensor) -> Tensor:
        return masked_mean_error(
            prediction, target, available, foreground, background_weight=self.background_weight
        )
