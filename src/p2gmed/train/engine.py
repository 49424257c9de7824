"""The task-agnostic training loop: optimizer, schedule, precision, multi-GPU, logs, checkpoints and resume.

A *task* (pre-training, synthesis, segmentation) only knows how to run the forward and backward passes of one
step (`Task.run_step`); the `Trainer` owns everything around it:

- AdamW with a constant or linear-warmup + cosine schedule, optional gradient-norm clipping;
- mixed precision (bf16/fp16 autocast on CUDA, fp16 with a GradScaler; bf16 on CPU);
- multi-process training under torchrun: parameters are broadcast from rank 0 at start and gradients are
  averaged over ranks before every optimizer update. (No `DistributedDataParallel` wrapper: the tasks call
  the model's `encode` / `fuse` / `decode` / `heads` methods, which DDP's forward hooks would not see.)
- `RUN/config.yaml`, `RUN/metrics.jsonl`, TensorBoard scalars in `RUN/tb`, a progress bar, and
  `RUN/checkpoints/{last,best}.pt`, all written by rank 0 only and atomically;
- validation with best-model selection and early stopping;
- exact resume: batches and per-step generators are functions of (seed, step, rank), and model, optimizer,
  scheduler, scaler, RNG states, step and best value come back from `last.pt`. On CPU a resumed run is
  bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from p2gmed.config import Config, config_to_dict, dump_config
from p2gmed.errors import InputError
from p2gmed.io import write_text
from p2gmed.train import distributed as dist_utils
from p2gmed.train.checkpoint import load_checkpoint, restore_rng, save_checkpoint
from p2gmed.train.runtime import lr_factor, select_device, step_seed, to_device, truncate_metrics

logger = logging.getLogger(__name__)


class Task(Protocol):
    """What the engine needs from a task (see docs/design.md, "Training")."""

    def run_step(
        self,
        batch: dict[str, Any],
        step: int,
        generator: torch.Generator,
        after_modality: Callable[[], None] | None = None,
    ) -> dict[str, float]:
        """Forward and backward passes of one step; returns every unweighted term by name plus "loss"."""
        ...


class NonFiniteLossError(InputError):
    """The loss became NaN or infinite; the run stops without writing a checkpoint of that state."""


@dataclass
class Validation:
    """Periodic validation and best-model selection.

    Attributes:
        fn: model -> {metric name: value}; called under `torch.no_grad()` with the model in eval mode.
        metric: the name in `fn`'s result that selects `best.pt`.
        mode: "min" (lower is better) or "max".
    """

    fn: Callable[[torch.nn.Module], dict[str, float]]
    metric: str
    mode: str = "min"


class Trainer:
    """Runs a task for `max_steps` optimizer updates with logging, checkpoints, validation and resume.

    Args:
        model: the network (parameters optimised with AdamW); moved to the selected device.
        task: object with `run_step` (see `Task`); it must hold and use this same `model` object.
        batch_fn: step index (0-based) -> batch dict; must be a pure function of the step (and rank).
        cfg: resolved configuration (`cfg.train` drives the loop; the whole config goes into checkpoints).
        run_dir: the run folder RUN.
        task_name: "pretrain" | "synthesis" | "segmentation" (stored in checkpoints).
        out_channels, modalities, labels, architecture: what the model is (stored in checkpoints).
        spacing: the voxel spacing (mm, RAS) the model trains at (`data.spacing.training_spacing`), stored in
            checkpoints so that prediction resamples inputs to it.
        validation: optional periodic validation selecting `best.pt`.
        max_steps: overrides `cfg.train.max_steps`.
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
        labels: str | None = None,
        architecture: str = "p2g",
        spacing: tuple[float, float, float] | None = None,
        validation: Validation | None = None,
        max_steps: int | None = None,
        resume: bool = False,
    ):
        self.cfg = cfg
        self.tcfg = cfg.train
        self.run_dir = Path(run_dir)
        self.task = task
        self.batch_fn = batch_fn
        self.validation = validation
        self.resume = resume
        self.meta = dict(
            task=task_name,
            architecture=architecture,
            out_channels=out_channels,
            modalities=list(modalities),
            labels=labels,
        )
        self.spacing = list(spacing) if spacing is not None else None
        self.max_steps = int(max_steps if max_steps is not None else self.tcfg.max_steps)
        self.rank, self.world = dist_utils.rank(), dist_utils.world_size()
        self.device = select_device(self.tcfg.device)
        self.model = model.to(self.device)
        if validation is not None and validation.mode not in ("min", "max"):
            raise ValueError(f"validation mode must be min or max, got {validation.mode!r}")

        self.precision = self.tcfg.precision
        if self.precision == "fp16":
            if self.device.type != "cuda":
                raise InputError("train.precision fp16 needs a CUDA device; use bf16 or fp32 on CPU")
            if not hasattr(task, "scaler"):
                raise InputError(
                    "train.precision fp16 needs loss scaling, which this task does not support; use bf16"
                )
            if self.tcfg.update == "per_modality":
                raise InputError(
                    "train.precision fp16 cannot be combined with train.update per_modality; use bf16"
                )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        if hasattr(task, "scaler"):
            task.scaler = self.scaler if self.scaler.is_enabled() else None  # type: ignore[attr-defined]

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

    # ---------------------------------------------------------------------------------------------- paths
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
        if ckpt.get("scaler") is not None and self.scaler.is_enabled():
            self.scaler.load_state_dict(ckpt["scaler"])
        restore_rng(ckpt["rng"])
        if self.world > 1 and self.rank > 0:
            # the checkpoint holds rank 0's states; other ranks need their own streams
            torch.manual_seed(step_seed(self.tcfg.seed, ckpt["step"], self.rank))
        self.step = int(ckpt["step"])
        self.best = ckpt.get("best")
        self.bad_validations = int(ckpt.get("bad_validations", 0))

    # ---------------------------------------------------------------------------------------------- loop
    def _autocast(self):
        if self.precision == "fp32":
            return torch.autocast(self.device.type, enabled=False)
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _average_gradients(self) -> None:
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        if self.world > 1 and grads:
            flat = torch.cat([g.reshape(-1) for g in grads])
            torch.distributed.all_reduce(flat)
            flat /= self.world
            offset = 0
            for g in grads:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()

    def _optimizer_step(self) -> None:
        """Average gradients over ranks, unscale and clip, then one optimizer update."""
        self._average_gradients()
        if self.tcfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.tcfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def train_step(self) -> dict[str, float]:
        """One optimizer step (or one per modality); returns the task's terms plus lr."""
        index = self.step
        lr = self.optimizer.param_groups[0]["lr"]
        generator = torch.Generator().manual_seed(step_seed(self.tcfg.seed, index, self.rank))
        batch = to_device(self.batch_fn(index), self.device)
        self.optimizer.zero_grad(set_to_none=True)
        per_modality = self.tcfg.update == "per_modality"
        with self._autocast():
            terms = self.task.run_step(
                batch, index, generator, after_modality=self._optimizer_step if per_modality else None
            )
        terms = {k: float(v) for k, v in terms.items()}
        if "loss" not in terms:
            raise RuntimeError("the task's run_step must return a 'loss' entry")
        bad = sorted(k for k, v in terms.items() if not math.isfinite(v))
        if self.world > 1 and not bad and dist_utils.reduce_mean({"bad": 0.0})["bad"] > 0:
            bad = ["on another rank"]  # every rank must stop together, or the others hang in all_reduce
        elif self.world > 1 and bad:
            dist_utils.reduce_mean({"bad": 1.0})
        if bad:
            raise NonFiniteLossError(
                f"the loss became non-finite at step {index + 1} ({', '.join(bad)}); the run stopped and "
                f"{self.checkpoint_dir / 'last.pt'} keeps the last good state; lower train.lr, set "
                "train.grad_clip or use train.precision fp32"
            )
        if not per_modality:
            self._optimizer_step()
        self.scheduler.step()
        self.step = index + 1
        terms["lr"] = lr
        return terms

    def run_validation(self) -> dict[str, float]:
        """Validate (all ranks; results averaged), update best.pt and the early-stopping counter."""
        assert self.validation is not None
        was_training = self.model.training
        self.model.eval()
        # validation must not shift the training RNG streams (resume exactness)
        with (
            torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []),
            torch.no_grad(),
        ):
            with self._autocast():
                metrics = {k: float(v) for k, v in self.validation.fn(self.model).items()}
        self.model.train(was_training)
        metrics = dist_utils.reduce_mean(metrics)
        name, mode = self.validation.metric, self.validation.mode
        if name not in metrics:
            raise RuntimeError(f"validation returned no '{name}' (got {sorted(metrics)})")
        value = metrics[name]
        improved = math.isfinite(value) and (
            self.best is None or (value < self.best["value"] if mode == "min" else value > self.best["value"])
        )
        if improved:
            self.best = {"name": name, "value": value, "mode": mode, "step": self.step}
            self.bad_validations = 0
            self.save("best")
        else:
            self.bad_validations += 1
        return {f"val_{k}": v for k, v in metrics.items()}

    def _log(self, record: dict[str, float], writer: Any) -> None:
        if not self.is_main:
            return
        with open(self.metrics_path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if writer is not None:
            for key, value in record.items():
                if key == "step":
                    continue
                tag = key.replace("val_", "val/", 1) if key.startswith("val_") else f"loss/{key}"
                if key in ("lr", "seconds"):
                    tag = f"train/{key}"
                writer.add_scalar(tag, value, record["step"])

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
        writer = self._tensorboard()
        progress = self._progress()
        tc = self.tcfg
        self.model.train()
        try:
            while self.step < self.max_steps:
                start = time.perf_counter()
                record: dict[str, float] = {"step": self.step + 1}
                record.update(self.train_step())
                record["seconds"] = round(time.perf_counter() - start, 4)
                step, final = self.step, self.step == self.max_steps
                stop = False
                if self.validation is not None and (final or (tc.val_every > 0 and step % tc.val_every == 0)):
                    record.update(self.run_validation())
                    stop = tc.early_stopping > 0 and self.bad_validations >= tc.early_stopping
                if (
                    step % max(1, tc.log_every) == 0
                    or final
                    or stop
                    or any(k.startswith("val_") for k in record)
                ):
                    record = {
                        **record,
                        **{
                            k: v
                            for k, v in dist_utils.reduce_mean(
                                {k: v for k, v in record.items() if k not in ("step", "seconds")}
                            ).items()
                        },
                    }
                    self._log(record, writer)
                if progress is not None:
                    progress.update(1)
                    progress.set_postfix(loss=f"{record['loss']:.4f}")
                if final or stop or (tc.checkpoint_every > 0 and step % tc.checkpoint_every == 0):
                    self.save("last")
                if stop:
                    logger.info(
                        "early stopping at step %d: %d validations without improvement",
                        step,
                        self.bad_validations,
                    )
                    break
        finally:
            if progress is not None:
                progress.close()
            if writer is not None:
                writer.close()
        return last

    def _tensorboard(self) -> Any:
        if not self.is_main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional at run time
            logger.warning("tensorboard is not installed; RUN/tb is not written")
            return None
        # purge_step drops events a killed run wrote after its last checkpoint
        return SummaryWriter(str(self.run_dir / "tb"), purge_step=self.step + 1 if self.step else None)

    def _progress(self) -> Any:
        if not self.is_main:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.max_steps, initial=self.step, desc=self.meta["task"], unit="step", leave=False)
