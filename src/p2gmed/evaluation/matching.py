"""Find prediction and reference files, pair them by case and modality, and load them with checks.

Predictions (``--pred DIR``) are named as ``p2g predict`` writes them (``<case>_<modality>.nii.gz``,
``<case>_seg.nii.gz``), as nnU-Net does (segmentation ``<case>.nii.gz``) or as BraTS submissions
(``BraTS-GLI-XXXXX-YYY.nii.gz``, synthesized ``BraTS-GLI-XXXXX-YYY-t1n.nii.gz``); see ``inference.naming``.
A folder of source subsets holds one subfolder per subset,
``from-<mod>[+<mod>...]``. References (``--ref DIR``) are either a flat folder in the same
naming or a data set in any layout ``p2gmed.data.read.read_dataset`` knows (the case is the subject id).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from p2gmed.errors import DataError, InputError
from p2gmed.inference.naming import SEG, split_name
from p2gmed.modalities import ALL, canonical

log = logging.getLogger(__name__)

SEG_KEY = SEG
#: geometry tolerance (mm) between a prediction's and its reference's affine
AFFINE_ATOL = 1e-3


@dataclass
class CaseFiles:
    """The files of one case: modality name -> NIfTI, the segmentation, and its label convention if known."""

    case: str
    images: dict[str, Path] = field(default_factory=dict)
    seg: Path | None = None
    labels: str | None = None


def _is_nifti(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith((".nii", ".nii.gz"))


def scan_flat(folder: Path) -> dict[str, CaseFiles]:
    """Cases of a flat folder of predictions in p2g, nnU-Net or BraTS naming (other files, e.g. JSON, are ignored).

    Raises:
        InputError: a duplicate case/modality (e.g. both ``c_seg.nii.gz`` and ``c.nii.gz``).
    """
    cases: dict[str, CaseFiles] = {}
    for path in sorted(p for p in folder.iterdir() if _is_nifti(p)):
        case, key = split_name(path.name)
        if not case:
            raise InputError(f"{path} is not named <case>_<modality>.nii.gz, <case>_seg.nii.gz or <case>.nii.gz")
        entry = cases.setdefault(case, CaseFiles(case))
        if key == SEG_KEY:
            if entry.seg is not None:
                raise InputError(f"{path} and {entry.seg} are both the segmentation of case '{case}'")
            entry.seg = path
            continue
        modality = canonical(key)
        if modality in entry.images:
            raise InputError(f"{path} and {entry.images[modality]} are both modality '{modality}' of one case")
        entry.images[modality] = path
    return cases


def parse_source(name: str) -> tuple[str, ...]:
    """Canonical modalities of a ``from-<mod>[+<mod>...]`` folder name, in canonical order."""
    if not name.startswith("from-") or len(name) <= len("from-"):
        raise InputError(f"source folder '{name}' is not named from-<modality>[+<modality>...]")
    mods = [canonical(m) for m in name[len("from-"):].split("+")]
    if len(set(mods)) != len(mods):
        raise InputError(f"source folder '{name}' names a modality twice")
    return tuple(sorted(mods, key=ALL.index))


def source_name(modalities: Iterable[str]) -> str:
    """The canonical folder name ``from-<mod>[+<mod>...]`` of a subset (canonical modality order)."""
    return "from-" + "+".join(sorted((canonical(m) for m in modalities), key=ALL.index))


def scan_predictions(pred_dir: str | Path) -> dict[str | None, dict[str, CaseFiles]]:
    """Prediction cases, by source subset (canonical ``from-...`` name) or under the key None for a flat folder.

    Raises:
        InputError: the folder is missing or empty, or mixes flat files with ``from-*`` subfolders.
    """
    folder = Path(pred_dir)
    if not folder.is_dir():
        raise InputError(f"prediction folder {folder} does not exist")
    subsets = sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("from-"))
    flat = scan_flat(folder)
    if subsets and flat:
        raise InputError(f"{folder} mixes prediction files with from-<modality> subfolders; keep one kind")
    if not subsets:
        if not flat:
            raise InputError(f"no NIfTI predictions (<case>_<modality>.nii.gz or <case>.nii.gz) found in {folder}")
        return {None: flat}
    by_source: dict[str | None, dict[str, CaseFiles]] = {}
    for sub in subsets:
        name = source_name(parse_source(sub.name))
        if name in by_source:
            raise InputError(f"{sub} names the same modality subset as another from-* folder")
        by_source[name] = scan_flat(sub)
    return by_source


def scan_reference(ref_dir: str | Path) -> dict[str, CaseFiles]:
    """Reference cases from a flat folder or from a data set in any supported layout."""
    folder = Path(ref_dir)
    if not folder.is_dir():
        raise InputError(f"reference folder {folder} does not exist")
    if any(_is_nifti(p) for p in folder.iterdir()):
        return scan_flat(folder)
    from p2gmed.data.read import read_dataset

    cases = {}
    for subject in read_dataset(folder):
        cases[subject.subject_id] = CaseFiles(
            subject.subject_id, dict(subject.images), subject.label, subject.labels
        )
    if not cases:
        raise InputError(f"no reference cases found in {folder}")
    return cases


def pair_keys(pred: Iterable, ref: Iterable, what: str, allow_missing: bool) -> list:
    """Keys present in both; missing or extra ones are reported, and are an InputError unless allowed.

    Args:
        pred: keys of the predictions (cases, or (case, modality) pairs).
        ref: keys of the references.
        what: how to name the keys and the folders in the message, e.g. "cases in /x/pred".
        allow_missing: only warn, and evaluate the keys common to both.
    """
    pred, ref = set(pred), set(ref)
    problems = []
    if ref - pred:
        problems.append(f"{len(ref - pred)} without a prediction: {_preview(ref - pred)}")
    if pred - ref:
        problems.append(f"{len(pred - ref)} without a reference: {_preview(pred - ref)}")
    if problems:
        message = f"{what}: " + "; ".join(problems)
        if not allow_missing:
            raise InputError(message + " (pass --allow-missing to evaluate only the matched ones)")
        log.warning(message)
    common = sorted(pred & ref, key=str)
    if not common:
        raise InputError(f"{what}: no prediction matches a reference")
    return common


def _preview(keys: set, limit: int = 5) -> str:
    names = sorted("/".join(k) if isinstance(k, tuple) else str(k) for k in keys)
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def load_volume(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Read a 3D NIfTI as float64: (array (D, H, W), affine (4, 4), voxel spacing in mm).

    Raises:
        DataError: unreadable, not 3D, or holding NaN/inf values; the message names the file.
    """
    import nibabel as nib

    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj, dtype=np.float64)
    except Exception as exc:  # nibabel raises many types for broken files
        raise DataError(f"{path} cannot be read as NIfTI: {exc}") from exc
    if data.ndim == 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(f"{path} is not a 3D volume (shape {data.shape})")
    if not np.isfinite(data).all():
        raise DataError(f"{path} contains NaN or infinite values")
    return data, img.affine, tuple(float(z) for z in img.header.get_zooms()[:3])


def load_labels(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Read a label NIfTI as int64 (same return as `load_volume`); DataError for non-integer values."""
    data, affine, spacing = load_volume(path)
    labels = np.rint(data)
    if not np.array_equal(labels, data):
        raise DataError(f"{path} is not a label volume: it holds non-integer values")
    return labels.astype(np.int64), affine, spacing


def check_same_grid(pred_path: Path, pred: tuple, ref_path: Path, ref: tuple) -> None:
    """DataError unless the prediction lies on the reference's voxel grid (shape and affine)."""
    if pred[0].shape != ref[0].shape:
        raise DataError(f"{pred_path} has shape {pred[0].shape} but its reference {ref_path} has {ref[0].shape}")
    if not np.allclose(pred[1], ref[1], atol=AFFINE_ATOL):
        raise DataError(f"{pred_path} is not on the voxel grid of its reference {ref_path} (affines differ)")


def reference_segmentations(ref_dir: str | Path) -> dict[str, CaseFiles]:
    """The reference cases of `ref_dir` that have a segmentation; InputError when there is none."""
    refs = {c: f for c, f in scan_reference(ref_dir).items() if f.seg is not None}
    if not refs:
        raise InputError(f"no reference segmentations found in {ref_dir}")
    return refs


def segmentation_pairs(
    pred_dir: str | Path,
    by_source: dict[str | None, dict[str, CaseFiles]],
    refs: dict[str, CaseFiles],
    allow_missing: bool,
) -> Iterable[tuple[str, str | None, Path, tuple, Path, tuple]]:
    """Every (prediction, reference) segmentation pair, case by case, each reference loaded once.

    Args:
        pred_dir: the prediction folder (for messages); by_source: `scan_predictions(pred_dir)`;
        refs: `reference_segmentations(ref_dir)`; allow_missing: skip unmatched cases instead of failing.

    Yields:
        (case, source or None, prediction file, loaded prediction, reference file, loaded reference), the two
        on the same grid (checked); loaded = (labels array, affine, spacing) as `load_labels` returns.

    Raises:
        InputError: a case missing on one side (unless `allow_missing`), or a grid mismatch.
    """
    pairs = {}
    for source, preds in by_source.items():
        where = f"predicted segmentations in {Path(pred_dir) / source if source else pred_dir}"
        pairs[source] = set(pair_keys([c for c, f in preds.items() if f.seg], refs, where, allow_missing))
    for case in sorted(set().union(*pairs.values())):
        ref = load_labels(refs[case].seg)
        for source, preds in by_source.items():
            if case in pairs[source]:
                pred = load_labels(preds[case].seg)
                check_same_grid(preds[case].seg, pred, refs[case].seg, ref)
                yield case, source, preds[case].seg, pred, refs[case].seg, ref
