"""`run_pretrain`: personalized-invariant pre-training (the paper's Algorithm 1), data folder to run folder.

Reads the data set, splits it by patient, loads the subjects into memory, builds the P2GNet and the
`PretrainTask`, and hands both to the `Trainer`. Validation, when there are held-out subjects, is the mean
decomposition MSE (foreground voxels, each available modality decoded from each single modality) on one fixed
crop per held-out subject; it selects `best.pt`.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from p2gmed.config import Config, config_to_dict
from p2gmed.errors import InputError

logger = logging.getLogger(__name__)

#: configuration sections whose change makes a checkpoint's weights not fit the run (resume refuses them)
MODEL_DEFINING = {"model": None, "data": ("modalities", "roi_size")}


def check_run_dir(out_dir: Path, resume: bool) -> None:
    """Refuse to overwrite a run, and to resume one that has no checkpoint.

    Raises:
        InputError: `out_dir` is a non-empty folder and `resume` is False; `resume` without last.pt;
            `out_dir` is a file.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir} is a file, not a run folder")
    last = out_dir / "checkpoints" / "last.pt"
    if resume:
        if not last.is_file():
            raise InputError(f"--resume needs {last}, which does not exist; start the run without --resume")
    elif out_dir.is_dir() and any(out_dir.iterdir()):
        if last.is_file():
            raise InputError(
                f"{out_dir} already holds a run; pass --resume to continue it or choose another --out"
            )
        raise InputError(f"{out_dir} is not empty and holds no checkpoint to resume; choose another --out")


def model_config_differences(saved: dict, cfg: Config) -> list[str]:
    """Model-defining settings where a checkpoint's configuration and `cfg` disagree ("key: old -> new")."""
    current = config_to_dict(cfg)
    out = []
    for section, keys in MODEL_DEFINING.items():
        old, new = saved.get(section, {}), current[section]
        for key in keys or sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                out.append(f"{section}.{key}: {old.get(key)!r} -> {new.get(key)!r}")
    return out


def check_resume_config(
    last: Path, cfg: Config, task: str = "pretrain", architecture: str = "p2g"
) -> None:
    """Refuse resuming a checkpoint as another task or architecture, or under another model definition.

    Raises:
        InputError: weights from the other side of MONAI 1.5, another task or architecture, or model settings
            that differ (named).
    """
    from p2gmed.train.checkpoint import check_monai_version, load_checkpoint

    ckpt = load_checkpoint(last)
    check_monai_version(ckpt, path=last)
    if ckpt["task"] != task or ckpt["architecture"] != architecture:
        raise InputError(
            f"{last} is a {ckpt['task']} checkpoint ({ckpt['architecture']}); it cannot resume a {task} run "
            f"({architecture})"
        )
    diffs = model_config_differences(ckpt["config"], cfg)
    if diffs:
        raise InputError(f"--resume with a different model configuration than {last}: {'; '.join(diffs)}")


def validation_crops(val_loaded: Sequence[Any], cfg: Config) -> list[dict[str, Any]]:
    """One fixed, un-augmented ROI crop per held-out subject (the sampler's own cropping, seed-determined).

    Returns:
        Batches of one crop: image (1, M, D, H, W), available (1, M), foreground (1, 1, D, H, W), subject.
    """
    from p2gmed.data.sampling import TrainBatches

    val_cfg = copy.deepcopy(cfg)
    val_cfg.data.flip_prob = val_cfg.data.rot90_prob = 0.0
    val_cfg.data.crops_per_subject = 1
    val_cfg.train.batch_size = 1
    batches = TrainBatches(val_loaded, val_cfg, seed=cfg.train.seed)
    return [batches.batch(step) for step in range(len(val_loaded))]  # epoch 0: every subject once


def decomposition_validation(crops: list[dict[str, Any]]) -> Callable[[torch.nn.Module], dict[str, float]]:
    """model -> {"decomposition_mse": mean over crops and source modalities of the foreground MSE}.

    For each crop and each available modality i, the model decodes all modalities from x_i repeated over the
    M channels (its `forward`); the error is taken over the available modalities' foreground voxels.
    """
    from p2gmed.losses.decomposition import DecompositionLoss

    loss = DecompositionLoss(background_weight=0.0)

    def validate(model: torch.nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        values = []
        for crop in crops:
            image, available = crop["image"].to(device), crop["available"]
            foreground = crop["foreground"].to(device)
            m = image.shape[1]
            for modality in available[0].nonzero().flatten().tolist():
                prediction = model(image[:, modality : modality + 1].expand(-1, m, -1, -1, -1))
                values.append(float(loss(prediction, image, available, foreground)))
        return {"decomposition_mse": sum(values) / len(values) if values else float("nan")}

    return validate


def run_pretrain(
    data_dir: str | Path,
    out_dir: str | Path,
    cfg: Config,
    *,
    max_steps: int | None = None,
    resume: bool = False,
) -> Path:
    """Pre-train a P2GNet on every subject of `data_dir` (Algorithm 1); returns RUN/checkpoints/last.pt.

    Args:
        data_dir: data set folder in any supported layout (`cfg.data.layout`, default auto).
        out_dir: the run folder; must be new or empty unless `resume`.
        cfg: resolved configuration; `cfg.train.max_steps` is updated to the steps actually targeted.
        max_steps: overrides `cfg.train.max_steps` and `cfg.train.epochs`.
        resume: continue from `out_dir/checkpoints/last.pt` to `max_steps`.

    Raises:
        InputError: existing run without `resume`, `resume` without a checkpoint or with another model
            configuration, bad data (DataError).
    """
    from p2gmed.data.read import read_dataset
    from p2gmed.train.runtime import load_run_data
    from p2gmed.models.network import build_model
    from p2gmed.train.engine import Trainer, Validation
    from p2gmed.data.spacing import training_spacing
    from p2gmed.train.pretrain_task import PretrainTask

    out_dir = Path(out_dir)
    check_run_dir(out_dir, resume)
    if resume:
        check_resume_config(out_dir / "checkpoints" / "last.pt", cfg)

    modalities = tuple(cfg.data.modalities)
    subjects = read_dataset(data_dir, cfg.data.layout, modalities=modalities)
    train_loaded, val_loaded, batches = load_run_data(
        data_dir, subjects, cfg, with_label=False, max_steps=max_steps
    )
    logger.info(
        "pre-training on %d subjects (%d held out for validation), modalities %s",
        len(train_loaded),
        len(val_loaded) if val_loaded is not None else 0,
        ", ".join(modalities),
    )
    validation = None
    if val_loaded is not None:
        crops = validation_crops([val_loaded[i] for i in range(len(val_loaded))], cfg)
        validation = Validation(decomposition_validation(crops), "decomposition_mse", "min")

    torch.manual_seed(cfg.train.seed)  # the initial weights depend on the seed only
    model = build_model(cfg, out_channels=len(modalities))
    task = PretrainTask(model, cfg)
    trainer = Trainer(
        model,
        task,
        batches.batch,
        cfg,
        out_dir,
        task_name="pretrain",
        architecture="p2g",
        out_channels=len(modalities),
        modalities=modalities,
        spacing=training_spacing(subjects, cfg.data.spacing),
        labels=None,
        validation=validation,
        max_steps=cfg.train.max_steps,
        resume=resume,
    )
    return trainer.fit()
