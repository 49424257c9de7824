"""P2GNet: a stock MONAI SwinUNETR whose bottleneck is personalised by the prior O (the paper's Fig. 1).

    x (one modality repeated over the M channels)
      -> encoder E = backbone.swinViT          -> z (B, 16F, d, h, w), skips [x, hidden_0..3]
      -> fuse: X' = conv(z ⊕ Attn(z, O, O))    -> X' (B, 16F, d, h, w)      (identity without the prior)
      -> decoder D = backbone.encoder1..4/10, decoder5..1, out, with hidden_states[4] replaced by X'
      -> all M modalities (B, out_channels, D, H, W)

The backbone is an unmodified `monai.networks.nets.SwinUNETR`, so `backbone.state_dict()` is a checkpoint for
stock MONAI (the prior, fusion and heads live beside it, not inside).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from monai.networks.nets import SwinUNETR
from torch import Tensor, nn

from p2gmed.config import Config
from p2gmed.errors import InputError
from p2gmed.models.heads import ProjectionHead, RotationHead
from p2gmed.models.prior import PriorFusion, prior_from_config
from p2gmed.models.subset_fusion import SubsetFusion


class P2GNet(nn.Module):
    """SwinUNETR encoder/decoder + learnable prior O + rotation and contrastive heads.

    Args:
        backbone: a MONAI SwinUNETR with `in_channels` = M modality types.
        prior: the prior block (`PriorFusion`), or None for the no-prior ablation (X' = z).
        rotation_head: F of Eq. 4-5.
        projection_head: the contrastive projection of Eq. 2.
        head_placement: "paper": heads read the encoder bottleneck z (Algorithm 1); "code": they read the
            fused X' (authors' release).
        subset_skips, input_skip: how a subset's encodings are combined before one decode
            (`model.subset_skips`, `model.input_skip`; models/subset_fusion.py); default the means.
    """

    def __init__(
        self,
        backbone: SwinUNETR,
        prior: PriorFusion | None,
        rotation_head: RotationHead,
        projection_head: ProjectionHead,
        *,
        head_placement: str = "paper",
        subset_skips: str = "mean",
        input_skip: str = "mean",
    ) -> None:
        super().__init__()
        if head_placement not in ("paper", "code"):
            raise ValueError(f"head_placement must be 'paper' or 'code', got {head_placement!r}")
        self.backbone = backbone
        self.prior = prior
        self.rotation_head = rotation_head
        self.projection_head = projection_head
        self.head_placement = head_placement
        self.in_channels = backbone.swinViT.patch_embed.proj.in_channels
        f = backbone.swinViT.embed_dim  # the skip stages have F, 2F, 4F, 8F channels
        self.subset_fusion = SubsetFusion([f, 2 * f, 4 * f, 8 * f], subset_skips, input_skip)

    # -- the three stages --------------------------------------------------------------------------------
    def encode(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Encoder E.

        Args:
            x: (B, M, D, H, W), D/H/W divisible by 32.

        Returns:
            z: (B, 16F, D/32, H/32, W/32), the layer-normalised last stage (SwinUNETR's hidden_states_out[4]);
            skips: [x, hidden_0 (B, F, D/2, ...), hidden_1 (B, 2F, D/4, ...), hidden_2 (B, 4F, D/8, ...),
            hidden_3 (B, 8F, D/16, ...)], the intermediate features x_h^i the decoder is conditioned on.

        Raises:
            ValueError: wrong channel count or a spatial size not divisible by 32.
        """
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected (B, {self.in_channels}, D, H, W), got shape {tuple(x.shape)}")
        if any(s % 32 for s in x.shape[2:]):
            raise ValueError(f"spatial size must be divisible by 32, got {tuple(x.shape[2:])}")
        hidden = self.backbone.swinViT(x, self.backbone.normalize)
        return hidden[4], [x, *hidden[:4]]

    def fuse(self, z: Tensor) -> Tensor:
        """X' = conv(z ⊕ Attn(query z, key O, value O)); z (B, 16F, d, h, w) -> X' (B, 16F, d, h, w).

        Without the prior this is the identity (X' = z).
        """
        return z if self.prior is None else self.prior(z)

    def decode(self, fused: Tensor, skips: list[Tensor]) -> Tensor:
        """Decoder D: SwinUNETR's decoder with the bottleneck replaced by X'.

        Args:
            fused: X' (B, 16F, d, h, w).
            skips: as returned by `encode` (raw, non-personalised encoder features, as the release).

        Returns:
            (B, out_channels, D, H, W).
        """
        b = self.backbone
        x, h0, h1, h2, h3 = skips
        enc0 = b.encoder1(x)
        enc1 = b.encoder2(h0)
        enc2 = b.encoder3(h1)
        enc3 = b.encoder4(h2)
        dec4 = b.encoder10(fused)
        dec3 = b.decoder5(dec4, h3)
        dec2 = b.decoder4(dec3, enc3)
        dec1 = b.decoder3(dec2, enc2)
        dec0 = b.decoder2(dec1, enc1)
        return b.out(b.decoder1(dec0, enc0))

    # -- heads -------------------------------------------------------------------------------------------
    def heads(self, z: Tensor, fused: Tensor) -> tuple[Tensor, Tensor]:
        """Rotation logits (B, 4) and contrastive projection (B, P) from z or X' (per `head_placement`)."""
        source = z if self.head_placement == "paper" else fused
        return self.rotation_head(source), self.projection_head(source)

    def rotation_logits(self, z: Tensor, fused: Tensor) -> Tensor:
        """F(z) of Eq. 5 as logits (B, 4); reads z or X' per `head_placement`."""
        return self.rotation_head(z if self.head_placement == "paper" else fused)

    def embed_view(self, x: Tensor) -> Tensor:
        """Contrastive embedding of an augmented view: x (B, M, D, H, W) -> (B, P).

        Only the encoder (and the fusion when the heads read X') runs; the decoder does not.
        """
        z, _ = self.encode(x)
        return self.projection_head(z if self.head_placement == "paper" else self.fuse(z))

    # -- inference ---------------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        """D(fuse(E(x))): x (B, M, D, H, W), one modality repeated over M channels -> (B, out, D, H, W)."""
        z, skips = self.encode(x)
        return self.decode(self.fuse(z), skips)

    def forward_subset(self, image: Tensor, available: Tensor) -> Tensor:
        """Predict every output from a subset of the modalities.

        Each available modality m is encoded alone (repeated over the M channels); the fused X'_m are
        averaged over the subset (the invariance constraint makes them estimates of the same X_h), the skip
        features are combined by `subset_fusion` (the mean by default), and the result is decoded once.

        Args:
            image: (B, M, D, H, W); channels of unavailable modalities are ignored.
            available: (M,) bool, at least one True.

        Returns:
            (B, out_channels, D, H, W).

        Raises:
            ValueError: wrong shapes or an empty subset.
        """
        available = torch.as_tensor(available, dtype=torch.bool).reshape(-1)
        if available.numel() != self.in_channels:
            raise ValueError(
                f"expected image (B, {self.in_channels}, D, H, W) and available ({self.in_channels},), "
                f"got {tuple(image.shape)} and {tuple(available.shape)}"
            )
        if not available.any():
            raise ValueError("forward_subset needs at least one available modality")
        return self.forward_subsets(image, available[None])[:, 0]

    def forward_subsets(self, image: Tensor, subsets: Tensor) -> Tensor:
        """Predict every output from each of K subsets of the modalities, encoding every modality once.

        The encodings of a modality do not depend on the subset it is part of, so each modality that any subset
        uses is encoded (and fused with the prior) once; then, per subset, X' is averaged and the skips combined
        over that subset exactly as `forward_subset` does, and decoded.

        Args:
            image: (B, M, D, H, W); channels no subset uses are ignored.
            subsets: (K, M) bool, at least one True per row.

        Returns:
            (B, K, out_channels, D, H, W); [:, k] equals `forward_subset(image, subsets[k])`.

        Raises:
            ValueError: wrong shapes or an empty subset.
        """
        subsets = torch.as_tensor(subsets, dtype=torch.bool)
        if image.ndim != 5 or image.shape[1] != self.in_channels or subsets.ndim != 2 \
                or subsets.shape[1] != self.in_channels:
            raise ValueError(
                f"expected image (B, {self.in_channels}, D, H, W) and subsets (K, {self.in_channels}), "
                f"got {tuple(image.shape)} and {tuple(subsets.shape)}"
            )
        if not subsets.any(1).all():
            raise ValueError("forward_subsets needs at least one available modality in every subset")
        fused: dict[int, Tensor] = {}
        stages: list[list[Tensor | None]] = [[None] * self.in_channels for _ in range(4)]
        for m in subsets.any(0).nonzero().flatten().tolist():
            x = image[:, m : m + 1].expand(-1, self.in_channels, -1, -1, -1)
            z, skips = self.encode(x)
            fused[m] = self.fuse(z)
            for stage, feature in zip(stages, skips[1:], strict=True):
                stage[m] = feature
        stacks = [stack_modalities(s) for s in stages]  # modalities outside a subset are masked out below
        outputs = []
        for row in subsets:
            indices = row.nonzero().flatten().tolist()
            total = fused[indices[0]]
            for m in indices[1:]:
                total = total + fused[m]
            mask = row.to(image.device).expand(image.shape[0], -1)
            outputs.append(self.decode(total / len(indices), self.subset_fusion(image, mask, stacks)))
        return torch.stack(outputs, dim=1)


def stack_modalities(features: list[Tensor | None]) -> Tensor:
    """Per-modality features (None where a modality was not encoded) -> (B, M, C, *spatial), zeros for None."""
    present = next(f for f in features if f is not None)
    return torch.stack([present.new_zeros(present.shape) if f is None else f for f in features], dim=1)


def swinunetr_kwargs(cfg: Config, out_channels: int) -> dict[str, Any]:
    """Constructor arguments of `monai.networks.nets.SwinUNETR` for this configuration.

    The same arguments build P2GNet's backbone, the SwinUNETR baseline and the exported model, so the weights
    of any of them load with `strict=True` into the others (up to the `out` layer when `out_channels` differ).
    """
    return {
        "in_channels": len(cfg.data.modalities),
        "out_channels": int(out_channels),
        "feature_size": cfg.model.feature_size,
        "depths": list(cfg.model.depths),
        "num_heads": list(cfg.model.num_heads),
        "window_size": cfg.model.window_size,
        "dropout_path_rate": cfg.model.drop_path_rate,
        "use_checkpoint": cfg.model.activation_checkpointing,
    }


def build_model(cfg: Config, out_channels: int) -> P2GNet:
    """The P2GNet described by `cfg.model` for `cfg.data.modalities` inputs and `out_channels` outputs.

    Args:
        cfg: the run's configuration (model section, modalities, ROI for the prior's shape).
        out_channels: decoder outputs (M modalities for synthesis/pre-training, K classes for segmentation).

    Raises:
        InputError: the ROI gives a one-voxel bottleneck (SwinUNETR's instance norm cannot train on it).
    """
    if math.prod(cfg.bottleneck_size) < 2:
        raise InputError(
            f"data.roi_size {tuple(cfg.data.roi_size)} gives a 1-voxel bottleneck; SwinUNETR's instance norm "
            "needs more: make at least one axis 64 or larger"
        )
    channels = cfg.bottleneck_channels
    return P2GNet(
        SwinUNETR(**swinunetr_kwargs(cfg, out_channels)),
        prior_from_config(cfg),
        RotationHead(channels),
        ProjectionHead(channels, cfg.model.projection_dim),
        head_placement=cfg.model.head_placement,
        subset_skips=cfg.model.subset_skips,
        input_skip=cfg.model.input_skip,
    )
