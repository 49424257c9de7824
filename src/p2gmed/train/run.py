"""One training run, data folder to run folder: `run_training` serves `p2g pretrain` and `p2g finetune`.

    check the run folder (new, or resumable with the same model definition)
    read the data set, split it by patient, load both parts, build the step-indexed batches
    resolve the number of steps (train.max_steps, or train.epochs x steps per epoch)
    build the model (seeded), initialise it for tuning, build the task and its validation
    hand everything to the `Trainer`

The kinds differ only in the task and the validation: pre-training runs Algorithm 1 (`PretrainTask`) and
validates the decomposition error; tuning runs Algorithm 2 (`SynthesisTask` / `SegmentationTask`) and
validates PSNR / Dice with sliding-window inference.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from p2gmed.config import Config, TrainConfig, config_to_dict
from p2gmed.data.layouts import num_classes
from p2gmed.data.manifests import parse_channels
from p2gmed.data.read import read_dataset
from p2gmed.data.records import Subject
from p2gmed.data.sampling import StepLoader, TrainBatches, shard_subjects, split_subjects, steps_per_epoch
from p2gmed.data.spacing import training_spacing
from p2gmed.data.volumes import load_subjects
from p2gmed.errors import InputError
from p2gmed.io import write_text
from p2gmed.models.baselines import build_architecture
from p2gmed.models.swinvit_weights import init_from_swinvit
from p2gmed.models.weights import checkpoint_config, init_from_checkpoint
from p2gmed.train import distributed as dist_utils
from p2gmed.train.checkpoint import check_monai_version, load_checkpoint
from p2gmed.train.engine import Trainer
from p2gmed.train.finetune import SegmentationTask, SynthesisTask
from p2gmed.train.pretrain_task import PretrainTask
from p2gmed.train.safety import check_resume_changes, prepare_run_folder, run_folder_lock
from p2gmed.train.validation import (
    Validation,
    decomposition_figure,
    decomposition_validation,
    segmentation_figure,
    segmentation_validation,
    synthesis_figure,
    synthesis_validation,
    validation_crops,
)

logger = logging.getLogger(__name__)

KINDS = ("pretrain", "synthesis", "segmentation")

#: configuration sections whose change makes a checkpoint's weights not fit the run (resume refuses them)
MODEL_DEFINING = {"model": None, "data": ("modalities", "roi_size")}


# --------------------------------------------------------------------------------------------------
# run folder and resume checks


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
    last: Path, cfg: Config, task: str, architecture: str, allow_config_change: bool = False
) -> None:
    """Refuse resuming a checkpoint as another task or architecture, or under another model definition; refuse
    other settings that break exact resume (seed, learning rate, split, ...) unless `allow_config_change`, and
    then record them in RUN/config-changes.jsonl.

    Raises:
        InputError: weights from the other side of MONAI 1.5, another task or architecture, or model settings
            that differ (named); other changed settings without `allow_config_change` (named).
    """
    ckpt = load_checkpoint(last)
    check_monai_version(ckpt, path=last)
    if ckpt["task"] != task or ckpt["architecture"] != architecture:
        raise InputError(
            f"{last} is a {ckpt['task']} checkpoint ({ckpt['architecture']}); it cannot resume a {task} run "
            f"({architecture})"
        )
    saved = config_to_dict(checkpoint_config(ckpt, last))  # keys added since the checkpoint: their meaning then
    diffs = model_config_differences(saved, cfg)
    if diffs:
        raise InputError(f"--resume with a different model configuration than {last}: {'; '.join(diffs)}")
    record = dist_utils.is_main()  # one record of the accepted changes, by the process that writes files
    check_resume_changes(last.parent.parent, saved, config_to_dict(cfg), int(ckpt["step"]),
                         allow_config_change, record=record)


# --------------------------------------------------------------------------------------------------
# settled values


def resolve_max_steps(train: TrainConfig, n_train: int, world: int = 1) -> int:
    """Steps of the run: `train.epochs` x steps per epoch when epochs > 0, else `train.max_steps`.

    Raises:
        InputError: fewer than 1 step.
    """
    steps = (
        train.epochs * steps_per_epoch(n_train, train.batch_size, world)
        if train.epochs > 0
        else train.max_steps
    )
    if steps < 1:
        raise InputError(f"the number of steps must be at least 1, got {steps}")
    return steps


def label_convention(subjects: list[Subject], data_dir: Path) -> str:
    """The one label convention of a labelled data set; InputError naming unlabelled subjects or a mix."""
    unlabelled = [s.subject_id for s in subjects if s.label is None]
    if unlabelled:
        more = f" and {len(unlabelled) - 5} more" if len(unlabelled) > 5 else ""
        raise InputError(
            f"{data_dir}: segmentation needs a label for every subject; "
            f"{', '.join(unlabelled[:5])}{more} have none"
        )
    conventions = sorted({str(s.labels) for s in subjects})
    if len(conventions) != 1 or conventions[0] == "None":
        raise InputError(
            f"{data_dir}: the subjects use label conventions {conventions}; one known convention is needed"
        )
    return conventions[0]


def initialise(model: nn.Module, cfg: Config, init: Path | None, init_swinvit: Path | None) -> dict | None:
    """Apply `tune.init` to a new tuning model; returns its key-by-key report (None from scratch)."""
    mode, architecture = cfg.tune.init, cfg.tune.architecture
    if mode in ("full", "encoder") and init is None:
        raise InputError(f"tune.init {mode} needs a checkpoint (--init CKPT)")
    if mode == "swinvit" and init_swinvit is None:
        raise InputError("tune.init swinvit needs the weight file (--init-swinvit FILE)")
    if mode != "scratch" and architecture == "unetr":
        raise InputError(
            "UNETR has no pre-trained weights here: use --architecture p2g or swinunetr to initialise"
        )
    if mode == "scratch":
        return None
    if mode == "swinvit":
        report = init_from_swinvit(model, init_swinvit, allow_mismatch=cfg.tune.allow_mismatch)
    else:
        report = init_from_checkpoint(
            model,
            init,
            encoder_only=mode == "encoder",
            modalities=cfg.data.modalities,
            task=cfg.tune.task,
            allow_mismatch=cfg.tune.allow_mismatch,
        )
    return {"init": mode, **report.to_dict()}


def load_training_shard(subjects: list[Subject], cfg: Config, rank: int, world: int, *, with_label: bool) -> Any:
    """Load and cache this rank's shard of the training subjects only (`sampling.shard_subjects`)."""
    shard = shard_subjects(subjects, rank, world, cfg.train.seed)
    return load_subjects(shard, cfg.data, progress=rank == 0, with_label=with_label)


# --------------------------------------------------------------------------------------------------
# the run


def run_training(
    kind: str,
    data_dir: str | Path,
    out_dir: str | Path,
    cfg: Config,
    *,
    init: str | Path | None = None,
    init_swinvit: str | Path | None = None,
    resume: bool = False,
    allow_config_change: bool = False,
) -> Path:
    """Train `kind` ("pretrain", "synthesis", "segmentation") on `data_dir`; returns RUN/checkpoints/last.pt.

    Args:
        kind: pre-training (Algorithm 1, always P2GNet) or a tuning task (Algorithm 2, `tune.architecture`).
        data_dir: data set folder in any supported layout (`data.layout`, default auto).
        out_dir: the run folder; new or empty unless `resume`.
        cfg: the run's configuration, used as it is (never changed here).
        init: p2gmed checkpoint for tune.init full / encoder.
        init_swinvit: Tang et al. `model_swinvit.pt` for tune.init swinvit.
        resume: continue from RUN/checkpoints/last.pt (a tuning initialisation is not re-applied); a run folder
            left without any checkpoint starts again from step 0.
        allow_config_change: on resume, accept settings that differ from the checkpoint's (recorded in
            RUN/config-changes.jsonl) instead of refusing them.

    Raises:
        InputError: existing run without `resume`, `resume` without a checkpoint or with another task or model
            configuration, bad data (DataError), labels or initialisation; each message names the file or
            option.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    with run_folder_lock(out_dir, dist_utils.is_main()):
        resume = prepare_run_folder(out_dir, resume, clean=dist_utils.is_main())
        if resume:
            architecture = "p2g" if kind == "pretrain" else cfg.tune.architecture
            check_resume_config(out_dir / "checkpoints" / "last.pt", cfg, kind, architecture, allow_config_change)
        return _train(kind, data_dir, out_dir, cfg, init, init_swinvit, resume)


def _train(kind: str, data_dir: Path, out_dir: Path, cfg: Config, init, init_swinvit, resume: bool) -> Path:
    architecture = "p2g" if kind == "pretrain" else cfg.tune.architecture

    modalities = tuple(cfg.data.modalities)
    channels = parse_channels(cfg.data.channels) if cfg.data.channels else None
    subjects = read_dataset(data_dir, cfg.data.layout, modalities=modalities, channels=channels)
    labels = label_convention(subjects, data_dir) if kind == "segmentation" else None
    train_subjects, val_subjects = split_subjects(subjects, cfg.data, cfg.train.seed)
    if not train_subjects:
        raise InputError(
            f"{data_dir}: no training subjects left after the validation split; lower data.val_fraction or "
            "fix data.split_file"
        )
    if cfg.train.val_subjects > 0:
        val_subjects = val_subjects[: cfg.train.val_subjects]
    rank, world, progress = dist_utils.rank(), dist_utils.world_size(), dist_utils.is_main()
    train_loaded = load_training_shard(train_subjects, cfg, rank, world, with_label=labels is not None)
    batches = TrainBatches(
        train_loaded, cfg, seed=cfg.train.seed, rank=rank, world=world, keep_rotation_plane=kind == "pretrain",
        bias_field=kind == "segmentation",
    )
    max_steps = resolve_max_steps(cfg.train, len(train_subjects), world)
    val_loaded = (
        load_subjects(val_subjects, cfg.data, progress=progress, with_label=labels is not None)
        if val_subjects
        else None
    )
    logger.info(
        "%s on %d subjects (%d per rank; %d held out for validation), modalities %s, %d steps",
        kind,
        len(train_subjects),
        len(train_loaded),
        len(val_subjects),
        ", ".join(modalities),
        max_steps,
    )

    out_channels = num_classes(labels) if labels else len(modalities)
    torch.manual_seed(cfg.train.seed)  # the initial weights depend on the seed only
    model = build_architecture(cfg, architecture, out_channels)
    if kind == "pretrain":
        task: Any = PretrainTask(model, cfg)
    elif labels:
        task = SegmentationTask(model, cfg, architecture, labels)
    else:
        task = SynthesisTask(model, cfg, architecture)
    report = None
    if kind != "pretrain" and not resume:
        report = initialise(model, cfg, init and Path(init), init_swinvit and Path(init_swinvit))

    validation = None
    if val_loaded is not None:
        if kind == "pretrain":
            crops = validation_crops([val_loaded[i] for i in range(len(val_loaded))], cfg)
            figure = decomposition_figure(crops, cfg.data.modalities)
            validation = Validation(decomposition_validation(crops), "decomposition_mse", "min", figure)
        elif labels:
            figure = segmentation_figure(val_loaded, cfg, labels)
            validation = Validation(segmentation_validation(val_loaded, cfg, labels), "dice", "max", figure)
        else:
            figure = synthesis_figure(val_loaded, cfg)
            validation = Validation(synthesis_validation(val_loaded, cfg), "psnr", "max", figure)

    trainer = Trainer(
        model,
        task,
        StepLoader(batches, cfg.data.num_workers, max_steps),
        cfg,
        out_dir,
        task_name=kind,
        architecture=architecture,
        out_channels=out_channels,
        modalities=modalities,
        labels=labels,
        spacing=training_spacing(subjects, cfg.data.spacing),
        max_steps=max_steps,
        validation=validation,
        resume=resume,
    )
    if report is not None and dist_utils.is_main():
        # provenance of the initial weights, key by key; written once the device and precision are accepted
        write_text(out_dir / "init_report.json", json.dumps(report, indent=1) + "\n")
    return trainer.fit()
