"""The trained models `p2g predict` runs: checkpoints read once, what each can produce, and which combinations work.

* a synthesis checkpoint and a pre-training checkpoint both synthesize: the pre-trained decoder reconstructs every
  modality from any one (Algorithm 1 trains exactly that), so it serves as a synthesis model without tuning;
* a segmentation checkpoint segments, and cannot synthesize;
* at most one model of each kind; give both to get every modality and a segmentation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from p2gmed.config import Config
from p2gmed.data.layouts import LABEL_VALUES
from p2gmed.errors import InputError

SYNTHESIS_TASKS = ("synthesis", "pretrain")
SEGMENTATION_TASKS = ("segmentation",)


@dataclass
class LoadedModel:
    """A model in eval mode with what its checkpoint says about it.

    Attributes:
        model: module with `forward_subsets(image (B, M, D, H, W), subsets (K, M) bool) -> (B, K, C, D, H, W)`.
        path: the checkpoint file.
        cfg: the configuration it was trained with (ROI, spacing, normalisation, inference defaults).
        task: "pretrain", "synthesis" or "segmentation".
        architecture: "p2g", "swinunetr" or "unetr".
        modalities: the M modality names of its input (and, for synthesis, output) channels.
        out_channels: C.
        labels: label convention of a segmentation model ("brats2023", "brats2018", "autopet"), else None.
        versions: {p2gmed, monai, torch} it was trained with.
        spacing: the voxel spacing (mm, RAS axes) it was trained at, or None when the checkpoint does not say
            (then inference runs on the native grid).
    """

    model: nn.Module
    path: Path
    cfg: Config
    task: str
    architecture: str
    modalities: tuple[str, ...]
    out_channels: int
    labels: str | None = None
    versions: dict[str, str] | None = None
    spacing: tuple[float, float, float] | None = None

    @property
    def synthesizes(self) -> bool:
        return self.task in SYNTHESIS_TASKS

    @property
    def segments(self) -> bool:
        return self.task in SEGMENTATION_TASKS

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary for the prediction sidecar."""
        return {
            "file": str(self.path),
            "task": self.task,
            "architecture": self.architecture,
            "modalities": list(self.modalities),
            "labels": self.labels,
            "training_spacing": list(self.spacing) if self.spacing else None,
            "versions": dict(self.versions or {}),
        }

    @classmethod
    def from_checkpoint_dict(cls, model: nn.Module, ckpt: dict[str, Any], path: str | Path) -> LoadedModel:
        """Wrap a model and its checkpoint metadata; InputError naming the file when the metadata is unusable."""
        from p2gmed.config import config_from_checkpoint
        from p2gmed.modalities import canonical

        path = Path(path)
        cfg = config_from_checkpoint(ckpt["config"])
        task = ckpt.get("task")
        if task not in SYNTHESIS_TASKS + SEGMENTATION_TASKS:
            raise InputError(f"{path} holds a model for task '{task}', which p2g predict cannot run")
        modalities = tuple(canonical(m) for m in ckpt.get("modalities") or cfg.data.modalities)
        out_channels = int(ckpt.get("out_channels") or len(modalities))
        labels = ckpt.get("labels")
        if task in SYNTHESIS_TASKS and out_channels != len(modalities):
            raise InputError(
                f"{path} is a {task} checkpoint with {out_channels} outputs for {len(modalities)} modalities; "
                "it cannot synthesize them"
            )
        if task in SEGMENTATION_TASKS:
            if labels not in LABEL_VALUES:
                raise InputError(f"{path} is a segmentation checkpoint without a known label convention ({labels!r})")
            if out_channels != len(LABEL_VALUES[labels]):
                raise InputError(
                    f"{path} has {out_channels} output channels but its {labels} labels have "
                    f"{len(LABEL_VALUES[labels])} classes"
                )
        return cls(
            model=model.eval(),
            path=path,
            cfg=cfg,
            task=task,
            architecture=str(ckpt.get("architecture", "p2g")),
            modalities=modalities,
            out_channels=out_channels,
            labels=labels if task in SEGMENTATION_TASKS else None,
            versions=ckpt.get("versions"),
            spacing=training_spacing(ckpt, cfg),
        )


def training_spacing(ckpt: dict[str, Any], cfg: Config) -> tuple[float, float, float] | None:
    """The spacing a checkpoint's model was trained at: the configured resampling target, else the median spacing
    of its training subjects (recorded as `spacing` by training), else None (an older checkpoint)."""
    spacing = cfg.data.spacing if cfg.data.spacing is not None else ckpt.get("spacing")
    if spacing is None:
        return None
    return tuple(float(v) for v in spacing)  # type: ignore[return-value]


def load_models(paths: list[str | Path], device: str | torch.device = "cpu") -> list[LoadedModel]:
    """Read each checkpoint once (for a whole batch of cases) and check the combination.

    Raises:
        InputError: a file is not a usable p2gmed checkpoint, or the combination is not allowed.
    """
    from p2gmed.models.weights import model_from_checkpoint
    from p2gmed.train.checkpoint import check_monai_version

    models = []
    for path in paths:
        model, ckpt = model_from_checkpoint(path, device)
        check_monai_version(ckpt, path=path)
        models.append(LoadedModel.from_checkpoint_dict(model, ckpt, path))
    check_models(models)
    return models


def check_models(models: list[LoadedModel]) -> None:
    """At least one model; the models of one kind (synthesis or segmentation) form an ensemble and must agree.

    Several checkpoints of one kind (e.g. the folds of a cross-validation) are averaged at prediction time, so
    they must read and write the same modalities (and, for segmentation, use the same label convention).

    Raises:
        InputError: naming the checkpoints that do not fit together.
    """
    if not models:
        raise InputError("give at least one --model checkpoint")
    paths = [str(Path(m.path).resolve()) for m in models]
    for i, path in enumerate(paths):
        if path in paths[:i]:
            raise InputError(f"{models[i].path} is given twice as --model; an ensemble needs distinct checkpoints")
    for kind, chosen in (
        ("synthesis (or pre-training)", [m for m in models if m.synthesizes]),
        ("segmentation", [m for m in models if m.segments]),
    ):
        first = chosen[0] if chosen else None
        for other in chosen[1:]:
            if other.modalities != first.modalities or other.labels != first.labels:
                raise InputError(
                    f"{first.path} and {other.path} are both {kind} models but read different modalities "
                    f"({', '.join(first.modalities)} vs {', '.join(other.modalities)}) or labels; models of one "
                    "kind are averaged as an ensemble and must agree"
                )
            if _normalisation(other) != _normalisation(first):
                raise InputError(
                    f"{first.path} and {other.path} are both {kind} models but normalise intensities differently "
                    f"({_normalisation(first)} vs {_normalisation(other)}); their outputs cannot be averaged"
                )


def _normalisation(model: LoadedModel) -> tuple:
    data = model.cfg.data
    return (data.mri_norm, tuple(data.ct_window), float(data.pet_scale))


def ensembles(models: list[LoadedModel]) -> list[list[LoadedModel]]:
    """The models grouped by kind, synthesis first: each group is averaged as one ensemble."""
    groups = [[m for m in models if m.synthesizes], [m for m in models if m.segments]]
    return [g for g in groups if g]


def modality_order(models: list[LoadedModel]) -> tuple[str, ...]:
    """Every modality the models know, in their channel order (first model first): the order of subset names."""
    return tuple(dict.fromkeys(m for model in models for m in model.modalities))
