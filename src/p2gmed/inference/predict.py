"""`p2g predict`: one patient's NIfTI files in, every modality and a segmentation out, in native geometry.

Steps of `predict_case` (everything is validated before the first byte is written):

1. names: every input modality is canonical and known to a model; no output path is an input file;
2. `geometry.load_case`: files readable, 3D, finite, one shared shape and affine;
3. per model: native -> working grid (RAS, training spacing), normalisation as in training, sliding-window
   prediction with `forward_subset` on the available modalities, inverse normalisation, working -> native grid;
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
from p2gmed.inference.geometry import WorkingGrid, load_case, native_image
from p2gmed.inference.models import LoadedModel, check_models
from p2gmed.inference.sliding import sliding_predict
from p2gmed.io import atomic_path
from p2gmed.modalities import canonical

log = logging.getLogger(__name__)

SEG = "seg"


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
    """

    overlap: float | None = None
    sw_batch_size: int | None = None
    mode: str | None = None
    stitch: str | None = None
    reconstruct_given: bool = False
    progress: bool = False

    def resolved(self, model: LoadedModel) -> dict[str, Any]:
        inf = model.cfg.inference
        stitch = self.stitch if self.stitch is not None else inf.stitch_device
        return {
            "overlap": inf.overlap if self.overlap is None else float(self.overlap),
            "sw_batch_size": inf.sw_batch_size if self.sw_batch_size is None else int(self.sw_batch_size),
            "mode": inf.mode if self.mode is None else self.mode,
            "stitch": stitch,
        }


def output_name(case: str, what: str) -> str:
    """File name of one prediction output: `<case>_<modality>.nii.gz` or `<case>_seg.nii.gz`."""
    return f"{case}_{what}.nii.gz"


def case_name_from_inputs(inputs: dict[str, Path]) -> str:
    """A case name from the first input file: its name without extension and a trailing modality tag.

    "BraTS-GLI-00002-000-t1n.nii.gz" -> "BraTS-GLI-00002-000"; "sub01_flair.nii" -> "sub01"; "t1.nii.gz" -> "case".
    """
    stem = Path(next(iter(inputs.values()))).name
    for ext in (".nii.gz", ".nii"):
        if stem.endswith(ext):
            stem = stem[: -len(ext)]
    for sep in ("-", "_", "."):
        head, found, tail = stem.rpartition(sep)
        if found and head:
            with contextlib.suppress(InputError):
                canonical(tail)
                return head
    try:
        canonical(stem)
        return "case"
    except InputError:
        return stem or "case"


def _check_request(
    models: list[LoadedModel], inputs: dict[str, Path], out_dir: Path, case: str
) -> tuple[dict[str, Path], list[str]]:
    """Validate names and paths; return canonical inputs and the modalities to write, in a stable order."""
    if not inputs:
        raise InputError("no input modality given")
    if not case or any(ch in case for ch in "/\\") or case in (".", ".."):
        raise InputError(f"case name '{case}' is not a plain file-name stem")
    given: dict[str, Path] = {}
    for name, path in inputs.items():
        modality = canonical(name)
        if modality in given:
            raise InputError(f"modality {modality} is given twice ({given[modality]} and {path})")
        given[modality] = Path(path)
    known = [m for model in models for m in model.modalities]
    for modality, path in given.items():
        if modality not in known:
            names = ", ".join(dict.fromkeys(known))
            raise InputError(f"{path} is given as {modality}, which the model(s) do not know (they know {names})")
    synth = next((m for m in models if m.synthesizes), None)
    written = list(synth.modalities) if synth else []
    written += [m for m in given if m not in written]
    targets = [out_dir / output_name(case, m) for m in written] + [out_dir / f"{case}.json"]
    if any(m.segments for m in models):
        targets.append(out_dir / output_name(case, SEG))
    for target in targets:
        for path in given.values():
            if target.resolve() == path.resolve() or (target.exists() and path.exists() and target.samefile(path)):
                raise InputError(f"output {target} would overwrite the input file {path}; choose another --out")
    return given, written


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
    mask = available.to(device)
    output = sliding_predict(
        lambda x: model.model.forward_subset(x, mask),
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


def _segment(model: LoadedModel, logits: np.ndarray, grid: WorkingGrid) -> np.ndarray:
    """(K, D, H, W) working-grid logits -> (X, Y, Z) uint8 label values of the model's convention, native grid.

    Class probabilities (not labels) are resampled, as nnU-Net does, then the argmax is taken on the native grid.
    """
    from p2gmed.data.layouts import classes_to_labels

    if grid.resampled:
        probs = torch.softmax(torch.from_numpy(logits), dim=0).numpy()
        classes = grid.to_native(probs, order=1).argmax(0)
    else:  # pure reorientation: argmax commutes with it
        classes = grid.to_native(logits.argmax(0).astype(np.float32), order=0).astype(np.int64)
    return classes_to_labels(torch.from_numpy(classes), model.labels).numpy().astype(np.uint8)


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
    """Predict every modality the models know, and the segmentation, for one case.

    Args:
        models: one synthesis-capable model (task synthesis or pretrain), one segmentation model, or both.
        inputs: modality name (any accepted spelling) -> NIfTI file; any non-empty subset.
        out_dir: output folder (created).
        case: output file stem; default derived from the first input's file name.
        options: sliding-window and output settings.
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
    given, written = _check_request(models, inputs, out_dir, case)
    arrays, geometry = load_case(given)

    images: dict[str, nib.Nifti1Image | Path] = {}  # output key -> image, or a file to copy through
    sources: dict[str, str] = {}
    units: dict[str, dict] = {}  # output -> the statistics that brought it back to native units
    grids: list[dict] = []  # per model, its working grid
    for model in models:
        grid = WorkingGrid(geometry, model.cfg.data.spacing)
        grids.append(grid.describe())
        if model.synthesizes and not options.reconstruct_given and set(model.modalities) <= set(given):
            continue  # every modality is given and copied: nothing to synthesize
        own = {m: a for m, a in arrays.items() if m in model.modalities}
        output, stats = _run_model(model, own, grid, options, device)
        if model.segments:
            labels = _segment(model, output, grid)
            # nothing is segmented outside the patient (brain / body), whatever the network says there
            labels[~subject_foreground(arrays, model.cfg.data.body_hu)] = 0
            images[SEG] = native_image(labels, geometry, np.uint8, f"p2gmed segmentation ({model.labels})")
            sources[SEG] = "segmented"
            continue
        mask = intensity.foreground(arrays)
        for i, modality in enumerate(model.modalities):
            if modality in given and not options.reconstruct_given:
                continue
            norm = intensity.output_stats(modality, stats, model.cfg.data)
            volume = intensity.to_native_units(grid.to_native(output[i]), modality, norm, mask)
            kind = "reconstructed" if modality in given else "synthesized"
            images[modality] = native_image(volume, geometry, np.float32, f"p2gmed {kind} {modality}")
            sources[modality] = kind
            units[modality] = norm.to_dict()
    for modality in written:
        if modality not in images:
            images[modality] = given[modality]
            sources[modality] = "given"

    sidecar = _sidecar(case, given, written, sources, units, models, options, device, grids, geometry)
    sidecar["runtime"] = {"seconds": round(time.perf_counter() - start, 3), **_peak_memory(device)}
    _write_all(images, sidecar, out_dir, case)
    return sidecar


def _sidecar(case, given, written, sources, units, models, options, device, grids, geometry) -> dict[str, Any]:
    from p2gmed.train.checkpoint import versions

    outputs: dict[str, dict] = {m: {"file": output_name(case, m), "source": sources[m]} for m in written}
    for modality, stats in units.items():
        outputs[modality]["intensity"] = stats
    if SEG in sources:
        seg_model = next(m for m in models if m.segments)
        outputs[SEG] = {"file": output_name(case, SEG), "source": "segmented", "labels": seg_model.labels}
    return {
        "case": case,
        "inputs": {m: str(p) for m, p in given.items()},
        "given": list(given),
        "synthesized": [m for m in written if sources[m] == "synthesized"],
        "outputs": outputs,
        "given_outputs": "reconstructed by the model" if options.reconstruct_given else "copied from the inputs",
        "models": [
            {**m.describe(), "working_grid": g, "inference": options.resolved(m)} for m, g in zip(models, grids)
        ],
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


def _write_all(images: dict[str, nib.Nifti1Image | Path], sidecar: dict, out_dir: Path, case: str) -> None:
    """Write every output to a temporary file first; rename them all only when every write succeeded."""
    with contextlib.ExitStack() as stack:
        for key, item in images.items():
            tmp = stack.enter_context(atomic_path(out_dir / output_name(case, key)))
            if isinstance(item, Path) and item.name.endswith(".nii.gz"):
                shutil.copyfile(item, tmp)  # byte-identical copy of a given modality
            elif isinstance(item, Path):
                source = nib.load(str(item))
                nib.save(nib.Nifti1Image(np.asanyarray(source.dataobj), source.affine, source.header), tmp)
            else:
                nib.save(item, tmp)
        tmp = stack.enter_context(atomic_path(out_dir / f"{case}.json"))
        tmp.write_text(json.dumps(sidecar, indent=2) + "\n")


def predict_folder(
    models: list[LoadedModel],
    root: str | Path,
    out_dir: str | Path,
    options: PredictOptions | None = None,
    device: str | torch.device = "cpu",
    layout: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Predict every case of a data set folder (any supported layout) into one flat output folder.

    A case that fails validation is skipped (nothing written for it) and reported; the others go on.

    Args:
        models: as for `predict_case`, read once for all cases.
        root: a data set folder, or a single case folder.
        out_dir: output folder; files are named `<case>_<modality>.nii.gz` by subject id.
        options: as for `predict_case`.
        device: compute device.
        layout: the data set layout, or "auto".
        progress: show a progress bar over the cases.

    Returns:
        {"done": [case, ...], "failed": {case: reason}, "seconds": total}.

    Raises:
        InputError: the folder holds no readable case.
    """
    from tqdm import tqdm

    from p2gmed.data.read import read_dataset

    start = time.perf_counter()
    known = {m for model in models for m in model.modalities}
    subjects = read_dataset(root, layout)
    done: list[str] = []
    failed: dict[str, str] = {}
    for subject in tqdm(subjects, desc="predict", unit="case", disable=not progress or len(subjects) < 2):
        inputs = {m: p for m, p in subject.images.items() if m in known}
        if not inputs:
            failed[subject.subject_id] = f"none of its modalities {sorted(subject.images)} is known to the model(s)"
            continue
        try:
            sidecar = predict_case(models, inputs, out_dir, subject.subject_id, options, device)
            done.append(subject.subject_id)
            log.info("%s: %d outputs in %.1f s", subject.subject_id, len(sidecar["outputs"]),
                     sidecar["runtime"]["seconds"])
        except InputError as exc:
            failed[subject.subject_id] = str(exc).replace("\n", "; ")
            log.warning("case %s skipped: %s", subject.subject_id, failed[subject.subject_id])
    return {"done": done, "failed": failed, "seconds": round(time.perf_counter() - start, 3)}
