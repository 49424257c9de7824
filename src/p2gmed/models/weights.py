"""Weight hand-off that never fails silently: initialisation for tuning, checkpoint -> model, export to MONAI.

Every load compares the source tensors with the target model and reports, key by key, what `matched`, what
the model expects but the source lacks (`missing`), what the source has that the model does not (`unexpected`)
and what has another shape (`shape_mismatch`). Any of the last three refuses the load with an `InputError`
listing the keys, unless the user opts in (`allow_mismatch`, CLI `--allow-mismatch`). The one expected
mismatch is the output layer (`backbone.out.*`) when the number of output channels changes (pre-training M
modalities -> K classes): it keeps its fresh initialisation and the report says so.

Initialisations (cfg.tune.init):
* ``full``: every weight of a p2gmed checkpoint (P2GNet: encoder, prior O, fusion, heads, decoder).
* ``encoder``: everything but the decoder -- the Swin encoder (``ENCODER_PARTS``) into stock SwinUNETR, and into
  P2GNet also the prior O with its attention and fusion (``PRIOR_PARTS``), whose shapes do not depend on the
  number of modalities: App. B.4 re-initialises only the decoder for the new modality set.
* ``swinvit``: the Swin encoder of Tang et al. 2022 (`swinvit_weights.init_from_swinvit`).
* ``scratch``: nothing loaded.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from monai.networks.nets import SwinUNETR
from torch import nn

from p2gmed.config import config_from_checkpoint
from p2gmed.errors import InputError
from p2gmed.io import save_torch, write_text
from p2gmed.models.baselines import ARCHITECTURES, build_architecture
from p2gmed.models.network import swinunetr_kwargs
from p2gmed.train.checkpoint import check_monai_version, load_checkpoint

log = logging.getLogger(__name__)

#: submodules of MONAI SwinUNETR that form the encoder E: the Swin transformer, what `P2GNet.encode` runs and
#: Tang et al. 2022 release (SwinUNETR's conv blocks `encoder1..4/10` belong to the decoder D here)
ENCODER_PARTS = ("swinViT.",)
#: P2GNet's prior O, its attention retrieval and the fusion conv: carried with the encoder when the target has them
PRIOR_PARTS = ("prior.",)
#: the output layer, re-initialised when the number of output channels changes
OUT_LAYER = "backbone.out."
#: learned only in tuning, zero-initialised (= the mean over a subset; models/subset_fusion.py): a checkpoint
#: trained without them (any pre-training, or `model.subset_skips: mean`) leaves them at that start
FRESH_PARTS = ("subset_fusion.",)
_LIST_LIMIT = 20


@dataclass
class LoadReport:
    """Outcome of comparing source weights with a model, key by key (model key names)."""

    source: str
    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatch: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    """(key, source shape, model shape)."""
    reinitialised: list[str] = field(default_factory=list)
    """Expected mismatches (output layer) left at their fresh initialisation."""
    adapted: list[str] = field(default_factory=list)
    """Keys converted by a documented rule (patch embedding channels)."""
    ignored: list[str] = field(default_factory=list)
    """Source keys deliberately not used (other parts of the source model)."""
    notes: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """True when nothing is missing, unexpected or of another shape."""
        return not (self.missing or self.unexpected or self.shape_mismatch)

    def summary(self) -> str:
        """One line of counts."""
        return (
            f"weights from {self.source}: {len(self.matched)} matched, {len(self.missing)} missing, "
            f"{len(self.unexpected)} unexpected, {len(self.shape_mismatch)} with another shape, "
            f"{len(self.reinitialised)} re-initialised, {len(self.adapted)} adapted, "
            f"{len(self.ignored)} ignored"
        )

    def format(self) -> str:
        """The summary plus the keys of every non-empty category but `matched` and `ignored`."""
        lines = [self.summary()]
        for name in ("missing", "unexpected", "reinitialised", "adapted"):
            keys = getattr(self, name)
            if keys:
                lines.append(f"  {name}: {_short_list(keys)}")
        if self.shape_mismatch:
            items = [f"{k} (file {tuple(a)}, model {tuple(b)})" for k, a, b in self.shape_mismatch]
            lines.append(f"  another shape: {_short_list(items)}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (stored in the run folder)."""
        return {
            "source": self.source,
            "matched": self.matched,
            "missing": self.missing,
            "unexpected": self.unexpected,
            "shape_mismatch": [[k, list(a), list(b)] for k, a, b in self.shape_mismatch],
            "reinitialised": self.reinitialised,
            "adapted": self.adapted,
            "ignored": self.ignored,
            "notes": self.notes,
        }


def _short_list(keys: list[str]) -> str:
    shown = ", ".join(keys[:_LIST_LIMIT])
    return shown + (f", ... ({len(keys) - _LIST_LIMIT} more)" if len(keys) > _LIST_LIMIT else "")


def load_weights(
    model: nn.Module,
    source: Mapping[str, torch.Tensor],
    *,
    source_name: str,
    targets: Iterable[str] | None = None,
    allow_mismatch: bool = False,
    report: LoadReport | None = None,
) -> LoadReport:
    """Copy `source` tensors (already in the model's key names) into `model`, with a key report.

    Args:
        model: the model to fill (modified in place; untouched when the load is refused).
        source: model key -> tensor.
        source_name: file name for the messages.
        targets: key prefixes of the model the source is meant to fill (default: all); model keys outside them
            are neither loaded nor counted as missing.
        allow_mismatch: load what matches even if keys are missing, unexpected or of another shape.
        report: a report to extend (e.g. with keys a caller adapted or ignored).

    Returns:
        The report (also logged).

    Raises:
        InputError: listing the offending keys, when the source does not match and `allow_mismatch` is False.
    """
    report = report or LoadReport(source_name)
    own = model.state_dict()
    prefixes = tuple(targets) if targets is not None else ("",)
    wanted = [k for k in own if k.startswith(prefixes)]
    usable: dict[str, torch.Tensor] = {}
    for key, value in source.items():
        if key not in own:
            report.unexpected.append(key)
        elif tuple(value.shape) != tuple(own[key].shape):
            if key.startswith(OUT_LAYER):
                report.reinitialised.append(key)
            else:
                report.shape_mismatch.append((key, tuple(value.shape), tuple(own[key].shape)))
        else:
            usable[key] = value
            report.matched.append(key)
    fresh = [k for k in wanted if k.startswith(FRESH_PARTS) and k not in source]
    if fresh:
        report.reinitialised += fresh
        report.notes.append("the learned subset weighting starts as the mean (the source has none)")
    report.missing += [k for k in wanted if k not in source and k not in report.reinitialised]
    if any(k in source for k in report.reinitialised):
        report.notes.append(
            "the output layer has another number of channels: it keeps its fresh initialisation"
        )
    if not report.clean and not allow_mismatch:
        raise InputError(
            f"the weights in {source_name} do not match the model "
            "(use --allow-mismatch to load what matches):\n" + report.format()
        )
    with torch.no_grad():
        for key, value in usable.items():
            own[key].copy_(value.to(dtype=own[key].dtype))
    log.info("%s", report.format())
    return report


# --------------------------------------------------------------------------------------------------
# initialisation for tuning


def init_from_checkpoint(
    model: nn.Module,
    path: str | Path,
    *,
    encoder_only: bool = False,
    modalities: tuple[str, ...] | None = None,
    task: str | None = None,
    allow_mismatch: bool = False,
) -> LoadReport:
    """Initialise `model` from a p2gmed checkpoint: all its weights, or the encoder only.

    Args:
        model: P2GNet or a MonaiBaseline.
        path: p2gmed checkpoint (e.g. `RUN/checkpoints/best.pt` of a pre-training).
        encoder_only: load everything but the decoder: `backbone.<ENCODER_PARTS>` (option (b) of the paper:
            stock SwinUNETR with our pre-trained encoder) and, when `model` has them, `PRIOR_PARTS` (O, its
            attention and the fusion; App. B.4); otherwise every key must match (option (a)).
        modalities: the model's modality order; the checkpoint must have the same (channels are positional).
        task: the task being tuned; when the checkpoint's outputs mean something else (images from a
            pre-training or synthesis vs. class logits), the output layer is re-initialised even if its shape
            fits (e.g. 4 BraTS modalities -> 4 classes).
        allow_mismatch: load what matches anyway.

    Raises:
        InputError: not a p2gmed checkpoint, other modalities, or keys that do not match.
    """
    ckpt = load_checkpoint(path)
    check_monai_version(ckpt, path=path, allow=allow_mismatch)
    report = LoadReport(str(path))
    source_mods = tuple(ckpt.get("modalities") or ())
    state = ckpt["model"]
    if modalities is not None and source_mods and source_mods != tuple(modalities):
        msg = f"{path} was trained on modalities {list(source_mods)} but this model reads {list(modalities)}"
        if encoder_only and PATCH_EMBEDDING in state and getattr(state[PATCH_EMBEDDING], "ndim", 0) == 5:
            # the encoder reads one modality repeated over the channels: its channel count can change exactly
            weight = state[PATCH_EMBEDDING]
            state = {**state, PATCH_EMBEDDING: adapt_patch_embedding(weight, len(modalities))}
            report.adapted.append(
                f"{PATCH_EMBEDDING} ({weight.shape[1]} -> {len(modalities)} channels: summed, repeated, "
                f"/ {len(modalities)}; {msg})"
            )
        elif not allow_mismatch:
            raise InputError(msg + " (use --encoder-only to transfer the encoder, or --allow-mismatch)")
        else:
            report.notes.append(msg)
    if task is not None and (task == "segmentation") != (ckpt["task"] == "segmentation"):
        fresh = [k for k in state if k.startswith(OUT_LAYER)]
        state = {k: v for k, v in state.items() if k not in fresh}
        report.reinitialised += fresh
        report.notes.append(
            f"the output layer of a {ckpt['task']} model does not serve {task}: re-initialised"
        )
    if encoder_only:
        targets = tuple(f"backbone.{p}" for p in ENCODER_PARTS)
        own = model.state_dict()
        targets += tuple(p for p in PRIOR_PARTS if any(k.startswith(p) for k in own))
        source = {k: v for k, v in state.items() if k.startswith(targets)}
        report.ignored = [k for k in state if not k.startswith(targets)]
        if not source:
            raise InputError(f"{path} holds no SwinUNETR encoder weights (no keys under backbone.swinViT.)")
        return load_weights(
            model,
            source,
            source_name=str(path),
            targets=targets,
            allow_mismatch=allow_mismatch,
            report=report,
        )
    return load_weights(model, state, source_name=str(path), allow_mismatch=allow_mismatch, report=report)


PATCH_EMBEDDING = "backbone.swinViT.patch_embed.proj.weight"


def adapt_patch_embedding(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """(F, C, p, p, p) -> (F, in_channels, p, p, p): summed over C, repeated, divided by `in_channels`.

    p2gmed always feeds ONE modality repeated over the input channels, so the embedding only ever sees the
    channel sum of its weight: the adapted weight embeds a repeated modality exactly as the original did.
    """
    return weight.sum(1, keepdim=True).repeat(1, in_channels, *([1] * (weight.ndim - 2))) / in_channels


# --------------------------------------------------------------------------------------------------
# checkpoint -> model, export


def checkpoint_config(ckpt: dict, path: str | Path):
    """The Config stored in a checkpoint; an InputError naming the checkpoint when it does not parse."""
    if not isinstance(ckpt.get("config"), dict):
        raise InputError(f"checkpoint {path} holds no configuration mapping")
    try:
        return config_from_checkpoint(ckpt["config"])
    except InputError as exc:
        raise InputError(f"checkpoint {path} holds a configuration this p2gmed cannot read: {exc}") from None


def model_from_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the trained model of a p2gmed checkpoint, in eval mode on `device`.

    Returns:
        (model, ckpt): P2GNet, or MonaiBaseline for "swinunetr" / "unetr"; the checkpoint dictionary.

    Raises:
        InputError: the file is not a p2gmed checkpoint, names an unknown architecture, or its weights do not
            load strictly.
    """
    ckpt = load_checkpoint(path)
    check_monai_version(ckpt, path=path)
    architecture = ckpt.get("architecture", "p2g")
    if architecture not in ARCHITECTURES:
        raise InputError(
            f"{path} holds an unknown architecture '{architecture}'; known: {', '.join(ARCHITECTURES)}"
        )
    cfg = checkpoint_config(ckpt, path)
    out_channels = ckpt.get("out_channels") or len(cfg.data.modalities)
    model = build_architecture(cfg, architecture, int(out_channels))
    own = model.state_dict()
    wrong = [f"{k} (file {tuple(v.shape)}, model {tuple(own[k].shape)})" for k, v in ckpt["model"].items()
             if k in own and hasattr(v, "shape") and tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        raise InputError(f"{path} holds tensors of other shapes than a {architecture} model of its own configuration: "
                         f"{_short_list(wrong)}; the file was altered or written by another program")
    missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    if missing or unexpected:
        raise InputError(
            f"{path} does not match a {architecture} model of its own configuration: "
            f"missing {_short_list(list(missing))}; unexpected {_short_list(list(unexpected))}"
        )
    return model.to(device).eval(), ckpt


def export_monai_swinunetr(model_path: str | Path, out_path: str | Path) -> dict[str, Any]:
    """Write the SwinUNETR weights of a p2gmed checkpoint for stock `monai.networks.nets.SwinUNETR`.

    The file holds ``{"state_dict": ..., "monai_kwargs": ..., "p2gmed": {...}}``; a sidecar ``<out>.json``
    repeats the constructor arguments. Load it with::

        blob = torch.load(path, weights_only=True)
        net = monai.networks.nets.SwinUNETR(**blob["monai_kwargs"])
        net.load_state_dict(blob["state_dict"], strict=True)

    For a P2GNet checkpoint the encoder computes exactly the features it computed inside P2GNet; the stock
    SwinUNETR forward has no prior O, so its decoder output differs from P2GNet's: use it as an
    initialisation.

    Returns:
        the `monai_kwargs`.
    """
    model, ckpt = model_from_checkpoint(model_path)
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, SwinUNETR):
        raise InputError(
            f"{model_path} holds a '{ckpt.get('architecture')}' model; --format monai-swinunetr needs p2g or "
            "swinunetr"
        )
    cfg = checkpoint_config(ckpt, model_path)
    kwargs = swinunetr_kwargs(cfg, backbone.out.conv.conv.out_channels)
    state = {k: v.detach().cpu().clone() for k, v in backbone.state_dict().items()}
    SwinUNETR(**kwargs).load_state_dict(state, strict=True)  # the promise of this file, checked before writing
    meta = {
        "source": str(model_path),
        "task": ckpt.get("task"),
        "architecture": ckpt.get("architecture"),
        "modalities": list(ckpt.get("modalities") or cfg.data.modalities),
        "labels": ckpt.get("labels"),
        "versions": ckpt.get("versions"),
    }
    save_torch({"state_dict": state, "monai_kwargs": kwargs, "p2gmed": meta}, out_path)
    sidecar = json.dumps({"monai_kwargs": kwargs, "p2gmed": meta}, indent=2) + "\n"
    write_text(Path(str(out_path) + ".json"), sidecar)
    return kwargs
