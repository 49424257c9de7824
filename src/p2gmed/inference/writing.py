"""Writing one case's predictions: the sidecar `<case>.json` and the atomic write of every output file.

All outputs of a call go to temporary files first and are renamed only when every write succeeded
(`p2gmed.io.atomic_path`); the sidecar of a folder is renamed after that folder's images, so a sidecar on disk
means its outputs are complete (what `p2g predict --continue` relies on).
"""

from __future__ import annotations

import contextlib
import json
import resource
import shutil
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from p2gmed.inference import intensity
from p2gmed.inference.models import ensembles
from p2gmed.inference.naming import SEG, output_name
from p2gmed.io import atomic_path


def peak_memory(device: torch.device) -> dict[str, float]:
    """Peak host memory of this process (and of the GPU when `device` is CUDA), in MiB."""
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    peak = {"peak_host_rss_mib": round(rss_kib / 1024, 1)}
    if device.type == "cuda":
        peak["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return peak


def sidecar(case, given, written, sources, prediction, models, options, device, geometry) -> dict[str, Any]:
    """The JSON record of one case's outputs: where each came from, the models, grids, geometry and versions.

    Args:
        case: file stem of the outputs.
        given: canonical modality -> input file, the modalities this prediction was made from.
        written: every modality written (the synthesis model's, then the other given ones).
        sources: output key -> "given", "synthesized", "reconstructed" or "segmented".
        prediction: the `predict.Prediction` of the case.
        models, options, device, geometry: as passed to `predict_case`.
    """
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


def stage_case(
    stack: contextlib.ExitStack,
    images: dict[str, nib.Nifti1Image | Path],
    record: dict,
    out_dir: Path,
    case: str,
    naming: str = "p2g",
) -> None:
    """Write one case's outputs to temporary files entered on `stack`; they are renamed when the stack closes
    without error, and removed otherwise.

    The sidecar is entered first, so it is renamed last: a sidecar on disk means every output is there.
    """
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
    sidecar_tmp.write_text(json.dumps(record, indent=2) + "\n")


def write_all(
    images: dict[str, nib.Nifti1Image | Path], record: dict, out_dir: Path, case: str, naming: str = "p2g"
) -> None:
    """Write every output of one case to a temporary file first; rename them all only when every write
    succeeded (`stage_case`)."""
    with contextlib.ExitStack() as stack:
        stage_case(stack, images, record, out_dir, case, naming)
