"""Prediction of one case's arrays: any subsets of modalities in, every modality and a segmentation out.

`predict_subsets` is the core (arrays in, nibabel images out, nothing written): per model, native -> working grid
(RAS, the spacing the model was trained at, as nnU-Net does; `resample=False` keeps the native spacing),
normalisation as in training (once per modality), one sliding window whose network call predicts every requested
subset (`forward_subsets`: each modality encoded once per window; optionally mirrored, `tta`), working -> native
grid; several models of one kind are an ensemble whose outputs are averaged on the native grid; then, per subset
and using only that subset's scans, inverse normalisation, foreground and segmentation post-processing.
`predict_volumes` (one subset: all the given modalities) serves the Python API (`api.py`); files in and out are
`cases.py` (`p2g predict`).

Intensity of synthesized outputs (see `intensity.py`): MRI goes back on the scale of the given MRI scans, CT to HU,
PET to SUV. Given modalities are copied through unchanged by default (`reconstruct_given=False`) and are then not
part of a `Prediction`.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from p2gmed.data.layouts import classes_to_labels
from p2gmed.data.normalization import NormStats
from p2gmed.data.volumes import subject_foreground
from p2gmed.errors import InputError
from p2gmed.inference import intensity
from p2gmed.inference.geometry import NativeGeometry, WorkingGrid, native_image
from p2gmed.inference.models import LoadedModel, ensembles
from p2gmed.inference.naming import NAMINGS, SEG
from p2gmed.inference.postprocess import filter_lesions
from p2gmed.inference.sliding import sliding_predict
from p2gmed.modalities import canonical

__all__ = ["NAMINGS", "SEG", "PredictOptions", "Prediction", "check_inputs", "predict_subsets", "predict_volumes"]

log = logging.getLogger(__name__)

#: the mirror combinations of test-time augmentation (spatial axes of a (B, C, D, H, W) batch), as nnU-Net
MIRROR_AXES = ((), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4))

@dataclass
class PredictOptions:
    """How to predict; None takes the value from the (first) model's `cfg.inference`.

    Attributes:
        overlap: sliding-window overlap in [0, 1).
        sw_batch_size: windows per forward pass.
        mode: "gaussian" or "constant" blending.
        stitch: "cpu", "same" or "auto": where the stitched volume is accumulated.
        reconstruct_given: write the model's reconstruction of the given modalities instead of copying them.
        progress: show MONAI's window progress bar.
        resample: work at the spacing each model was trained at (and back); False keeps the input's spacing.
        tta: average the predictions of the 8 mirrorings of every window (8x the network cost).
        naming: output file names, one of `NAMINGS`.
        lesions: segmentation post-processing, "all", "largest" or "core" (inference/postprocess.py).
    """

    overlap: float | None = None
    sw_batch_size: int | None = None
    mode: str | None = None
    stitch: str | None = None
    reconstruct_given: bool = False
    progress: bool = False
    resample: bool = True
    tta: bool = False
    naming: str = "p2g"
    lesions: str | None = None

    def lesion_filter(self, model: LoadedModel) -> str:
        """The lesion filter for a segmentation model: this option, else the model's `inference.lesions`."""
        return self.lesions or model.cfg.inference.lesions

    def resolved(self, model: LoadedModel) -> dict[str, Any]:
        inf = model.cfg.inference
        stitch = self.stitch if self.stitch is not None else inf.stitch_device
        return {
            "overlap": inf.overlap if self.overlap is None else float(self.overlap),
            "sw_batch_size": inf.sw_batch_size if self.sw_batch_size is None else int(self.sw_batch_size),
            "mode": inf.mode if self.mode is None else self.mode,
            "stitch": stitch,
            "tta": "mirroring, 8 passes" if self.tta else None,
            **({"lesions": self.lesion_filter(model)} if model.segments else {}),
        }


def check_inputs(models: list[LoadedModel], inputs: dict) -> tuple[dict, list[str]]:
    """Canonical modality names of the inputs, each known to a model; and the modalities the outputs hold.

    Returns:
        (given, written): inputs by canonical name (values unchanged), and every modality output in a stable
        order (the synthesis model's modalities, then the other given ones).
    """
    if not inputs:
        raise InputError("no input modality given")
    given: dict = {}
    for name, source in inputs.items():
        modality = canonical(name)
        if modality in given:
            raise InputError(f"modality {modality} is given twice")
        given[modality] = source
    known = [m for model in models for m in model.modalities]
    for modality, source in given.items():
        if modality not in known:
            names = ", ".join(dict.fromkeys(known))
            what = source if isinstance(source, (str, Path)) else "an input"
            raise InputError(f"{what} is given as {modality}, which the model(s) do not know (they know {names})")
    synth = next((m for m in models if m.synthesizes), None)
    written = list(synth.modalities) if synth else []
    written += [m for m in given if m not in written]
    return given, written


def _predictor(model: LoadedModel, rows: torch.Tensor, tta: bool):
    """The network on one batch of windows, (b, M, *roi) -> (b, K*C, *roi): the K subsets' outputs (`rows`, (K, M)
    bool) side by side as channels, so that one sliding window stitches them all; with `tta` the mean over the 8
    mirrorings (flipped back)."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        return model.model.forward_subsets(x, rows).flatten(1, 2)

    def run(x: torch.Tensor) -> torch.Tensor:
        if not tta:
            return forward(x)
        total = None
        for axes in MIRROR_AXES:
            out = forward(torch.flip(x, axes) if axes else x)
            out = torch.flip(out, axes) if axes else out
            total = out if total is None else total + out
        return total / len(MIRROR_AXES)

    return run


def _run_model(
    model: LoadedModel,
    arrays: dict[str, np.ndarray],
    grid: WorkingGrid,
    subsets: list[tuple[str, ...]],
    options: PredictOptions,
    device: torch.device,
) -> tuple[np.ndarray, dict[str, NormStats]]:
    """Normalise the given modalities on the model's working grid once and predict every subset in one pass.

    Args:
        arrays: canonical modality -> native array; every modality of `subsets` is there.
        subsets: K subsets; each shares at least one modality with the model.

    Returns:
        (outputs, stats): (K, C, D, H, W) float32 model outputs on the working grid, subset k in [k]; per given
        modality of the model the normalisation statistics (for the inverse).
    """
    modalities = model.modalities
    image = np.zeros((len(modalities), *grid.shape), dtype=np.float32)  # (M, D, H, W), missing stay zero
    stats: dict[str, NormStats] = {}
    for i, modality in enumerate(modalities):
        if modality in arrays:
            working = grid.to_working(arrays[modality])
            image[i], stats[modality] = intensity.normalize(working, modality, model.cfg.data)
    rows = torch.tensor([[m in subset for m in modalities] for subset in subsets], dtype=torch.bool)
    settings = options.resolved(model)
    output = sliding_predict(
        _predictor(model, rows.to(device), options.tta),
        torch.from_numpy(image)[None],
        model.cfg.data.roi_size,
        overlap=settings["overlap"],
        sw_batch_size=settings["sw_batch_size"],
        mode=settings["mode"],
        device=device,
        stitch=settings["stitch"],
        out_channels=len(subsets) * model.out_channels,
        progress=options.progress,
    )
    return output[0].float().cpu().numpy().reshape(len(subsets), model.out_channels, *output.shape[2:]), stats


def _native_output(model: LoadedModel, output: np.ndarray, grid: WorkingGrid) -> np.ndarray:
    """(C, D, H, W) working-grid output -> (C, X, Y, Z) on the native grid.

    Segmentation: class probabilities (softmax of the logits), resampled linearly as nnU-Net does; the argmax is
    taken on the native grid after the ensemble average. Synthesis: the normalised intensities.
    """
    if model.segments:
        output = torch.softmax(torch.from_numpy(output), dim=0).numpy()
    return grid.to_native(output, order=1)


@dataclass
class Prediction:
    """What the models produced for one case, on its native grid (nothing written).

    Attributes:
        images: output key (modality or "seg") -> NIfTI image with the native shape, affine and header.
        sources: output key -> "synthesized", "reconstructed" or "segmented".
        units: modality -> the statistics that brought it back to native units.
        grids: per model, its working grid (JSON-ready).
    """

    images: dict[str, nib.Nifti1Image] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    units: dict[str, dict] = field(default_factory=dict)
    grids: list[dict] = field(default_factory=list)


def _add_outputs(
    model: LoadedModel,
    mean: np.ndarray,
    arrays: dict[str, np.ndarray],
    stats: dict[str, NormStats],
    geometry: NativeGeometry,
    options: PredictOptions,
    prediction: Prediction,
) -> None:
    """Turn one ensemble's mean output (C, X, Y, Z) for one subset into images; `arrays` and `stats` hold only that
    subset's modalities, which decide the foreground, the intensity scale and what is given."""
    if model.segments:
        classes = torch.from_numpy(mean.argmax(0))
        labels = classes_to_labels(classes, model.labels).numpy().astype(np.uint8)
        # nothing is segmented outside the patient (brain / body), whatever the network says there
        labels[~subject_foreground(arrays, model.cfg.data.body_hu)] = 0
        labels = filter_lesions(labels, options.lesion_filter(model), model.labels)
        prediction.images[SEG] = native_image(labels, geometry, np.uint8, f"p2gmed segmentation ({model.labels})")
        prediction.sources[SEG] = "segmented"
        return
    mask = intensity.foreground(arrays)
    for i, modality in enumerate(model.modalities):
        if modality in arrays and not options.reconstruct_given:
            continue
        norm = intensity.output_stats(modality, stats, model.cfg.data)
        volume = intensity.to_native_units(mean[i], modality, norm, mask)
        kind = "reconstructed" if modality in arrays else "synthesized"
        prediction.images[modality] = native_image(volume, geometry, np.float32, f"p2gmed {kind} {modality}")
        prediction.sources[modality] = kind
        prediction.units[modality] = norm.to_dict()


def predict_subsets(
    models: list[LoadedModel],
    arrays: dict[str, np.ndarray],
    geometry: NativeGeometry | Sequence[NativeGeometry],
    subsets: Sequence[Collection[str]],
    options: PredictOptions | None = None,
    device: str | torch.device = "cpu",
) -> list[Prediction]:
    """Predict one case from each of several subsets of its modalities, with one sliding window per model.

    The given modalities are normalised once and every window is encoded once per modality
    (`forward_subsets`); prediction k is what `predict_volumes` gives from `{m: arrays[m] for m in subsets[k]}`.
    The stitched outputs of all subsets are held at once (K times the memory of one subset).

    Args:
        models: checked with `check_models`; models of one kind are averaged (ensemble).
        arrays: canonical modality -> float32 (X, Y, Z) in the native voxel order (`geometry.load_case`).
        geometry: the arrays' common native geometry; or one per subset (the affine and header its images carry,
            e.g. those of its first modality; the first one is the grid computed on).
        subsets: K non-empty collections of modalities of `arrays`.
        options: sliding-window, resampling, mirroring and output settings.
        device: compute device.

    Returns:
        K predictions, in the order of `subsets`.

    Raises:
        InputError: a subset that is empty or names a modality missing from `arrays`.
    """
    options = options or PredictOptions()
    device = torch.device(device)
    subsets = [tuple(s) for s in subsets]
    for subset in subsets:
        if not subset or not set(subset) <= set(arrays):
            raise InputError(f"the subset '{'+'.join(subset)}' is not a non-empty subset of the given modalities "
                             f"({', '.join(arrays)})")
    geometries = list(geometry) if isinstance(geometry, Sequence) else [geometry] * len(subsets)
    if len(geometries) != len(subsets):
        raise ValueError(f"{len(geometries)} geometries for {len(subsets)} subsets")
    predictions = [Prediction() for _ in subsets]
    for group in ensembles(models):
        first = group[0]
        grouped = [WorkingGrid(geometries[0], m.spacing if options.resample else None) for m in group]
        for prediction in predictions:
            prediction.grids.extend(g.describe() for g in grouped)
        # a subset that gives every modality of a synthesis model has nothing to synthesize (they are copied)
        copied = first.synthesizes and not options.reconstruct_given
        needed = [k for k, s in enumerate(subsets) if not (copied and set(first.modalities) <= set(s))]
        if not needed:
            continue
        chosen = [subsets[k] for k in needed]
        used = {m: a for m, a in arrays.items() if any(m in s for s in chosen)}
        totals: list = [None] * len(chosen)
        stats: dict[str, NormStats] = {}
        for model, grid in zip(group, grouped):
            outputs, model_stats = _run_model(model, used, grid, chosen, options, device)
            for j, output in enumerate(outputs):
                native = _native_output(model, output, grid)
                totals[j] = native if totals[j] is None else totals[j] + native
            stats = stats or model_stats
        for j, k in enumerate(needed):
            own = {m: arrays[m] for m in subsets[k]}
            mean = totals[j] / len(group)  # (C, X, Y, Z): the ensemble average
            _add_outputs(first, mean, own, {m: s for m, s in stats.items() if m in own}, geometries[k], options,
                         predictions[k])
    return predictions


def predict_volumes(
    models: list[LoadedModel],
    arrays: dict[str, np.ndarray],
    geometry: NativeGeometry,
    options: PredictOptions | None = None,
    device: str | torch.device = "cpu",
) -> Prediction:
    """Run the models on one case's arrays: the core of `predict_case` and of the Python API.

    Args:
        models: checked with `check_models`; models of one kind are averaged (ensemble).
        arrays: canonical modality -> float32 (X, Y, Z) in the native voxel order (`geometry.load_case`).
        geometry: the arrays' common native geometry.
        options: sliding-window, resampling, mirroring and output settings.
        device: compute device.

    Returns:
        the synthesized (or reconstructed) modalities and the segmentation; given modalities that are copied
        through are not part of it.
    """
    return predict_subsets(models, arrays, geometry, [tuple(arrays)], options, device)[0]


