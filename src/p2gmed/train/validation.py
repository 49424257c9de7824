"""Validation of tuned models on held-out subjects, with sliding-window inference over whole volumes.

Synthesis: mean PSNR (unit convention) over (single source -> other available target) pairs. Segmentation:
mean region Dice (BraTS WT/TC/ET or AutoPET lesion) from all modalities and from each one alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from p2gmed.config import Config


def _validation_subsets(available: Tensor) -> list[Tensor]:
    """The subsets a held-out subject is validated from: all its modalities, then each one alone."""
    present = available.nonzero().flatten().tolist()
    singles = [torch.nn.functional.one_hot(torch.tensor(i), available.numel()).bool() for i in present]
    return ([available.clone()] if len(present) > 1 else []) + singles


def _predictor(model: nn.Module, subset: Tensor) -> Callable[[Tensor], Tensor]:
    return lambda x: model.forward_subset(x, subset.to(x.device))


def _slide(model: nn.Module, image: Tensor, subset: Tensor, cfg: Config) -> Tensor:
    """Whole-volume prediction from `subset`: image (1, M, D, H, W) -> (1, out, D, H, W) on the CPU."""
    from p2gmed.inference.sliding import sliding_predict

    inf = cfg.inference
    return sliding_predict(
        _predictor(model, subset),
        image,
        cfg.data.roi_size,
        overlap=inf.overlap,
        sw_batch_size=inf.sw_batch_size,
        mode=inf.mode,
        device=next(model.parameters()).device,
        stitch="cpu",
    )


def synthesis_validation(val_loaded: Any, cfg: Config) -> Callable[[nn.Module], dict[str, float]]:
    """model -> {"psnr": mean PSNR (dB, unit convention) over (single source, other available target) pairs}.

    Sources and targets are restricted to `tune.sources` / `tune.targets` when those are set.

    Both volumes are compared inside the subject's foreground (outside set to 0), in normalised intensities,
    after the unit convention's percentile scaling (evaluation/synthesis.py).
    """
    from p2gmed.evaluation.synthesis import psnr, unit_prepare

    order = tuple(cfg.data.modalities)
    wanted_sources = [i for i, m in enumerate(order) if not cfg.tune.sources or m in cfg.tune.sources]
    wanted_targets = [i for i, m in enumerate(order) if not cfg.tune.targets or m in cfg.tune.targets]

    def validate(model: nn.Module) -> dict[str, float]:
        values = []
        for index in range(len(val_loaded)):
            item = val_loaded[index]
            image, fg = item.image[None].float(), item.foreground[0].numpy()
            present = item.available.nonzero().flatten().tolist()
            sources = [m for m in present if m in wanted_sources]
            for source in sources if len(present) > 1 else []:
                subset = torch.zeros_like(item.available, dtype=torch.bool)
                subset[source] = True
                prediction = _slide(model, image, subset, cfg)[0].float().numpy()
                for target in present:
                    if target != source and target in wanted_targets:
                        pred, ref = unit_prepare(prediction[target] * fg, image[0, target].numpy() * fg)
                        values.append(min(psnr(pred, ref, 1.0), 100.0))  # identical volumes give inf
        return {"psnr": sum(values) / len(values) if values else float("nan")}

    return validate


def dice_score(pred: Tensor, ref: Tensor) -> float:
    """Dice of two boolean masks; 1.0 when both are empty (BraTS convention)."""
    total = int(pred.sum()) + int(ref.sum())
    return 1.0 if total == 0 else 2.0 * int((pred & ref).sum()) / total


def segmentation_validation(
    val_loaded: Any, cfg: Config, labels: str
) -> Callable[[nn.Module], dict[str, float]]:
    """model -> {"dice": mean over regions (BraTS WT/TC/ET, AutoPET lesion) and subsets, "dice_<region>"}.

    Each held-out subject is segmented from all its modalities and from each one alone.
    """
    from p2gmed.losses.segmentation import classes_to_labels, region_masks

    def validate(model: nn.Module) -> dict[str, float]:
        scores: dict[str, list[float]] = {}
        for index in range(len(val_loaded)):
            item = val_loaded[index]
            if item.label is None:
                continue
            reference = region_masks(item.label[0], labels)
            for subset in _validation_subsets(item.available):
                logits = _slide(model, item.image[None].float(), subset, cfg)
                predicted = region_masks(classes_to_labels(logits[0].argmax(0), labels), labels)
                for name, mask in predicted.items():
                    scores.setdefault(name, []).append(dice_score(mask, reference[name]))
        out = {f"dice_{name}": sum(v) / len(v) for name, v in scores.items()}
        out["dice"] = sum(out.values()) / len(out) if out else float("nan")
        return out

    return validate
