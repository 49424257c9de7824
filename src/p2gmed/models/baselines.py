"""Stock MONAI baselines (SwinUNETR, UNETR) behind the same interface as P2GNet.

The paper compares against SwinUNETR without pre-training, SwinUNETR with its own (Tang et al. 2022)
pre-training and SwinUNETR initialised with our pre-trained encoder (Sec. 3.3, App. B.3.2, B.4); UNETR is a
further baseline. A baseline reads all M modalities at once as input channels, with the missing ones set to
zero (the usual missing-modality convention of mmFormer/RFNet-style baselines), and predicts
`out_channels` maps.

The stock network sits under the attribute `backbone`, as in P2GNet, so the state-dict keys of a SwinUNETR
baseline and of P2GNet's SwinUNETR coincide (`backbone.swinViT.*`, `backbone.encoder1.*`, ...) and export is
`model.backbone.state_dict()` for both.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.networks.nets import UNETR, SwinUNETR
from torch import nn

from p2gmed.config import Config
from p2gmed.errors import InputError
from p2gmed.models.network import build_model, swinunetr_kwargs

ARCHITECTURES = ("p2g", "swinunetr", "unetr")

#: UNETR keeps MONAI's standard ViT-B size (the published UNETR baseline); only channels and image size vary
UNETR_DEFAULTS = {"feature_size": 16, "hidden_size": 768, "mlp_dim": 3072, "num_heads": 12}


def unetr_kwargs(cfg: Config, out_channels: int) -> dict[str, Any]:
    """Constructor arguments of `monai.networks.nets.UNETR` (image size = the training ROI)."""
    return {
        "in_channels": len(cfg.data.modalities),
        "out_channels": int(out_channels),
        "img_size": tuple(cfg.data.roi_size),
        **UNETR_DEFAULTS,
    }


class MonaiBaseline(nn.Module):
    """A stock MONAI network that reads the stacked modalities (missing ones zeroed).

    Args:
        backbone: `monai.networks.nets.SwinUNETR` or `UNETR` with M input channels.
        architecture: "swinunetr" or "unetr" (recorded in checkpoints).
    """

    def __init__(self, backbone: nn.Module, architecture: str):
        super().__init__()
        self.backbone = backbone
        self.architecture = architecture

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, M, D, H, W) stacked modalities -> (B, out_channels, D, H, W)."""
        return self.backbone(x)

    def forward_subset(self, image: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
        """Prediction from a subset of modalities: the unavailable channels are zeroed, then one forward pass.

        Args:
            image: (B, M, D, H, W) normalised modalities (whatever the unavailable channels hold is ignored).
            available: (M,) or (B, M) bool.

        Returns:
            (B, out_channels, D, H, W).
        """
        return self.backbone(mask_missing(image, available))

    def forward_subsets(self, image: torch.Tensor, subsets: torch.Tensor) -> torch.Tensor:
        """One forward pass per subset (the stacked input mixes the modalities, so nothing is shared).

        Args:
            image: (B, M, D, H, W) normalised modalities.
            subsets: (K, M) bool.

        Returns:
            (B, K, out_channels, D, H, W).
        """
        rows = torch.as_tensor(subsets, dtype=torch.bool)
        return torch.stack([self.forward_subset(image, row) for row in rows], dim=1)


def mask_missing(image: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
    """Zero the channels of missing modalities: image (B, M, D, H, W), available (M,) or (B, M) bool -> same
    shape."""
    mask = available.to(device=image.device, dtype=image.dtype)
    if mask.ndim == 1:
        mask = mask.unsqueeze(0)
    return image * mask[(...,) + (None,) * (image.ndim - 2)]


def build_baseline(cfg: Config, architecture: str, out_channels: int) -> MonaiBaseline:
    """Stock MONAI SwinUNETR or UNETR for `cfg.data.modalities` inputs and `out_channels` outputs."""
    if architecture == "swinunetr":
        return MonaiBaseline(SwinUNETR(**swinunetr_kwargs(cfg, out_channels)), architecture)
    if architecture == "unetr":
        return MonaiBaseline(UNETR(**unetr_kwargs(cfg, out_channels)), architecture)
    raise ValueError(f"not a baseline architecture: {architecture!r}")


def build_architecture(cfg: Config, architecture: str, out_channels: int) -> nn.Module:
    """Any model p2gmed trains: "p2g" (P2GNet, models/network.py) or a stock MONAI baseline."""
    if architecture == "p2g":
        return build_model(cfg, out_channels)
    if architecture in ("swinunetr", "unetr"):
        return build_baseline(cfg, architecture, out_channels)
    raise InputError(f"unknown architecture '{architecture}'; known: {', '.join(ARCHITECTURES)}")
