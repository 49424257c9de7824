"""Prediction of one case from files into files: `predict_case` (`p2g predict --input`) and
`predict_case_subsets` (`p2g predict --subsets`: every requested subset of the inputs in one pass).

Steps (everything is validated before the first byte is written):

1. names: every input modality is canonical and known to a model; no output path is an input file;
2. `geometry.load_case`: files readable, 3D, finite, one shared shape and affine;
3. `predict.predict_subsets`: the models on the arrays (see there);
4. all outputs are written to temporary files, then renamed together (`writing.stage_case`).

Given modalities are copied through unchanged by default; the sidecar `<case>.json` marks each output "given",
"synthesized", "reconstructed" or "segmented".
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import torch

from p2gmed.errors import InputError
from p2gmed.inference.geometry import load_case, load_case_geometries
from p2gmed.inference.models import LoadedModel, check_models, modality_order
from p2gmed.inference.naming import SEG, case_name_from_inputs, output_name, subset_folder
from p2gmed.inference.predict import Prediction, PredictOptions, check_inputs, predict_subsets, predict_volumes
from p2gmed.inference.writing import peak_memory, sidecar, stage_case, write_all
from p2gmed.modalities import canonical


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


def _case_files(
    case: str, given: dict[str, Path], written: list[str], prediction: Prediction, models: list[LoadedModel],
    options: PredictOptions, device: torch.device, geometry,
) -> tuple[dict[str, nib.Nifti1Image | Path], dict[str, Any]]:
    """(images, sidecar) of one case: the prediction plus the given modalities it copies through."""
    images: dict[str, nib.Nifti1Image | Path] = dict(prediction.images)  # or a file to copy through
    sources = dict(prediction.sources)
    for modality in written:
        if modality not in images:
            images[modality] = given[modality]
            sources[modality] = "given"
    return images, sidecar(case, given, written, sources, prediction, models, options, device, geometry)


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
    images, record = _case_files(case, given, written, prediction, models, options, device, geometry)
    record["runtime"] = {"seconds": round(time.perf_counter() - start, 3), **peak_memory(device)}
    write_all(images, record, out_dir, case, options.naming)
    return record


def predict_case_subsets(
    models: list[LoadedModel],
    inputs: dict[str, Path],
    out_root: str | Path,
    case: str | None,
    subsets: Sequence[Collection[str]],
    options: PredictOptions | None = None,
    device: str | torch.device = "cpu",
) -> list[dict[str, Any]]:
    """`predict_case` from each of several subsets of the inputs in one pass (`predict_subsets`).

    Subset S is written to `<out_root>/from-<S>/` (`naming.subset_folder`, modalities in the models' order) with
    the files and sidecar `predict_case` writes there from the inputs of S; the sidecar's runtime is that of the
    whole pass. Every subset is validated before anything is computed, and all files are renamed together.

    Args:
        inputs: modality name (any accepted spelling) -> NIfTI file.
        subsets: non-empty collections of modality names (any accepted spelling), each within `inputs`.
        models, case, options, device: as for `predict_case`.

    Returns:
        The sidecars, in the order of `subsets`.

    Raises:
        InputError: as `predict_case`, or a subset that is empty, names a modality not among the inputs, or is
            given twice. Nothing is written then.
    """
    start = time.perf_counter()
    options = options or PredictOptions()
    device = torch.device(device)
    check_models(models)
    case = case or case_name_from_inputs(inputs)
    given, _ = check_inputs(models, inputs)
    order = modality_order(models)
    requests = []
    for subset in subsets:
        chosen = {canonical(m) for m in subset}
        if not chosen or not chosen <= set(given):
            raise InputError(f"the subset '{'+'.join(subset)}' is not a non-empty subset of the inputs "
                             f"({', '.join(given)})")
        folder = Path(out_root) / subset_folder(chosen, order)
        if any(folder == f for f, _, _ in requests):
            raise InputError(f"the subset '{'+'.join(subset)}' is asked for twice")
        requests.append((folder, *_check_request(models, {m: given[m] for m in given if m in chosen}, folder,
                                                 case, options.naming)))
    used = {m: Path(p) for m, p in given.items() if any(m in own for _, own, _ in requests)}
    arrays, geometries = load_case_geometries(used)
    # each subset's outputs carry the affine and header of its own first input, as `predict_case` writes them
    references = [geometries[next(iter(own))] for _, own, _ in requests]
    predictions = predict_subsets(models, arrays, references, [tuple(g) for _, g, _ in requests], options, device)
    runtime = {"seconds": round(time.perf_counter() - start, 3), "subsets_in_pass": len(requests),
               **peak_memory(device)}
    records = []
    with contextlib.ExitStack() as stack:  # every subset's files are renamed together, or none
        for (folder, own, written), prediction, reference in zip(requests, predictions, references):
            images, record = _case_files(case, own, written, prediction, models, options, device, reference)
            record["runtime"] = runtime
            stage_case(stack, images, record, folder, case, options.naming)
            records.append(record)
    return records
