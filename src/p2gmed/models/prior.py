"""The learnable biological prior O, its attention retrieval and the fusion into the personalised X'.

Paper, Sec. 3.1 [0]: "the representation z_h^i retrieves its missing knowledge from O via attention:
z_h^i' := attn(query: z_h^i, key: O, value: O). The original representation and the retrieved knowledge are
then fused through convolution: X_h^i' := conv(z_h^i, z_h^i')" (Eq. 3 context: X' = conv(z ⊕ z')).

Token convention (as the authors' release, docs/method.md section 6): CHANNELS ARE TOKENS. Each of the
C = 16F bottleneck channels is one token whose embedding is its flattened d*h*w voxels; O has exactly the
bottleneck's shape (1, C, d, h, w). The attention has no residual, norm or positional embedding, as the
release.

References:
    [0] Tan et al., "Towards a Universal 3D Medical Multi-modality Generalization via Learning Personalized
        Invariant Representation", ICCV 2025, arXiv:2411.06106.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from p2gmed.config import Config


def largest_divisor_at_most(n: int, limit: int) -> int:
    """Largest divisor of `n` that is <= `limit` (at least 1): the head count MultiheadAttention accepts."""
    return max(d for d in range(1, max(1, min(n, limit)) + 1) if n % d == 0)


class PriorRetrieval(nn.Module):
    """Retrieve knowledge from a learnable prior O by attention: z' = Attn(query z, key O, value O).

    Args:
        channels: C, channels of the bottleneck (16F); the number of tokens.
        spatial_size: (d, h, w) of the bottleneck; d*h*w is the token embedding size.
        num_heads: requested attention heads; reduced to the largest divisor of d*h*w not above it.

    Shapes:
        z: (B, C, d, h, w); prior O: (1, C, d, h, w), broadcast over the batch; output z': (B, C, d, h, w).
    """

    def __init__(self, channels: int, spatial_size: tuple[int, int, int], *, num_heads: int = 3) -> None:
        super().__init__()
        self.channels = channels
        self.spatial_size = tuple(int(s) for s in spatial_size)
        embed = math.prod(self.spatial_size)
        if embed < 1 or channels < 1:
            raise ValueError(f"prior needs a non-empty bottleneck, got C={channels}, (d,h,w)={spatial_size}")
        # O ~ N(0, 1), the shape and initialisation of the release (`torch.randn(1, 768, 3, 3, 3)`)
        self.prior = nn.Parameter(torch.randn(1, channels, *self.spatial_size))
        self.num_heads = largest_divisor_at_most(embed, num_heads)
        self.attention = nn.MultiheadAttention(embed, self.num_heads, batch_first=True)

    def forward(self, z: Tensor) -> Tensor:
        """z (B, C, d, h, w) -> retrieved z' (B, C, d, h, w)."""
        if z.shape[1:] != self.prior.shape[1:]:
            raise ValueError(
                f"bottleneck features {tuple(z.shape)} do not match the prior {tuple(self.prior.shape)}; "
                "the ROI must be the one the model was built for"
            )
        tokens = z.flatten(2)  # (B, C tokens, d*h*w)
        prior = self.prior.flatten(2).expand(z.shape[0], -1, -1).to(tokens.dtype)
        retrieved, _ = self.attention(tokens, prior, prior, need_weights=False)
        return retrieved.reshape(z.shape)


class PriorFusion(nn.Module):
    """Refine encoder features by attending to a learnable prior, then fuse: X' = fuse(z, Attn(z, O, O)).

    Args:
        channels: C (16F).
        spatial_size: (d, h, w) of the bottleneck.
        num_heads: attention heads (see `PriorRetrieval`).
        fusion: "paper": X' = Conv3d(2C -> C, k3)(z ⊕ z'); "code" (authors' release): z' passes two plain
            Conv3d(C, C, k3) first, then X' = Conv3d(3C -> C, k3)(z ⊕ z' ⊕ z) (z concatenated twice).

    Shapes:
        z: (B, C, d, h, w) -> X': (B, C, d, h, w).
    """

    def __init__(
        self,
        channels: int,
        spatial_size: tuple[int, int, int],
        *,
        num_heads: int = 3,
        fusion: Literal["paper", "code"] = "paper",
    ) -> None:
        super().__init__()
        if fusion not in ("paper", "code"):
            raise ValueError(f"fusion must be 'paper' or 'code', got {fusion!r}")
        self.fusion = fusion
        self.retrieval = PriorRetrieval(channels, spatial_size, num_heads=num_heads)
        if fusion == "code":
            self.transfer = nn.Sequential(
                nn.Conv3d(channels, channels, 3, padding=1), nn.Conv3d(channels, channels, 3, padding=1)
            )
            self.fuse = nn.Conv3d(3 * channels, channels, 3, padding=1)
        else:
            self.transfer = nn.Identity()
            self.fuse = nn.Conv3d(2 * channels, channels, 3, padding=1)

    @property
    def prior(self) -> nn.Parameter:
        """The learnable prior O, (1, C, d, h, w)."""
        return self.retrieval.prior

    def forward(self, z: Tensor) -> Tensor:
        """z (B, C, d, h, w) -> X' (B, C, d, h, w)."""
        retrieved = self.transfer(self.retrieval(z))
        parts = (z, retrieved, z) if self.fusion == "code" else (z, retrieved)
        return self.fuse(torch.cat(parts, dim=1))


def prior_from_config(cfg: Config) -> PriorFusion | None:
    """The prior block for `cfg` (shape from `cfg.bottleneck_size`), or None when `model.use_prior` is off."""
    if not cfg.model.use_prior:
        return None
    return PriorFusion(
        cfg.bottleneck_channels,
        cfg.bottleneck_size,
        num_heads=cfg.model.prior_heads,
        fusion=cfg.model.fusion,
    )
