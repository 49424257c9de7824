"""Self-supervised heads on the bottleneck: rotation head F (Eq. 4-5) and contrastive projection (Eq. 2).

Tang et al. (2022) and the authors' release read the rotation head from token 0 and the projection from
token 1 of the flattened 3x3x3 bottleneck, which ties the heads to one ROI. Here both heads read the global
average of the bottleneck over its d*h*w voxels, so any ROI works (docs/method.md, deviation 1).
"""

from __future__ import annotations

from torch import Tensor, nn

from p2gmed.models.rotation import NUM_ROTATIONS


def _pool(features: Tensor) -> Tensor:
    if features.ndim != 5:
        raise ValueError(f"expected bottleneck features (B, C, d, h, w), got shape {tuple(features.shape)}")
    return features.mean(dim=(2, 3, 4))


class RotationHead(nn.Module):
    """F: predicts the input's rotation class from the pooled bottleneck (a linear layer, as Tang et al.).

    Args:
        channels: C, channels of the bottleneck (16F).

    Shapes:
        features: (B, C, d, h, w) -> logits (B, 4) (softmax of them is F(z) of Eq. 5).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.linear = nn.Linear(channels, NUM_ROTATIONS)

    def forward(self, features: Tensor) -> Tensor:
        return self.linear(_pool(features))


class ProjectionHead(nn.Module):
    """Contrastive coding: "attaching a linear layer to z_h, z_h^+ and z_h^-" (Sec. 3.2).

    Args:
        channels: C (16F).
        projection_dim: P, the embedding size (512 in Tang et al. and the release).

    Shapes:
        features: (B, C, d, h, w) -> embedding (B, P) (not normalised; the loss normalises).
    """

    def __init__(self, channels: int, projection_dim: int = 512) -> None:
        super().__init__()
        self.linear = nn.Linear(channels, projection_dim)

    def forward(self, features: Tensor) -> Tensor:
        return self.linear(_pool(features))
