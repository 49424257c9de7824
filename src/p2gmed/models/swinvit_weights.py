"""The Swin encoder of Tang et al. 2022 (`model_swinvit.pt`, a file the user provides) as an initialisation.

The file holds keys ``module.*``, ``swin_vit.*`` or ``swinViT.*``; they map to ``backbone.swinViT.*`` of P2GNet or
of a stock SwinUNETR baseline, and the pre-training heads are ignored. Its patch embedding reads 1 channel; for M
input channels it is summed over its channels, repeated M times and divided by M, so that one modality repeated
over all M channels (how P2GNet reads a modality) gives exactly the original embedding. The load itself goes
through `weights.load_weights`, so every key is reported and a mismatch is refused unless allowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from p2gmed.errors import InputError
from p2gmed.models.weights import PATCH_EMBEDDING, LoadReport, adapt_patch_embedding, load_weights

#: keys of Tang et al. pre-training heads (rotation, contrastive, reconstruction) that an encoder load ignores
SWINVIT_HEADS = ("rotation_pre.", "rotation_head.", "contrastive_pre.", "contrastive_head.", "conv.", "norm.")

def swinvit_state(raw: Mapping[str, Any], in_channels: int, report: LoadReport) -> dict[str, torch.Tensor]:
    """Tang et al. 2022 pre-trained weights -> `backbone.swinViT.*` keys of a model with `in_channels` inputs.

    Accepts `{"state_dict": ...}`, `{"model": ...}` or a bare state dict; strips `module.`, maps `swin_vit.` /
    `swinViT.` and un-prefixed Swin keys to `backbone.swinViT.`; pre-training heads go to `report.ignored`.
    The patch embedding (F, C, p, p, p) becomes (F, in_channels, p, p, p): summed over C, repeated, divided by
    `in_channels` (see the module docstring).
    """
    state = raw.get("state_dict", raw.get("model", raw)) if isinstance(raw, Mapping) else raw
    if not isinstance(state, Mapping) or not all(torch.is_tensor(v) for v in state.values()):
        raise InputError(f"{report.source} does not hold a state dict of tensors")
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = key[len("module.") :] if key.startswith("module.") else key
        for prefix in ("swin_vit.", "swinViT."):
            if name.startswith(prefix):
                name = name[len(prefix) :]
                break
        else:
            if name.startswith(SWINVIT_HEADS):
                report.ignored.append(key)
                continue
        out[f"backbone.swinViT.{name}"] = value
    embed = PATCH_EMBEDDING
    if embed in out and out[embed].shape[1] != in_channels:
        weight = out[embed]
        out[embed] = adapt_patch_embedding(weight, in_channels)
        report.adapted.append(
            f"{embed} ({weight.shape[1]} -> {in_channels} channels: summed, repeated, / {in_channels})"
        )
    return out


def init_from_swinvit(model: nn.Module, path: str | Path, *, allow_mismatch: bool = False) -> LoadReport:
    """Load the Swin encoder of Tang et al. 2022 (`model_swinvit.pt`, a file the user provides) into `model`.

    Args:
        model: P2GNet or a SwinUNETR MonaiBaseline (anything with `backbone.swinViT`).
        path: the weight file.
        allow_mismatch: load what matches anyway.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--init-swinvit: {path} does not exist")
    if not any(k.startswith("backbone.swinViT.") for k in model.state_dict()):
        raise InputError("--init-swinvit needs a SwinUNETR-based model (architecture p2g or swinunetr)")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's input problem
        raise InputError(f"{path} is not a readable PyTorch weight file: {exc}".splitlines()[0]) from None
    in_channels = model.state_dict()["backbone.swinViT.patch_embed.proj.weight"].shape[1]
    report = LoadReport(str(path))
    source = swinvit_state(raw, in_channels, report)
    report.notes.append(
        "Tang et al. weights were trained with MONAI < 1.5, whose PatchMerging differs: the encoder computes "
        "other "
        "features than at pre-training until fine-tuning adapts it"
    )
    return load_weights(
        model,
        source,
        source_name=str(path),
        targets=("backbone.swinViT.",),
        allow_mismatch=allow_mismatch,
        report=report,
    )
