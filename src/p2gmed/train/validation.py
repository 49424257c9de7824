"""Validation on held-out subjects: what selects `best.pt` in each kind of run.

Pre-training: the decomposition error (foreground MSE of every available modality decoded from each single
modality) on one fixed crop per held-out subject. Tuning, with sliding-window inference over whole volumes:
synthesis, mean PSNR (unit convention) over (single source -> other available target) pairs; segmentation,
mean region Dice (BraTS WT/TC/ET or AutoPET lesion) from all modalities and from each one alone.

Each kind also draws one held-out subject at every validation (`Validation.figure`, logged to TensorBoard as
`validation/case`): pre-training, its first crop's given modality and every modality decoded from it; synthesis,
the given source with each synthesized target over its reference; segmentation, the given modalities with the
predicted and the reference segmentation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from p2gmed.config import Config
from p2gmed.data.layouts import classes_to_labels, region_masks
from p2gmed.data.sampling import TrainBatches
from p2gmed.evaluation.synthesis import psnr, unit_prepare
from p2gmed.inference.sliding import sliding_predict
from p2gmed.losses.decomposition import masked_mean_error

Validate = Callable[[nn.Module], dict[str, float]]
#: model -> a matplotlib Figure of one held-out subject, or None when there is nothing to draw
Draw = Callable[[nn.Module], Any]


@dataclass
class Validation:
    """Periodic validation and best-model selection.

    Attributes:
        fn: model -> {metric name: value}; called under `torch.no_grad()` with the model in eval mode.
        metric: the name in `fn`'s result that selects `best.pt`.
        mode: "min" (lower is better) or "max".
        figure: optional model -> matplotlib Figure of one held-out subject; the engine calls it on the main
            process right after `fn` (same no-grad, eval mode and forked RNG) and logs it to TensorBoard.
    """

    fn: Validate
    metric: str
    mode: str = "min"
    figure: Draw | None = None


def _case_figure(*args, **kwargs):
    from p2gmed.report.case_figure import case_figure  # matplotlib only once a figure is drawn

    return case_figure(*args, **kwargs)


def _volume(tensor: Tensor):
    """(D, H, W) tensor (any dtype, any device) -> float32 numpy array for a figure."""
    return tensor.detach().float().cpu().numpy()


# --------------------------------------------------------------------------------------------------
# pre-training


def validation_crops(val_loaded: Sequence[Any], cfg: Config) -> list[dict[str, Any]]:
    """One fixed, un-augmented ROI crop per held-out subject (the sampler's own cropping, seed-determined).

    Returns:
        Batches of one crop: image (1, M, D, H, W), available (1, M), foreground (1, 1, D, H, W), subject.
    """
    one_crop = dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, flip_prob=0.0, rot90_prob=0.0, crops_per_subject=1),
        train=dataclasses.replace(cfg.train, batch_size=1),
    )
    batches = TrainBatches(val_loaded, one_crop, seed=cfg.train.seed)
    return [batches.batch(step) for step in range(len(val_loaded))]  # epoch 0: every subject once


def decomposition_validation(crops: list[dict[str, Any]]) -> Validate:
    """model -> {"decomposition_mse": mean over crops and source modalities of the foreground MSE}.

    For each crop and each available modality i, the model decodes all modalities from x_i repeated over the
    M channels (its `forward`); the error is taken over the available modalities' foreground voxels.
    """

    def validate(model: nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        values = []
        for crop in crops:
            image, available = crop["image"].to(device), crop["available"]
            foreground = crop["foreground"].to(device)
            m = image.shape[1]
            for modality in available[0].nonzero().flatten().tolist():
                prediction = model(image[:, modality : modality + 1].expand(-1, m, -1, -1, -1))
                values.append(float(masked_mean_error(prediction, image, available, foreground)))
        return {"decomposition_mse": sum(values) / len(values) if values else float("nan")}

    return validate


def decomposition_figure(crops: list[dict[str, Any]], modalities: Sequence[str]) -> Draw:
    """model -> the first crop's first available modality (given) and every available modality decoded from it,
    each over its reference."""

    def draw(model: nn.Module):
        if not crops:
            return None
        crop = crops[0]
        present = crop["available"][0].nonzero().flatten().tolist()
        if not present:
            return None
        image, given = crop["image"], present[0]
        m = image.shape[1]
        device = next(model.parameters()).device
        decoded = model(image[:, given : given + 1].expand(-1, m, -1, -1, -1).to(device))[0]
        rows = [(f"{modalities[given]} given", _volume(image[0, given]))]
        rows += [(f"{modalities[t]} decoded", _volume(decoded[t])) for t in present]
        references = {modalities[t]: _volume(image[0, t]) for t in present}
        return _case_figure(rows, references=references, title=str(crop.get("subject", ["held-out crop"])[0]))

    return draw


# --------------------------------------------------------------------------------------------------
# tuning


def _validation_subsets(available: Tensor) -> list[Tensor]:
    """The subsets a held-out subject is validated from: all its modalities, then each one alone."""
    present = available.nonzero().flatten().tolist()
    singles = [torch.nn.functional.one_hot(torch.tensor(i), available.numel()).bool() for i in present]
    return ([available.clone()] if len(present) > 1 else []) + singles


def _slide(model: nn.Module, image: Tensor, subset: Tensor, cfg: Config) -> Tensor:
    """Whole-volume prediction from `subset`: image (1, M, D, H, W) -> (1, out, D, H, W) on the CPU."""
    inf = cfg.inference
    return sliding_predict(
        lambda x: model.forward_subset(x, subset.to(x.device)),
        image,
        cfg.data.roi_size,
        overlap=inf.overlap,
        sw_batch_size=inf.sw_batch_size,
        mode=inf.mode,
        device=next(model.parameters()).device,
        stitch="cpu",
    )


def _wanted(cfg: Config) -> tuple[list[int], list[int]]:
    """Channel indices of the sources and targets synthesis is tuned for (`tune.sources` / `tune.targets`)."""
    order = tuple(cfg.data.modalities)
    sources = [i for i, m in enumerate(order) if not cfg.tune.sources or m in cfg.tune.sources]
    targets = [i for i, m in enumerate(order) if not cfg.tune.targets or m in cfg.tune.targets]
    return sources, targets


def _subject_name(item: Any) -> str:
    return str(getattr(getattr(item, "subject", None), "subject_id", "held-out subject"))


def synthesis_figure(val_loaded: Any, cfg: Config) -> Draw:
    """model -> the first held-out subject with a source and another target: the given source and each target
    synthesized from it (sliding window over the whole volume), each over its reference."""
    wanted_sources, wanted_targets = _wanted(cfg)
    order = tuple(cfg.data.modalities)

    def draw(model: nn.Module):
        for index in range(len(val_loaded)):
            item = val_loaded[index]
            present = item.available.nonzero().flatten().tolist()
            sources = [m for m in present if m in wanted_sources]
            if not sources:
                continue
            source = sources[0]
            targets = [t for t in present if t != source and t in wanted_targets]
            if not targets:
                continue
            image = item.image[None].float()
            subset = torch.zeros_like(item.available, dtype=torch.bool)
            subset[source] = True
            prediction = _slide(model, image, subset, cfg)[0]
            rows = [(f"{order[source]} given", _volume(image[0, source]))]
            rows += [(f"{order[t]} synthesized", _volume(prediction[t])) for t in targets]
            references = {order[t]: _volume(image[0, t]) for t in targets}
            return _case_figure(rows, references=references, title=_subject_name(item))
        return None

    return draw


def synthesis_validation(val_loaded: Any, cfg: Config) -> Validate:
    """model -> {"psnr": mean PSNR (dB, unit convention) over (single source, other available target) pairs}.

    Sources and targets are restricted to `tune.sources` / `tune.targets` when those are set.

    Both volumes are compared inside the subject's foreground (outside set to 0), in normalised intensities,
    after the unit convention's percentile scaling (evaluation/synthesis.py).
    """

    wanted_sources, wanted_targets = _wanted(cfg)

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


def segmentation_validation(val_loaded: Any, cfg: Config, labels: str) -> Validate:
    """model -> {"dice": mean over regions (BraTS WT/TC/ET, AutoPET lesion) and subsets, "dice_<region>"}.

    Each held-out subject is segmented from all its modalities and from each one alone.
    """

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


def segmentation_figure(val_loaded: Any, cfg: Config, labels: str) -> Draw:
    """model -> the first labelled held-out subject: its given modalities, and the segmentation predicted from
    all of them (sliding window) next to the reference, drawn over the first."""
    order = tuple(cfg.data.modalities)

    def draw(model: nn.Module):
        for index in range(len(val_loaded)):
            item = val_loaded[index]
            if item.label is None:
                continue
            present = item.available.nonzero().flatten().tolist()
            logits = _slide(model, item.image[None].float(), item.available.clone(), cfg)
            predicted = classes_to_labels(logits[0].argmax(0), labels)
            rows = [(f"{order[m]} given", _volume(item.image[m])) for m in present]
            segmentations = [("predicted", predicted.cpu().numpy()), ("reference", item.label[0].cpu().numpy())]
            return _case_figure(rows, segmentations, title=_subject_name(item))
        return None

    return draw
