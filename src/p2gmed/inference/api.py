"""The Python API: `p2gmed.load(checkpoints)` and `.predict({modality: image})`, images in and images out.

    import p2gmed
    model = p2gmed.load(["syn.pt", "seg.pt"])            # training or exported (`p2g export --format p2g`)
    out = model.predict({"t1n": "t1.nii.gz", "t2f": (array, affine)})
    out["t2w"], out["seg"]                                 # nibabel images on the input's grid

Inputs may be NIfTI paths, nibabel images or (array (X, Y, Z), affine (4, 4)) pairs, any subset of the modalities
the models know, all on one grid. Nothing is written to disk. `p2g predict` is a thin file-writing user of the
same core (`predict.predict_volumes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from p2gmed.errors import InputError
from p2gmed.inference.geometry import ImageSource, load_case, native_image
from p2gmed.inference.models import LoadedModel, check_models, load_models
from p2gmed.inference.predict import SEG, PredictOptions, check_inputs, predict_volumes


class P2GModel:
    """One or more loaded checkpoints (synthesis and/or segmentation; several of one kind are an ensemble).

    Args:
        models: loaded models (see `load`).
        device: where they run.
        options: default prediction settings (overlap, mirroring, resampling, ...); `predict` may override them.

    Attributes:
        modalities: every modality name some model reads.
        outputs: the keys `predict` returns: the synthesis model's modalities (else the given ones) and "seg".
    """

    def __init__(self, models: list[LoadedModel], device: torch.device, options: PredictOptions | None = None):
        check_models(models)
        self.models = models
        self.device = device
        self.options = options or PredictOptions()
        self.last_info: dict[str, Any] = {}

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m for model in self.models for m in model.modalities))

    @property
    def outputs(self) -> tuple[str, ...]:
        synth = next((m for m in self.models if m.synthesizes), None)
        keys = list(synth.modalities) if synth else []
        return tuple(keys + ([SEG] if any(m.segments for m in self.models) else []))

    def predict(self, inputs: dict[str, ImageSource], **options: Any) -> dict[str, nib.Nifti1Image]:
        """Every modality the models know, and "seg", from any subset of one case's modalities.

        Args:
            inputs: modality name (any accepted spelling, e.g. "t1n" or "t1") -> NIfTI path, nibabel image or
                (array, affine) pair; all on one grid.
            **options: fields of `PredictOptions` for this call (e.g. `tta=True`, `reconstruct_given=True`,
                `resample=False`, `overlap=0.5`).

        Returns:
            modality -> float32 image (given ones as given, unless `reconstruct_given`; synthesized MRI on the
            given scans' scale, CT in HU, PET in SUV) and "seg" -> uint8 label image, each with the inputs'
            shape and affine. `self.last_info` then says which outputs were given, synthesized or segmented.

        Raises:
            InputError: an unknown modality name, inputs on different grids, an unreadable or NaN input.
        """
        settings = _options({**vars(self.options), **options})
        given, written = check_inputs(self.models, inputs)
        arrays, geometry = load_case(given)
        prediction = predict_volumes(self.models, arrays, geometry, settings, self.device)
        out: dict[str, nib.Nifti1Image] = {}
        sources: dict[str, str] = {}
        for modality in written:
            if modality in prediction.images:
                out[modality], sources[modality] = prediction.images[modality], prediction.sources[modality]
            else:
                out[modality] = native_image(arrays[modality], geometry, np.float32, f"given {modality}")
                sources[modality] = "given"
        if SEG in prediction.images:
            out[SEG], sources[SEG] = prediction.images[SEG], "segmented"
        self.last_info = {"sources": sources, "working_grids": prediction.grids, "units": prediction.units}
        return out

    def __repr__(self) -> str:
        kinds = ", ".join(f"{m.task} {m.path.name}" for m in self.models)
        return f"P2GModel({kinds}; reads {', '.join(self.modalities)}; on {self.device})"


def load(
    path_or_paths: str | Path | Sequence[str | Path], device: str | torch.device = "auto", **options: Any
) -> P2GModel:
    """Load p2gmed checkpoints (training or exported) for prediction.

    Args:
        path_or_paths: one checkpoint or several: at most one kind each of synthesis (or pre-training) and
            segmentation, or several of one kind to average them (an ensemble of folds).
        device: "auto" (CUDA when available), "cpu", "cuda", "cuda:N" or a torch.device.
        **options: default `PredictOptions` for every `predict` call (e.g. `tta=True`, `overlap=0.5`).

    Raises:
        InputError: a file that is not a usable p2gmed checkpoint, or models that do not fit together.
    """
    from p2gmed.device import resolve_device

    paths = [path_or_paths] if isinstance(path_or_paths, (str, Path)) else list(path_or_paths)
    from p2gmed.inference.postprocess import check_lesion_filter

    resolved = device if isinstance(device, torch.device) else resolve_device(str(device))
    defaults = _options(options)
    models = load_models(paths, resolved)
    for m in models:
        if m.segments:  # refused before any work, not after the first case's network pass
            check_lesion_filter(defaults.lesion_filter(m), m.labels)
    return P2GModel(models, resolved, defaults)


def _options(values: dict[str, Any]) -> PredictOptions:
    """`PredictOptions` from keyword arguments; InputError naming an unknown one."""
    import dataclasses

    known = {f.name for f in dataclasses.fields(PredictOptions)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(f"unknown prediction option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return PredictOptions(**values)
