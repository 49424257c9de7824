"""Downstream tuning, the paper's Algorithm 2 (Sec. 3.3, Eq. 8): L_down = L_ori + L_inv.

One model serves every subset of modalities. At each step one non-empty subset S of a subject's available
modalities is drawn uniformly (15 subsets for 4 modalities; the crops of a subject share it). For P2GNet:

    for i in S (in a random order):                                   [Algorithm 2, inner loop]
        z_i, skips_i = E(X_i repeated over the M channels)
        X'_i = conv(z_i ⊕ Attn(z_i, O, O))
        L_inv(X'_i, anchor) from the 2nd modality on; anchor <- update(X'_i)     [Eq. 3, running anchor]
    subset_mean (default):  Y' = D(mean_S X'_i, mean_S skips_i); L_ori(Y', Y)
    per_modality:           Y'_i = D(X'_i, skips_i); L_ori(Y'_i, Y) for every i (Algorithm 2 as written)

`subset_mean` trains exactly what `P2GNet.forward_subset` computes at prediction time (and equals Algorithm 2
when |S| = 1); `per_modality` keeps one modality's graph in memory at a time. Baselines (stock SwinUNETR /
UNETR) read the stacked modalities with the channels outside S zeroed and have no invariance term.

L_ori: synthesis -- MSE (or L1) over every available modality of the subject (the sources included) on
foreground voxels (the paper excludes the background for generation, App. B.2.1); segmentation -- soft Dice +
weighted cross-entropy (mmFormer, losses/segmentation.py).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from p2gmed.config import Config
from p2gmed.errors import DataError
from p2gmed.losses.invariance import InvarianceLoss, RunningAnchor
from p2gmed.losses.objective import WeightedSum
from p2gmed.losses.segmentation import SoftDiceLoss, WeightedCrossEntropyLoss, labels_to_classes
from p2gmed.losses.synthesis import MaskedRegressionLoss
from p2gmed.models.baselines import mask_missing
from p2gmed.train.validation import segmentation_validation, synthesis_validation


def draw_subsets(available: Tensor, subjects: list[str], generator: torch.Generator) -> Tensor:
    """One uniformly drawn non-empty subset of each subject's available modalities.

    Args:
        available: (N, M) bool, per crop.
        subjects: N subject ids; crops of one subject (consecutive) get the same subset.
        generator: CPU generator.

    Returns:
        (N, M) bool, a non-empty subset of `available` per crop (empty only where nothing is available).
    """
    chosen = torch.zeros_like(available, dtype=torch.bool)
    previous: tuple[str, Tensor] | None = None
    for row in range(available.shape[0]):
        if previous is not None and previous[0] == subjects[row] and torch.equal(previous[1], available[row]):
            chosen[row] = chosen[row - 1]
            continue
        present = available[row].nonzero().flatten()
        if present.numel():
            # a uniform integer in [1, 2^k) is a uniform non-empty subset of the k present modalities
            code = int(torch.randint(1, 2 ** present.numel(), (1,), generator=generator))
            bits = torch.tensor([(code >> j) & 1 for j in range(present.numel())], dtype=torch.bool)
            chosen[row, present[bits]] = True
        previous = (subjects[row], available[row])
    return chosen


class FinetuneTask(abc.ABC):
    """Algorithm 2 for any model p2gmed builds; subclasses define the task loss.

    Args:
        model: P2GNet or a MonaiBaseline.
        cfg: run configuration (loss weights, tune.train_decode, loss.anchor).
        architecture: "p2g", "swinunetr" or "unetr".
    """

    def __init__(self, model: nn.Module, cfg: Config, architecture: str) -> None:
        self.model, self.cfg, self.architecture = model, cfg, architecture
        invariance = cfg.loss.invariance if architecture == "p2g" else 0.0
        self.objective = WeightedSum({**self.task_losses(cfg), "invariance": (invariance, InvarianceLoss())})

    @abc.abstractmethod
    def task_losses(self, cfg: Config) -> dict[str, tuple[float, nn.Module]]:
        """Task-loss name -> (weight, module): L_ori of Eq. 8."""

    @abc.abstractmethod
    def task_inputs(self, prediction: Tensor, batch: Mapping[str, Any], rows: Tensor) -> dict[str, Callable]:
        """Loss-term name -> call on its module, for the prediction (R, out, D, H, W) of the crops `rows`."""

    # ------------------------------------------------------------------------------------------------------
    def run_step(
        self,
        batch: Mapping[str, Any],
        step: int,
        generator: torch.Generator,
        after_modality: Callable[[], None] | None = None,
    ) -> dict[str, float]:
        """Forward and backward of one step (see the module docstring).

        Args:
            batch: image (N, M, D, H, W), available (N, M) bool, foreground (N, 1, D, H, W) bool, subject
                (N ids), label (N, 1, D, H, W) for segmentation.
            step: step index (unused; part of the task interface).
            generator: drives the subset draw and the modality order.
            after_modality: called after each backward (per-modality optimizer updates).

        Returns:
            Mean over the backward passes of each active unweighted term and of the weighted total `loss`.
        """
        del step
        device = next(self.model.parameters()).device
        batch = {
            **batch,
            "image": batch["image"].to(device).float(),
            "foreground": batch["foreground"].to(device).bool(),
        }
        available = torch.as_tensor(batch["available"], dtype=torch.bool).cpu()
        subset = draw_subsets(available, list(batch.get("subject", [""] * len(available))), generator)
        rows = subset.any(1).nonzero().flatten()
        if rows.numel() == 0:
            raise DataError(
                f"no modality is available in any crop of {', '.join(map(str, batch.get('subject', [])))}"
            )
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        if self.architecture != "p2g":
            image = mask_missing(batch["image"][rows.to(device)], subset[rows])
            out = self.objective(self.task_inputs(self.model(image), batch, rows))
            self._backward(out, after_modality)
        else:
            self._p2g_step(batch, subset, generator, after_modality)
        # a term never computed in this step (invariance when |S| = 1) reads 0
        for name in self.objective.weights:
            self.sums.setdefault(name, 0.0)
            self.counts.setdefault(name, 1)
        return {name: self.sums[name] / self.counts[name] for name in self.sums}

    def _backward(self, out: Any, after_modality: Callable[[], None] | None) -> None:
        out.total.backward()
        for name, value in (*out.terms.items(), ("loss", out.total)):
            self.sums[name] = self.sums.get(name, 0.0) + float(value.detach())
            self.counts[name] = self.counts.get(name, 0) + 1
        if after_modality is not None:
            after_modality()

    def _p2g_step(
        self,
        batch: Mapping[str, Any],
        subset: Tensor,
        generator: torch.Generator,
        after_modality: Callable[[], None] | None,
    ) -> None:
        model, image = self.model, batch["image"]
        n, m = subset.shape
        per_modality = self.cfg.tune.train_decode == "per_modality"
        anchor = RunningAnchor(n, self.cfg.loss.anchor)
        fused_sum: Tensor | None = None
        skip_sums: list[Tensor] = []
        invariance: list[Tensor] = []
        for modality in torch.randperm(m, generator=generator).tolist():
            rows = subset[:, modality].nonzero().flatten()
            if rows.numel() == 0:
                continue
            rows_dev = rows.to(image.device)
            z, skips = model.encode(image[rows_dev, modality : modality + 1].expand(-1, m, -1, -1, -1))
            fused = model.fuse(z)
            inputs: dict[str, Callable] = {}
            if "invariance" in self.objective:
                seen = anchor.seen(rows)
                if bool(seen.any()):
                    current, target = fused[seen.to(fused.device)], anchor.get(rows[seen])
                    inputs["invariance"] = lambda loss, c=current, t=target: loss(c, t)
                anchor.update(fused, rows)
            if per_modality:
                inputs.update(self.task_inputs(model.decode(fused, skips), batch, rows))
                self._backward(self.objective(inputs), after_modality)
                continue
            if inputs:
                invariance.append(self.objective(inputs).terms["invariance"])
            # differentiable per-crop sums over the subset (index_add is out of place: the graph is kept)
            fused_sum = fused_sum if fused_sum is not None else fused.new_zeros((n, *fused.shape[1:]))
            fused_sum = fused_sum.index_add(0, rows_dev, fused)
            if not skip_sums:
                skip_sums = [s.new_zeros((n, *s.shape[1:])) for s in skips]
            skip_sums = [total.index_add(0, rows_dev, s) for total, s in zip(skip_sums, skips, strict=True)]
        if per_modality:
            return
        assert fused_sum is not None
        rows = subset.any(1).nonzero().flatten()
        rows_dev = rows.to(image.device)
        count = subset.sum(1).clamp(min=1).to(image.device, torch.float32)
        scale = lambda t: (t / count.view(-1, *([1] * (t.ndim - 1))).to(t.dtype))[rows_dev]  # noqa: E731
        prediction = model.decode(scale(fused_sum), [scale(s) for s in skip_sums])
        inputs = self.task_inputs(prediction, batch, rows)
        if invariance:
            inputs["invariance"] = lambda loss: torch.stack(invariance).sum()
        self._backward(self.objective(inputs), after_modality)


class SynthesisTask(FinetuneTask):
    """Any-subset synthesis: every modality from whichever subset was drawn (MSE or L1 + invariance)."""

    def task_losses(self, cfg: Config) -> dict[str, tuple[float, nn.Module]]:
        return {cfg.loss.synthesis_loss: (cfg.loss.mse, MaskedRegressionLoss(cfg.loss.synthesis_loss))}

    def task_inputs(self, prediction: Tensor, batch: Mapping[str, Any], rows: Tensor) -> dict[str, Callable]:
        rows_dev = rows.to(prediction.device)
        target, foreground = batch["image"][rows_dev], batch["foreground"][rows_dev]
        available = torch.as_tensor(batch["available"], dtype=torch.bool).cpu()[rows]
        return {self.cfg.loss.synthesis_loss: lambda loss: loss(prediction, target, available, foreground)}


class SegmentationTask(FinetuneTask):
    """Missing-modality segmentation: Dice + weighted CE (mmFormer) + invariance.

    Args:
        labels: label convention of the data ("brats2023", "brats2018", "autopet"); labels become classes.
    """

    def __init__(self, model: nn.Module, cfg: Config, architecture: str, labels: str) -> None:
        self.labels = labels
        super().__init__(model, cfg, architecture)

    def task_losses(self, cfg: Config) -> dict[str, tuple[float, nn.Module]]:
        return {"dice": (cfg.loss.dice, SoftDiceLoss()), "ce": (cfg.loss.ce, WeightedCrossEntropyLoss())}

    def task_inputs(self, prediction: Tensor, batch: Mapping[str, Any], rows: Tensor) -> dict[str, Callable]:
        if batch.get("label") is None:
            raise DataError(
                f"segmentation needs labels; {', '.join(map(str, batch.get('subject', [])))} has none"
            )
        target = labels_to_classes(batch["label"][rows.to(batch["label"].device)], self.labels).to(
            prediction.device
        )
        return {"dice": lambda loss: loss(prediction, target), "ce": lambda loss: loss(prediction, target)}


# ----------------------------------------------------------------------------------------------------------
# the run


def _label_convention(subjects: list[Any], data_dir: Any) -> str:
    """The one label convention of a labelled data set; InputError naming unlabelled subjects or a mix."""
    from p2gmed.errors import InputError

    unlabelled = [s.subject_id for s in subjects if s.label is None]
    if unlabelled:
        shown = ", ".join(unlabelled[:5]) + (
            f" and {len(unlabelled) - 5} more" if len(unlabelled) > 5 else ""
        )
        raise InputError(f"{data_dir}: segmentation needs a label for every subject; {shown} have none")
    conventions = sorted({str(s.labels) for s in subjects})
    if len(conventions) != 1 or conventions[0] == "None":
        raise InputError(
            f"{data_dir}: the subjects use label conventions {conventions}; one known convention is needed"
        )
    return conventions[0]


def _initialise(model: nn.Module, cfg: Config, init: Any, init_swinvit: Any) -> dict[str, Any] | None:
    """Apply cfg.tune.init; returns its key report (None from scratch)."""
    from p2gmed.errors import InputError
    from p2gmed.models.weights import init_from_checkpoint, init_from_swinvit

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


def run_finetune(
    data_dir: Any,
    out_dir: Any,
    cfg: Config,
    *,
    init: Any = None,
    init_swinvit: Any = None,
    max_steps: int | None = None,
    resume: bool = False,
) -> Any:
    """Tune a model for `cfg.tune.task` on `data_dir` (Algorithm 2); returns RUN/checkpoints/last.pt.

    Args:
        data_dir: data set folder in any supported layout.
        out_dir: run folder; new or empty unless `resume`.
        cfg: resolved configuration: tune.task, tune.architecture, tune.init ("full" / "encoder" from `init`,
            "swinvit" from `init_swinvit`, "scratch"), tune.allow_mismatch, losses, schedule, validation.
        init: p2gmed checkpoint for tune.init full / encoder.
        init_swinvit: Tang et al. `model_swinvit.pt` for tune.init swinvit.
        max_steps: overrides train.max_steps and train.epochs.
        resume: continue from RUN/checkpoints/last.pt (the initialisation is not re-applied).

    Raises:
        InputError: bad data, labels, initialisation or run folder (each message names the file or option).
    """
    import json
    from pathlib import Path

    from p2gmed.data.read import read_dataset
    from p2gmed.train.runtime import load_run_data
    from p2gmed.io import write_text
    from p2gmed.losses.segmentation import num_classes
    from p2gmed.models.baselines import build_architecture
    from p2gmed.train import distributed as dist_utils
    from p2gmed.data.spacing import training_spacing
    from p2gmed.train.engine import Trainer, Validation
    from p2gmed.train.pretrain import check_resume_config, check_run_dir

    out_dir, task_name, architecture = Path(out_dir), cfg.tune.task, cfg.tune.architecture
    check_run_dir(out_dir, resume)
    if resume:
        check_resume_config(out_dir / "checkpoints" / "last.pt", cfg, task_name, architecture)
    modalities = tuple(cfg.data.modalities)
    subjects = read_dataset(data_dir, cfg.data.layout, modalities=modalities)
    segmentation = task_name == "segmentation"
    labels = _label_convention(subjects, data_dir) if segmentation else None
    out_channels = num_classes(labels) if labels else len(modalities)
    _, val_loaded, batches = load_run_data(
        data_dir, subjects, cfg, with_label=segmentation, max_steps=max_steps
    )
    validation = None
    if val_loaded is not None:
        validation = (
            Validation(segmentation_validation(val_loaded, cfg, labels), "dice", "max")
            if labels
            else Validation(synthesis_validation(val_loaded, cfg), "psnr", "max")
        )

    torch.manual_seed(cfg.train.seed)  # the initial weights depend on the seed only
    model = build_architecture(cfg, architecture, out_channels)
    if not resume:
        report = _initialise(model, cfg, init, init_swinvit)
        if report is not None and dist_utils.is_main():  # provenance of the initial weights, key by key
            write_text(out_dir / "init_report.json", json.dumps(report, indent=1) + "\n")
    task = (
        SegmentationTask(model, cfg, architecture, labels)
        if labels
        else SynthesisTask(model, cfg, architecture)
    )
    trainer = Trainer(
        model,
        task,
        batches.batch,
        cfg,
        out_dir,
        task_name=task_name,
        architecture=architecture,
        out_channels=out_channels,
        modalities=modalities,
        spacing=training_spacing(subjects, cfg.data.spacing),
        labels=labels,
        validation=validation,
        max_steps=cfg.train.max_steps,
        resume=resume,
    )
    return trainer.fit()
