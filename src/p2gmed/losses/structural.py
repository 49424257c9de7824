"""A structural-similarity term for synthesis tuning: 1 - SSIM of each decoded modality against the crop.

Not in the paper (its synthesis loss L_ori is the MSE, Sec. 3.4): an option, off by default (`loss.ssim: 0`),
because the synthesis papers this method is compared with score SSIM and a pixel loss alone leaves the
synthesized volumes smooth (docs/method.md §5.11, docs/results.md "Synthesis: an SSIM term").

SSIM is MONAI's (`SSIMLoss`: Gaussian window, sigma 1.5, 11 taps, the Wang et al. constants, mean over the
valid region) on each available (crop, modality) pair, computed with the Gaussian applied one axis at a time:
the same numbers (the tests compare with `monai.losses.SSIMLoss`) at 33 instead of 1331 taps per voxel, which
on a CPU is the difference between 1.5 and 13 s per tuning step. Tuning crops are z-scored, so each pair is first
mapped to [0, 1] by the TARGET's own minimum and maximum over the crop, the prediction with the same map, and
the data range is 1: the term rewards matching the target's local means, contrasts and structure on the
target's scale. Pairs whose target is constant carry no structure and are skipped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

K1, K2 = 0.01, 0.03


def gaussian_taps(window: int, sigma: float) -> Tensor:
    """(window,) normalised Gaussian, centred like MONAI's `_gaussian_kernel`."""
    distance = torch.arange((1 - window) / 2, (1 + window) / 2, 1.0)
    taps = torch.exp(-((distance / sigma) ** 2) / 2)
    return taps / taps.sum()


def ssim_map(x: Tensor, y: Tensor, taps: Tensor, data_range: float = 1.0) -> Tensor:
    """Local SSIM of x against y over the valid region.

    Args:
        x, y: (B, 1, D, H, W).
        taps: (K,) separable window.

    Returns:
        (B, 1, D - K + 1, H - K + 1, W - K + 1).
    """
    stats = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # (B, 5, D, H, W)
    k = taps.to(x)
    for axis in range(3):
        shape = [1, 1, 1]
        shape[axis] = k.numel()
        stats = F.conv3d(stats, k.view(1, 1, *shape).expand(5, 1, *shape), groups=5)
    mu_x, mu_y, xx, yy, xy = stats.unbind(1)
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    ssim = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1) * (2 * cov + c2) / (var_x + var_y + c2)
    return ssim.unsqueeze(1)


class StructuralSimilarityLoss(nn.Module):
    """Mean 1 - SSIM over the available modalities of each crop.

    Args:
        window: Gaussian window size (voxels); the crop must be at least this large on every axis.
        sigma: Gaussian window standard deviation (voxels).

    Shapes:
        prediction: (N, M, D, H, W); target: same (channels of missing modalities may hold anything, even NaN);
        available: (N, M) bool; output: () scalar, 0 (with the graph kept) when no pair is usable.
    """

    def __init__(self, window: int = 11, sigma: float = 1.5) -> None:
        super().__init__()
        self.window = window
        self.register_buffer("taps", gaussian_taps(window, sigma), persistent=False)

    def forward(self, prediction: Tensor, target: Tensor, available: Tensor) -> Tensor:
        n, m = prediction.shape[:2]
        if prediction.ndim != 5 or target.shape != prediction.shape or tuple(available.shape) != (n, m):
            raise ValueError(
                "expected prediction/target (N, M, D, H, W) and available (N, M); got "
                f"{tuple(prediction.shape)}, {tuple(target.shape)}, {tuple(available.shape)}"
            )
        if min(prediction.shape[2:]) < self.window:
            raise ValueError(f"SSIM needs crops of at least {self.window} voxels per axis, got {tuple(prediction.shape[2:])}")
        pred = prediction.float().flatten(0, 1)  # (N*M, D, H, W)
        ref = target.to(prediction.device).float().flatten(0, 1)
        keep = available.to(prediction.device).flatten()
        pred, ref = pred[keep], ref[keep]
        low = ref.flatten(1).amin(1).view(-1, 1, 1, 1)
        span = ref.flatten(1).amax(1).view(-1, 1, 1, 1) - low
        usable = span.flatten() > 0
        if not bool(usable.any()):
            return prediction.sum() * 0.0
        low, span = low[usable], span[usable]
        pred, ref = (pred[usable] - low) / span, (ref[usable] - low) / span
        similarity = ssim_map(pred.unsqueeze(1), ref.unsqueeze(1), self.taps)  # (P, 1, D', H', W')
        return 1.0 - similarity.flatten(1).mean(1).mean()
