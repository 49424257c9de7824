"""Prediction of one case: any subset of modalities in, every modality and a segmentation out, native geometry.

`predict_volumes` is the core (arrays in, nibabel images out, nothing written); the Python API (`api.py`) and
`predict_case` (files in, files out, used by `p2g predict`) are its two users. Steps of `predict_case` (everything
is validated before the first byte is written):

1. names: every input modality is canonical and known to a model; no output path is an input file;
2. `geometry.load_case`: files readable, 3D, finite, one shared shape and affine;
3. per model: native -> working grid (RAS, the spacing the model was trained at, as nnU-Net does; `resample=False`
   keeps the native spacing), normalisation as in training, sliding-window prediction with `forward_subset` on
   the available modalities (optionally mirrored, `tta`), inverse normalisation, working -> native grid; several
   models of one kind are an ensemble whose outputs are averaged on the native grid;
4. all outputs are written to temporary files, then renamed together (`p2gmed.io.atomic_path`).

Intensity of synthesized outputs (see `intensity.py`): MRI goes back on the scale of the given MRI scans, CT to HU,
PET to SUV. Given modalities are copied through unchanged by default (`reconstruct_given=False`); the sidecar
`<case>.json` marks each output "given", "synthesized" or "reconstructed".
"""

from __future__ import annotations

import contextlib
import json
import logging
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from p2gmed.data.normalization import NormStats
from p2gmed.data.volumes import subject_foreground
from p2gmed.errors import InputError
from p2gmed.inference import intensity
from p2gmed.inference.geometry import NativeGeometry, WorkingGrid, load_case, native_image
from p2gmed.inference.models import LoadedModel, check_models, ensembles
from p2gmed.inference.sliding import sliding_predict
from p2gmed.io import atomic_path
from p2gmed.inference.naming import NAMINGS, SEG, case_name_from_inputs, output_name
from p2gmed.modalities import canonical

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

    def resolved(self, model: LoadedModel) -> dict[str, Any]:
        inf = model.cfg.inference
        stitch = self.stitch if self.stitch is not None else inf.stitch_device
        return {
            "overlap": inf.overlap if self.overlap is None else float(self.overlap),
            "sw_batch_size": inf.sw_batch_size if self.sw_batch_size is None else int(self.sw_batch_size),
            "mode": inf.mode if self.mode is None else self.mode,
            "stitch": stitch,
            "tta": "mirroring, 8 passes" if self.tta else None,
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


def expected_files(models: list[LoadedModel], written: list[str], case: str, naming: str = "p2g") -> list[str]:
    """Every file `predict_case` writes for a case: images, segmentation, then the sidecar `<case>.json`."""
    names = [output_name(case, m, naming) for m in written]
    if any(m.segments for m in models):
        names.append(output_name(case, SEG, naming))
    return [*names, f"{case}.json"]


def _check_request(
    models: list[LoadedModel], inputs: dict[str, Path], out_dir: Path, case: str, naming: str = "p2g"
) -> tuple[dict[str, Path], list[str]]:
    """Validate names and paths; return canonical inputs and the modalities to write, in a stable order."""
    if not case or any(ch in case for ch in "/\\") or case in (".", ".."):
        raise InputError(f"case name '{case}' is not a plain file-name stem")
    given, written = check_inputs(models, inputs)
    given = {m: Path(p) for m, p in given.items()}
    targets = [out_dir / name for name in expected_files(models, written, case, naming)]
    for target in targets:
        for path in given.values():
            if target.resolve() == path.resolve() or (target.exists() and path.exists() and target.samefile(path)):
                raise InputError(f"output {target} would overwrite the input file {path}; choose another --out")
    return given, written


def _predictor(model: LoadedModel, mask: torch.Tensor, tta: bool):
    """The network on one batch of windows; with `tta` the mean over the 8 mirrorings (flipped back)."""

    def run(x: torch.Tensor) -> torch.Tensor:
        if not tta:
            return model.model.forward_subset(x, mask)
        total = None
        for axes in MIRROR_AXES:
            xi = torch.flip(x, axes) if axes else x
            out = model.model.forward_subset(xi, mask)
            out = torch.flip(out, axes) if axes else out
            total = out if total is None else total + out
        return total / len(MIRROR_AXES)

    return run


def _run_model(
    model: LoadedModel,
    arrays: dict[str, np.ndarray],
    grid: WorkingGrid,
    options: PredictOptions,
    device: torch.device,
) -> tuple[np.ndarray, dict[str, NormStats]]:
    """Normalise the model's given modalities on its working grid and predict the whole volume.

    Returns:
        (output, stats): (C, D, H, W) float32 model output on the working grid; per given modality the
        normalisation statistics (for the inverse).
    """
    modalities = model.modalities
    image = np.zeros((len(modalities), *grid.shape), dtype=np.float32)  # (M, D, H, W), missing stay zero
    available = torch.zeros(len(modalities), dtype=torch.bool)
    stats: dict[str, NormStats] = {}
    for i, modality in enumerate(modalities):
        if modality in arrays:
            working = grid.to_working(arrays[modality])
            image[i], stats[modality] = intensity.normalize(working, modality, model.cfg.data)
            available[i] = True
    settings = options.resolved(model)
    output = sliding_predict(
        _predictor(model, available.to(device), options.tta),
        torch.from_numpy(image)[None],
        model.cfg.data.roi_size,
        overlap=settings["overlap"],
        sw_batch_size=settings["sw_batch_size"],
        mode=settings["mode"],
        device=device,
        stitch=settings["stitch"],
        out_channels=model.out_channels,
        progress=options.progress,
    )
    return output[0].float().cpu().numpy(), stats


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

    images: dict[str, nib.Nifti1Image]
    sources: dict[str, str]
    units: dict[str, dict]
    grids: list[dict]


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
    options = options or PredictOptions()
    device = torch.device(device)
    images: dict[str, nib.Nifti1Image] = {}
    sources: dict[str, str] = {}
    units: dict[str, dict] = {}
    grids: list[dict] = []
    for group in ensembles(models):
        first = group[0]
        grouped = [WorkingGrid(geometry, m.spacing if options.resample else None) for m in group]
        grids.extend(g.describe() for g in grouped)
        if first.synthesizes and not options.reconstruct_given and set(first.modalities) <= set(arrays):
            continue  # every modality is given and copied: nothing to synthesize
        total, stats = None, {}
        for model, grid in zip(group, grouped):
            own = {m: a for m, a in arrays.items() if m in model.modalities}
            output, model_stats = _run_model(model, own, grid, options, device)
            native = _native_output(model, output, grid)
            total = native if total is None else total + native
            stats = stats or model_stats
        mean = total / len(group)  # (C, X, Y, Z): the ensemble average
        if first.segments:
            classes = torch.from_numpy(mean.argmax(0))
            from p2gmed.data.layouts import classes_to_labels

            labels = classes_to_labels(classes, first.labels).numpy().astype(np.uint8)
            # nothing is segmented outside the patient (brain / body), whatever the network says there
            labels[~subject_foreground(arrays, first.cfg.data.body_hu)] = 0
            images[SEG] = native_image(labels, geometry, np.uint8, f"p2gmed segmentation ({first.labels})")
            sources[SEG] = "segmented"
            continue
        mask = intensity.foreground(arrays)
        for i, modality in enumerate(first.modalities):
            if modality in arrays and not options.reconstruct_given:
                continue
            norm = intensity.output_stats(modality, stats, first.cfg.data)
            volume = intensity.to_native_units(mean[i], modality, norm, mask)
            kind = "reconstructed" if modality in arrays else "synthesized"
            images[modality] = native_image(volume, geometry, np.float32, f"p2gmed {kind} {modality}")
            sources[modality] = kind
            units[modality] = norm.to_dict()
    return Prediction(images, sources, units, grids)


def _peak_memory(device: torch.device) -> dict[str, float]:
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    peak = {"peak_host_rss_mib": round(rss_kib / 1024, 1)}
    if device.type == "cuda":
        peak["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return peak


def predict_case(
    models: list[LoadedModel],
    inputs: dict[str, Path],
    out_dir: str | Path,
    case: str | None = None,
    options: PredictOptions | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Predict every modality the models know, and the segmentation, for one case, into files.

    Args:
        models: synthesis-capable models (task synthesis or pretrain), segmentation models, or both; several of
            one kind are averaged.
        inputs: modality name (any accepted spelling) -> NIfTI file; any non-empty subset.
        out_dir: output folder (created).
        case: output file stem; default derived from the first input's file name.
        options: sliding-window, resampling, mirroring, naming and output settings.
        device: compute device of the models.

    Returns:
        The sidecar dict, also written to `<out_dir>/<case>.json`.

    Raises:
        InputError: unknown modality, geometry mismatch (naming both files), unreadable or NaN input, an output that
            would overwrite an input, an unusable model combination. Nothing is written then.
    """
    start = time.perf_counter()
    options = options or PredictOptions()
    device = torch.device(device)
    out_dir = Path(out_dir)
    check_models(models)
    case = case or case_name_from_inputs(inputs)
    given, written = _check_request(models, inputs, out_dir, case, options.naming)
    arrays, geometry = load_case(given)
    prediction = predict_volumes(models, arrays, geometry, options, device)
    images: dict[str, nib.Nifti1Image | Path] = dict(prediction.images)  # or a file to copy through
    sources = dict(prediction.sources)
    for modality in written:
        if modality not in images:
            images[modality] = given[modality]
            sources[modality] = "given"
    sidecar = _sidecar(case, given, written, sources, prediction, models, options, device, geometry)
    sidecar["runtime"] = {"seconds": round(time.perf_counter() - start, 3), **_peak_memory(device)}
    _write_all(images, sidecar, out_dir, case, options.naming)
    return sidecar


def _sidecar(case, given, written, sources, prediction, models, options, device, geometry) -> dict[str, Any]:
    from p2gmed.train.checkpoint import versions

    naming = options.naming
    outputs: dict[str, dict] = {m: {"file": output_name(case, m, naming), "source": sources[m]} for m in written}
    for modality, stats in prediction.units.items():
        outputs[modality]["intensity"] = stats
    if SEG in sources:
        seg_model = next(m for m in models if m.segments)
        outputs[SEG] = {"file": output_name(case, SEG, naming), "source": "segmented", "labels": seg_model.labels}
    return {
        "case": case,
        "inputs": {m: str(p) for m, p in given.items()},
        "given": list(given),
        "synthesized": [m for m in written if sources[m] == "synthesized"],
        "outputs": outputs,
        "given_outputs": "reconstructed by the model" if options.reconstruct_given else "copied from the inputs",
        "models": [
            {**m.describe(), "working_grid": g, "inference": options.resolved(m)}
            for m, g in zip([m for group in ensembles(models) for m in group], prediction.grids)
        ],
        "ensembles": {
            ("segmentation" if group[0].segments else "synthesis"): len(group) for group in ensembles(models)
        },
        "resampling": "to each model's training spacing and back" if options.resample else "off (native grid)",
        "device": str(device),
        "geometry": {
            "reference": str(geometry.reference),
            "shape": list(geometry.shape),
            "affine": np.round(geometry.affine, 6).tolist(),
            "orientation": geometry.axcodes,
            "spacing": [round(v, 6) for v in geometry.zooms],
        },
        "intensity": intensity.DESCRIPTION,
        "versions": versions(),
    }


def _write_all(
    images: dict[str, nib.Nifti1Image | Path], sidecar: dict, out_dir: Path, case: str, naming: str = "p2g"
) -> None:
    """Write every output to a temporary file first; rename them all only when every write succeeded.

    The sidecar is entered first, so it is renamed last: a sidecar on disk means every output is there.
    """
    with contextlib.ExitStack() as stack:
        sidecar_tmp = stack.enter_context(atomic_path(out_dir / f"{case}.json"))
        for key, item in images.items():
            tmp = stack.enter_context(atomic_path(out_dir / output_name(case, key, naming)))
            if isinstance(item, Path) and item.name.endswith(".nii.gz"):
                shutil.copyfile(item, tmp)  # byte-identical copy of a given modality
            elif isinstance(item, Path):
                source = nib.load(str(item))
                nib.save(nib.Nifti1Image(np.asanyarray(source.dataobj), source.affine, source.header), tmp)
            else:
                nib.save(item, tmp)
        sidecar_tmp.write_text(json.dumps(sidecar, indent=2) + "\n")
