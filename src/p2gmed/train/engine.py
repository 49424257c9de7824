"""The task-agnostic training loop: optimizer, schedule, precision, multi-GPU, logs, checkpoints and resume.

A *task* (pre-training, synthesis, segmentation) only computes losses: `Task.run_step` yields one dict of loss
tensors per modality (or one for the whole step). The `Trainer` owns everything around it, and one step reads
top to bottom in `Trainer.train_step`:

    zero the gradients
    for each loss dict the task yields (forward under autocast):
        scaler.scale(loss).backward()              # frees this modality's graph before the next one is built
        train.update per_modality: update now
    train.update per_step: update once
    update = average gradients over ranks, unscale, clip, scaler.step, scaler.update

Around it: AdamW with a constant or linear-warmup + cosine schedule; bf16 / fp16 autocast (fp16 with a
GradScaler); torchrun (parameters broadcast from rank 0 at start, gradients averaged before every update: no
`DistributedDataParallel` wrapper, because the tasks call `encode` / `fuse` / `decode`, which DDP's forward
hooks would not see); `RUN/config.yaml`, `RUN/metrics.jsonl`, TensorBoard scalars and validation figures in
`RUN/tb` and a progress bar (`train.monitor`), and `RUN/checkpoints/{last,best}.pt`, written by rank 0 only and
atomically; validation with best-model selection and early stopping; exact resume (batches and per-step
generators are functions of (seed, step, rank); model, optimizer, scheduler, scaler, RNG states, step and best
value come back from `last.pt`: on CPU a resumed run is bit-identical to an uninterrupted one).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import torch

from p2gmed.config import Config, config_to_dict, dump_config
from p2gmed.device import resolve_device, resolve_precision
from p2gmed.errors import InputError, Interrupted
from p2gmed.io import write_text
from p2gmed.train import distributed as dist_utils
from p2gmed.train.checkpoint import load_checkpoint, restore_rng, save_checkpoint
from p2gmed.train.monitor import RunMonitor
from p2gmed.train.runtime import lr_factor, step_seed, to_device, truncate_metrics
from p2gmed.train.safety import ADVICE, NonFiniteError, StopSignals, kept_sentence
from p2gmed.train.safety import apply_optimizer_settings, check_parameters
from p2gmed.train.validation import Validation

logger = logging.getLogger(__name__)


class Task(Protocol):
    """What the engine needs from a task (see docs/design.md, "Training")."""

    #: names of the active (non-zero weight) loss terms; a step that computes none of one logs 0.0 for it
    terms: tuple[str, ...]

    def run_step(
        self, batch: dict[str, Any], generator: torch.Generator
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Forward passes of one step: yields, per backward pass, every unweighted term and "loss"."""
        ...


class NonFiniteLossError(NonFiniteError):
    """The loss or a validation metric became NaN or infinite: the run stops (exit 1), nothing of it saved."""


def mean_terms(records: Iterable[dict[str, float]], names: Iterable[str] = ()) -> dict[str, float]:
    """Mean of every term over the backward passes that computed it; `names` never computed read 0.0."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for record in records:
        for key, value in record.items():
            sums[key] = sums.get(key, 0.0) + value
            counts[key] = counts.get(key, 0) + 1
    return {**dict.fromkeys(names, 0.0), **{key: sums[key] / counts[key] for key in sums}}


class Trainer:
    """Runs a task for `max_steps` optimizer steps with logging, checkpoints, validation and resume.

    Args:
        model: the network (parameters optimised with AdamW); moved to the selected device.
        task: see `Task`; it must hold and use this same `model` object.
        batch_fn: step index (0-based) -> batch dict; must be a pure function of the step (and rank).
        cfg: the run's configuration (`cfg.train` drives the loop; the whole config goes into checkpoints).
        run_dir: the run folder RUN.
        task_name: "pretrain" | "synthesis" | "segmentation" (stored in checkpoints).
        out_channels, modalities, labels, architecture: what the model is (stored in checkpoints).
        max_steps: steps to train to (resolved from train.max_steps / train.epochs by the caller).
        spacing: the voxel spacing (mm, RAS) the model trains at (`data.spacing.training_spacing`), stored in
            checkpoints so that prediction resamples inputs to it.
        validation: optional periodic validation selecting `best.pt`.
        resume: continue from `RUN/checkpoints/last.pt`.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        task: Task,
        batch_fn: Callable[[int], dict[str, Any]],
        cfg: Config,
        run_dir: str | Path,
        *,
        task_name: str,
        out_channels: int,
        modalities: list[str] | tuple[str, ...],
        max_steps: int,
        labels: str | None = None,
        architecture: str = "p2g",
        spacing: tuple[float, float, float] | None = None,
        validation: Validation | None = None,
        resume: bool = False,
    ):
        if validation is not None and validation.mode not in ("min", "max"):
            raise ValueError(f"validation mode must be min or max, got {validation.mode!r}")
        self.cfg, self.tcfg = cfg, cfg.train
        self.run_dir = Path(run_dir)
        self.task, self.batch_fn, self.validation, self.resume = task, batch_fn, validation, resume
        self.meta = dict(
            task=task_name,
            architecture=architecture,
            out_channels=out_channels,
            modalities=list(modalities),
            labels=labels,
        )
        self.spacing = list(spacing) if spacing is not None else None
        self.max_steps = int(max_steps)
        self.rank, self.world = dist_utils.rank(), dist_utils.world_size()
        self.device = resolve_device(self.tcfg.device)
        self.model = model.to(self.device)
        self.per_modality = self.tcfg.update == "per_modality"
        self.precision = resolve_precision(self.tcfg.precision, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.optimizer = torch.optim.AdamW(
            [p for p in self.model.parameters() if p.requires_grad],
            lr=self.tcfg.lr,
            weight_decay=self.tcfg.weight_decay,
        )
        schedule, warmup = self.tcfg.schedule, self.tcfg.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda i: lr_factor(schedule, i, warmup, self.max_steps)
        )
        self.step = 0
        self.best: dict[str, Any] | None = None
        self.bad_validations = 0

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / "metrics.jsonl"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ---------------------------------------------------------------------------------------------- state
    def save(self, name: str) -> None:
        """Write RUN/checkpoints/<name>.pt (rank 0 only), atomically."""
        if self.is_main:
            save_checkpoint(
                self.checkpoint_dir / f"{name}.pt",
                model=self.model,
                step=self.step,
                config=config_to_dict(self.cfg),
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                scaler=self.scaler,
                best=self.best,
                extra={"bad_validations": self.bad_validations, "spacing": self.spacing},
                **self.meta,
            )
        dist_utils.barrier()

    def load_state(self, path: Path) -> None:
        """Restore model, optimizer, scheduler, scaler, RNG, step and best from a checkpoint."""
        ckpt = load_checkpoint(path, map_location=self.device)
        for key in ("optimizer", "scheduler", "rng"):
            if ckpt.get(key) is None:
                raise InputError(f"{path} holds no {key} state and cannot be resumed")
        if ckpt["task"] != self.meta["task"]:
            raise InputError(
                f"{path} is a {ckpt['task']} checkpoint; it cannot resume a {self.meta['task']} run"
            )
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        apply_optimizer_settings(self.optimizer, self.scheduler, self.tcfg.lr, self.tcfg.weight_decay)
        if ckpt.get("scaler") is not None and self.scaler.is_enabled():
            self.scaler.load_state_dict(ckpt["scaler"])
        restore_rng(ckpt["rng"])
        if self.world > 1 and self.rank > 0:
            # the checkpoint holds rank 0's states; other ranks need their own streams
            torch.manual_seed(step_seed(self.tcfg.seed, ckpt["step"], self.rank))
        self.step = int(ckpt["step"])
        self.best = ckpt.get("best")
        self.bad_validations = int(ckpt.get("bad_validations", 0))

    # ---------------------------------------------------------------------------------------------- one step
    def _autocast(self) -> torch.autocast:
        if self.precision == "fp32":
            return torch.autocast(self.device.type, enabled=False)
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _forward(self, losses: Iterator[dict[str, torch.Tensor]]) -> Iterator[dict[str, torch.Tensor]]:
        """The task's loss dicts, each computed under autocast (the backward runs outside it)."""
        while True:
            with self._autocast():
                terms = next(losses, None)
            if terms is None:
                return
            if "loss" not in terms:
                raise RuntimeError("a task's run_step must yield a 'loss' entry")
            yield terms

    def _check_finite(self, pending: list[dict[str, float]], index: int) -> None:
        """Stop before an update applies non-finite gradients (all ranks together, or others would hang)."""
        bad = sorted({key for record in pending for key, value in record.items() if not math.isfinite(value)})
        if self.world > 1 and dist_utils.reduce_mean({"bad": float(bool(bad))})["bad"] > 0 and not bad:
            bad = ["on another rank"]
        if bad:
            raise NonFiniteLossError(f"the loss became non-finite at step {index + 1} ({', '.join(bad)}); "
                                     f"{kept_sentence(self.checkpoint_dir)}; {ADVICE}")

    def _update(self) -> None:
        """Average gradients over ranks, unscale and clip them, then one optimizer update."""
        dist_utils.average_gradients(self.model.parameters())
        self.scaler.unscale_(self.optimizer)  # a no-op without fp16
        if self.tcfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.tcfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.per_modality and self.scaler.is_enabled():
            self._rescale_kept_gradients()

    def _rescale_kept_gradients(self) -> None:
        """per_modality keeps the gradients for the next modality (the authors' release).

        `scaler.step` left them unscaled, and the next backward adds gradients at the new scale: bring them to
        it. After a skipped update (overflow) they are dropped instead.
        """
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        finite = all(bool(torch.isfinite(g).all()) for g in grads)
        scale = self.scaler.get_scale()
        for g in grads:
            if finite:
                g.mul_(scale)
            else:
                g.zero_()

    def train_step(self) -> dict[str, float]:
        """One step: the task's forward passes, a scaled backward after each, the update(s); returns the mean
        of every term over the backward passes, plus lr."""
        index = self.step
        lr = self.optimizer.param_groups[0]["lr"]
        generator = torch.Generator().manual_seed(step_seed(self.tcfg.seed, index, self.rank))
        batch = to_device(self.batch_fn(index), self.device)
        self.optimizer.zero_grad(set_to_none=True)
        records: list[dict[str, float]] = []
        pending: list[dict[str, float]] = []
        for terms in self._forward(self.task.run_step(batch, generator)):
            self.scaler.scale(terms["loss"]).backward()
            pending.append({key: float(value.detach()) for key, value in terms.items()})
            if self.per_modality:
                self._check_finite(pending, index)
                self._update()
                check_parameters(self.model, index, self.checkpoint_dir)
                records += pending
                pending = []
        if pending:  # per_step
            self._check_finite(pending, index)
            self._update()
            check_parameters(self.model, index, self.checkpoint_dir)
        elif not records:
            logger.warning("step %d: the task computed no loss (nothing active for this batch)", index + 1)
        self.scheduler.step()
        self.step = index + 1
        return {**mean_terms(records + pending, self.task.terms), "lr": lr}

    # ------------------------------------------------------------------------------------------ validation
    def run_validation(self, monitor: RunMonitor | None = None) -> dict[str, float]:
        """Validate (all ranks; results averaged), update best.pt and the early-stopping counter; with a
        `monitor` (rank 0), also log the validation's case figure to TensorBoard."""
        assert self.validation is not None
        was_training = self.model.training
        self.model.eval()
        # validation (and its figure) must not shift the training RNG streams (resume exactness)
        cuda = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda), torch.no_grad(), self._autocast():
            metrics = {k: float(v) for k, v in self.validation.fn(self.model).items()}
            if monitor is not None and self.validation.figure is not None:
                monitor.figure(self.validation.figure(self.model), self.step)
        self.model.train(was_training)
        metrics = dist_utils.reduce_mean(metrics)
        name, mode = self.validation.metric, self.validation.mode
        if name not in metrics:
            raise RuntimeError(f"validation returned no '{name}' (got {sorted(metrics)})")
        value = metrics[name]
        if not math.isfinite(value):
            kept = kept_sentence(self.checkpoint_dir)
            raise NonFiniteLossError(f"validation {name} is {value} at step {self.step}; {kept}; {ADVICE}")
        improved = (
            self.best is None or (value < self.best["value"] if mode == "min" else value > self.best["value"])
        )
        if improved:
            self.best = {"name": name, "value": value, "mode": mode, "step": self.step}
            self.bad_validations = 0
            self.save("best")
        else:
            self.bad_validations += 1
        return {f"val_{k}": v for k, v in metrics.items()}

    # ---------------------------------------------------------------------------------------------- the run
    def _prepare_run_dir(self) -> None:
        last = self.checkpoint_dir / "last.pt"
        if self.resume:
            if not last.is_file():
                raise InputError(f"--resume needs {last}, which does not exist")
            self.load_state(last)
            if self.is_main:
                truncate_metrics(self.metrics_path, self.step)
        elif self.world > 1:
            # identical start on every rank (what DDP's constructor does)
            for tensor in self.model.state_dict().values():
                torch.distributed.broadcast(tensor, src=0)
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_text(self.run_dir / "config.yaml", dump_config(self.cfg))
        dist_utils.barrier()

    def fit(self) -> Path:
        """Train to `max_steps` (or early stopping); returns RUN/checkpoints/last.pt."""
        self._prepare_run_dir()
        last = self.checkpoint_dir / "last.pt"
        if self.step >= self.max_steps:
            logger.info(
                "run %s is already at step %d >= max_steps %d", self.run_dir, self.step, self.max_steps
            )
            return last
        monitor = None
        if self.is_main:
            monitor = RunMonitor(self.run_dir, self.metrics_path, self.step, self.max_steps, self.meta["task"])
        tc = self.tcfg
        self.model.train()
        signals = StopSignals().__enter__()
        try:
            while self.step < self.max_steps:
                start = time.perf_counter()
                record: dict[str, float] = {"step": self.step + 1, **self.train_step()}
                record["seconds"] = round(time.perf_counter() - start, 4)
                step, final = self.step, self.step == self.max_steps
                stop = False
                if self.validation is not None and (final or (tc.val_every > 0 and step % tc.val_every == 0)):
                    record.update(self.run_validation(monitor))
                    stop = tc.early_stopping > 0 and self.bad_validations >= tc.early_stopping
                validated = any(k.startswith("val_") for k in record)
                if step % max(1, tc.log_every) == 0 or final or stop or validated:
                    averaged = {k: v for k, v in record.items() if k not in ("step", "seconds")}
                    record.update(dist_utils.reduce_mean(averaged))
                    if monitor is not None:
                        monitor.log(record)
                if monitor is not None:
                    monitor.advance(record["loss"])
                interrupted = signals.agreed(self.world)
                if final or stop or interrupted or (tc.checkpoint_every > 0 and step % tc.checkpoint_every == 0):
                    self.save("last")
                if interrupted:
                    raise Interrupted(f"stopped by {signals.name} after step {step}; {last} holds it: continue "
                                      "with the same command and --resume", signals.exit_code)
                if stop:
                    logger.info(
                        "early stopping at step %d: %d validations without improvement",
                        step,
                        self.bad_validations,
                    )
                    break
        finally:
            signals.__exit__()
            if monitor is not None:
                monitor.close()
        return last
