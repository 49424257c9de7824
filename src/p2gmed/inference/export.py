"""`p2g export --format p2g`: an inference checkpoint to share: weights and what prediction needs, nothing else.

The file is an ordinary p2gmed checkpoint (it loads with `torch.load(weights_only=True)`, `p2g predict` and
`p2gmed.load` take it) holding the keys of `checkpoint.CHECKPOINT_KEYS` (weights, the resolved configuration with
its modalities, normalisation, ROI and inference defaults, task, architecture, versions), the label convention,
the training spacing, and a short model card. The optimizer, scheduler, AMP scaler and RNG states of a training
checkpoint are left out: they are only needed to resume training and make up most of its size (AdamW keeps two
moments per weight). The card is also written beside the file as `<out>.md`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from p2gmed.errors import InputError

FORMAT = "p2g-inference/1"


def _weights_digest(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def model_card(ckpt: dict[str, Any], source: Path, spacing: Any) -> dict[str, Any]:
    """What a user of the shared model should know: task, inputs, labels, data settings, training, versions."""
    cfg = ckpt["config"]
    data = cfg.get("data", {})
    best = ckpt.get("best") or None
    return {
        "task": ckpt["task"],
        "architecture": ckpt["architecture"],
        "modalities": list(ckpt["modalities"]),
        "labels": ckpt.get("labels"),
        "training_spacing_mm": list(spacing) if spacing else None,
        "roi_size": list(data.get("roi_size", [])),
        "normalisation": {k: data.get(k) for k in ("mri_norm", "ct_window", "pet_scale")},
        "training_data_layout": data.get("layout"),
        "steps": int(ckpt["step"]),
        "best_validation": {k: best.get(k) for k in ("name", "value", "step")} if best else None,
        "exported_from": str(source),
        "weights_sha256": _weights_digest(ckpt["model"]),
        "versions": dict(ckpt.get("versions") or {}),
    }


def card_markdown(card: dict[str, Any]) -> str:
    """The model card as a short Markdown page."""
    best = card["best_validation"]
    metric = f"{best['name']} = {best['value']:.4g} at step {best['step']}" if best else "not recorded"
    layout = card["training_data_layout"]
    layout = "data of a detected layout" if layout in (None, "auto") else f"{layout}-layout data"
    mm = card["training_spacing_mm"]
    spacing = " x ".join(f"{v:g}" for v in mm) + " mm" if mm else "unknown"
    lines = [
        f"# p2gmed model card: {card['task']} ({card['architecture']})",
        "",
        f"- Inputs and outputs: {', '.join(card['modalities'])}"
        + (f"; labels {card['labels']}" if card["labels"] else ""),
        f"- Training: {card['steps']} optimizer steps on {layout}; "
        f"best validation {metric}",
        f"- Data settings: spacing {spacing}, ROI {' x '.join(map(str, card['roi_size']))}, normalisation "
        + ", ".join(f"{k} {v}" for k, v in card["normalisation"].items()),
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in card["versions"].items()),
        f"- Exported from {card['exported_from']}; weights sha256 {card['weights_sha256'][:16]}...",
        "",
        "Use: `p2g predict --model FILE ...` or `p2gmed.load(FILE).predict({...})`.",
        "",
    ]
    return "\n".join(lines)


def export_inference(model_path: str | Path, out_path: str | Path) -> dict[str, Any]:
    """Write the inference checkpoint of `model_path` to `out_path` (atomically) and its card to `<out>.md`.

    Returns:
        {"card": the model card, "bytes": size of the written file, "source_bytes": size of the input}.

    Raises:
        InputError: the input is not a p2gmed checkpoint that prediction can run, or `out` would overwrite it.
    """
    from p2gmed.config import config_from_checkpoint
    from p2gmed.inference.models import LoadedModel, training_spacing
    from p2gmed.io import save_torch, write_text
    from p2gmed.models.weights import model_from_checkpoint
    from p2gmed.train.checkpoint import CHECKPOINT_KEYS

    model_path, out_path = Path(model_path), Path(out_path)
    if out_path.resolve() == model_path.resolve():
        raise InputError(f"--out {out_path} would overwrite the input checkpoint")
    model, ckpt = model_from_checkpoint(model_path)  # the weights must load strictly into their architecture
    LoadedModel.from_checkpoint_dict(model, ckpt, model_path)  # and prediction must be able to run them
    spacing = training_spacing(ckpt, config_from_checkpoint(ckpt["config"]))
    card = model_card(ckpt, model_path, spacing)
    exported = {key: ckpt[key] for key in CHECKPOINT_KEYS}
    exported.update(
        labels=ckpt.get("labels"),
        spacing=list(spacing) if spacing else None,
        format=FORMAT,
        model_card=card,
    )
    save_torch(exported, out_path)
    write_text(out_path.with_name(out_path.name + ".md"), card_markdown(card))
    return {"card": card, "bytes": out_path.stat().st_size, "source_bytes": model_path.stat().st_size}
