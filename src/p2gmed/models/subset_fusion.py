"""Combining the encodings of several modalities into one decoder input (docs/method.md §4).

Each available modality m of a subset S is encoded alone, giving X'_m and the skip features of four stages.
The decoder runs once on a combination of them:

- X': always the mean over S (the invariance constraint, Eq. 3, trains every X'_m towards the same X_h).
- skip features (`model.subset_skips`): the mean over S, or a learned per-voxel softmax weighting over S whose
  scores come from a 1x1x1 convolution of each modality's own features. The scoring convolutions start at zero,
  so an untrained (or pre-trained) model combines by the mean, and a single modality passes unchanged.
- the full-resolution input skip (`model.input_skip`): the mean image of S in every channel (what averaging the
  repeated single-modality inputs gives), or each modality in its own channel with the channels outside S filled
  by that mean; both equal the modality itself when |S| = 1.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def masked_mean(stack: Tensor, mask: Tensor) -> Tensor:
    """Mean over the modalities present: stack (B, M, C, *spatial), mask (B, M) bool -> (B, C, *spatial)."""
    weights = mask.to(stack.dtype).view(*mask.shape, *([1] * (stack.ndim - 2)))
    return (stack * weights).sum(1) / weights.sum(1).clamp(min=1)


def filled_input(image: Tensor, mask: Tensor) -> Tensor:
    """image (B, M, D, H, W) with the channels outside `mask` (B, M) replaced by the mean of those inside."""
    mean = masked_mean(image.unsqueeze(2), mask)  # (B, 1, D, H, W)
    keep = mask.view(*mask.shape, 1, 1, 1).to(image.device)
    return torch.where(keep, image, mean.expand_as(image))


class SubsetFusion(nn.Module):
    """Combine per-modality skip features over a subset.

    Args:
        skip_channels: channels of the skip features the decoder reads after the input (F, F, 2F, 4F, 8F).
        skips: "mean" or "attention" (`model.subset_skips`).
        input_skip: "mean" or "channels" (`model.input_skip`).
    """

    def __init__(self, skip_channels: list[int], skips: str = "mean", input_skip: str = "mean") -> None:
        super().__init__()
        if skips not in ("mean", "attention") or input_skip not in ("mean", "channels"):
            raise ValueError(f"unknown subset fusion {skips!r} / input skip {input_skip!r}")
        self.input_skip = input_skip
        self.scores = None
        if skips == "attention":
            self.scores = nn.ModuleList(nn.Conv3d(c, 1, kernel_size=1) for c in skip_channels)
            for conv in self.scores:
                nn.init.zeros_(conv.weight)
                nn.init.zeros_(conv.bias)

    def forward(self, image: Tensor, mask: Tensor, skips: list[Tensor]) -> list[Tensor]:
        """The decoder's skips for a subset.

        Args:
            image: (B, M, D, H, W), the stacked modalities (those outside the mask are ignored).
            mask: (B, M) bool, the subset of each crop (at least one True per row).
            skips: per stage after the input, (B, M, C_s, *spatial_s): stage s of modality m in [:, m]
                (rows outside the mask are ignored).

        Returns:
            [input (B, M, D, H, W), then each stage (B, C_s, *spatial_s)], as `P2GNet.decode` reads them.
        """
        mask = mask.to(image.device)
        if self.input_skip == "channels":
            first = filled_input(image, mask)
        else:
            first = masked_mean(image.unsqueeze(2), mask).expand_as(image)
        if self.scores is None:
            return [first, *(masked_mean(s, mask) for s in skips)]
        out = [first]
        for conv, stack in zip(self.scores, skips, strict=True):
            b, m = stack.shape[:2]
            logits = conv(stack.flatten(0, 1)).view(b, m, 1, *stack.shape[3:])
            logits = logits.masked_fill(~mask.view(b, m, 1, *([1] * (stack.ndim - 3))), float("-inf"))
            out.append((torch.softmax(logits.float(), dim=1).to(stack.dtype) * stack).sum(1))
        return out
