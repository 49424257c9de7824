"""The p2gmed checkpoint: what it holds, how it is written (atomically) and read back (validated).

A checkpoint is one `torch.save`d dict with the keys of `CHECKPOINT_KEYS` (see docs/design.md): the model,
optimizer, scheduler and AMP-scaler states, the number of completed optimizer steps, every RNG state, the
resolved configuration, what the model is (task, architecture, output channels, modality names, label
convention), the best validation value so far and the package / MONAI / torch versions.

Everything is stored as tensors and plain Python values so that it loads with `torch.load(weights_only=True)`:
reading a checkpoint never runs code from the file.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import monai
import numpy as np
import torch

from p2gmed import __version__
from p2gmed.errors import InputError
from p2gmed.io import save_torch

logger = logging.getLogger(__name__)

#: keys every p2gmed checkpoint has (load_checkpoint refuses a dict lacking any of them)
CHECKPOINT_KEYS = (
    "model",
    "step",
    "config",
    "task",
    "architecture",
    "out_channels",
    "modalities",
    "versions",
)
#: keys that only a training checkpoint needs for resume (an exported/stripped checkpoint may lack them)
RESUME_KEYS = ("optimizer", "scheduler", "scaler", "rng", "best")

#: MONAI 1.5 changed SwinUNETR's PatchMerging: weights cross this boundary silently but compute other features
MONAI_FEATURE_BREAK = (1, 5)


def versions() -> dict[str, str]:
    """Versions recorded in every checkpoint: {p2gmed, monai, torch}."""
    return {"p2gmed": str(__version__), "monai": str(monai.__version__), "torch": str(torch.__version__)}


# --------------------------------------------------------------------------------------------------
# RNG state as tensors and plain values (loadable with weights_only=True)


def capture_rng() -> dict[str, Any]:
    """The Python, NumPy, torch-CPU and (if present) CUDA generator states of this process."""
    py_version, py_internal, py_gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": {
            "version": py_version,
            "internal": torch.tensor(py_internal, dtype=torch.int64),
            "gauss": py_gauss,
        },
        "numpy": {
            "kind": np_kind,
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of `capture_rng`. CUDA states are restored only when the device count matches."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["internal"].tolist()), py["gauss"]))
    nps = state["numpy"]
    np.random.set_state(
        (nps["kind"], nps["keys"].numpy().astype(np.uint32), nps["pos"], nps["has_gauss"], nps["gauss"])
    )
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            logger.warning(
                "checkpoint holds %d CUDA RNG states for %d devices; not restored",
                len(cuda),
                torch.cuda.device_count(),
            )


# --------------------------------------------------------------------------------------------------
# Save / load


def save_checkpoint(
    path: str | Path,
    *,
    model: torch.nn.Module | dict[str, torch.Tensor],
    step: int,
    config: dict,
    task: str,
    architecture: str,
    out_channels: int,
    modalities: list[str] | tuple[str, ...],
    labels: str | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    best: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write a checkpoint atomically (temp file in the same folder, then rename).

    A save that fails half-way leaves any previous file at `path` untouched.

    Args:
        path: target file, e.g. RUN/checkpoints/last.pt.
        model: the module (its state dict is stored; a DDP wrapper is unwrapped) or a state dict.
        step: completed optimizer steps.
        config: the resolved configuration as a dict (`p2gmed.config.config_to_dict`).
        task: "pretrain" | "synthesis" | "segmentation".
        architecture: "p2g" | "swinunetr" | "unetr".
        out_channels: channels the model outputs.
        modalities: modality names in channel order.
        labels: label convention of a segmentation model, or None.
        optimizer, scheduler, scaler: objects with `state_dict()`, or None.
        best: {"name", "value", "mode", "step"} of the best validation so far, or None.
        extra: more keys to store (must not clash with the standard ones).

    Returns:
        The dict that was saved.
    """
    if isinstance(model, torch.nn.Module):
        model = getattr(model, "module", model).state_dict()
    ckpt: dict[str, Any] = {
        "model": model,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "step": int(step),
        "rng": capture_rng(),
        "config": config,
        "task": task,
        "architecture": architecture,
        "out_channels": int(out_channels),
        "modalities": list(modalities),
        "labels": labels,
        "best": dict(best) if best else None,
        "versions": versions(),
    }
    for key, value in (extra or {}).items():
        if key in ckpt:
            raise ValueError(f"extra checkpoint key '{key}' clashes with a standard key")
        ckpt[key] = value
    save_torch(ckpt, path)
    return ckpt


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and validate a p2gmed checkpoint.

    Args:
        path: checkpoint file.
        map_location: where tensors are loaded.

    Returns:
        The checkpoint dict (keys: see `CHECKPOINT_KEYS` and `RESUME_KEYS`).

    Raises:
        InputError: one sentence naming the file when it is missing, not a (complete) torch file, holds
            objects that cannot be loaded safely, or is not a p2gmed checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to unpickle means the file is not a usable checkpoint
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        # torch's weights-only message puts the actual reason on a later "WeightsUnpickler error" line
        reason = next(
            (line for line in lines if "Unpickler error" in line), lines[0] if lines else type(exc).__name__
        )
        raise InputError(
            f"checkpoint {path} cannot be read as a torch file (truncated, corrupt or holding objects that "
            f"are not loaded for safety: {reason[:160]})"
        ) from None
    if not isinstance(ckpt, dict) or any(key not in ckpt for key in CHECKPOINT_KEYS):
        missing = [k for k in CHECKPOINT_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
        raise InputError(f"{path} is not a p2gmed checkpoint (it lacks {', '.join(missing)})")
    return ckpt


def _version_tuple(text: str) -> tuple[int, int]:
    parts = []
    for piece in str(text).split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    while len(parts) < 2:
        parts.append(0)
    return parts[0], parts[1]


def check_monai_version(
    ckpt: dict[str, Any], *, path: str | Path = "checkpoint", allow: bool = False
) -> None:
    """Refuse weights written on the other side of MONAI's 1.5 SwinUNETR change (PatchMerging).

    Weights load without any key or shape error across that change but compute different features, so a
    silent load would give wrong results.

    Args:
        ckpt: a loaded checkpoint.
        path: shown in the messages.
        allow: only warn instead of refusing (the user accepts the risk, e.g. to fine-tune anyway).

    Raises:
        InputError: the checkpoint's MONAI version and the installed one lie on different sides of 1.5.
    """
    saved = (ckpt.get("versions") or {}).get("monai")
    if saved is None:
        logger.warning("%s does not record its MONAI version; SwinUNETR features may differ", path)
        return
    old_side = _version_tuple(saved) < MONAI_FEATURE_BREAK
    now_old = _version_tuple(monai.__version__) < MONAI_FEATURE_BREAK
    if old_side == now_old:
        return
    message = (
        f"{path} was written with MONAI {saved} but MONAI {monai.__version__} is installed; SwinUNETR's "
        "PatchMerging changed in MONAI 1.5, so these weights would load but compute different features"
    )
    if allow:
        logger.warning(message)
        return
    raise InputError(message)
