"""BraTS region metrics with the legacy challenge conventions, and the 15-subset missing-modality protocol.

Regions (p2gmed.data.layouts.REGIONS): WT = {1, 2, ET}, TC = {1, ET}, ET = {ET} with ET = 3 (BraTS 2023) or
4 (BraTS 2018-2021). Conventions (docs/method.md section 9):

- Dice: 2|A n B| / (|A| + |B|); both empty -> 1, exactly one empty -> 0 (legacy BraTS, RFNet/mmFormer,
  MONAI ``DiceMetric(ignore_empty=False)``).
- ET post-processed (``dice_et_pp``, RFNet/mmFormer "enhancing_postpro"): a predicted ET smaller than 500 mm^3
  (RFNet/mmFormer's 500 voxels on BraTS's 1 mm grid, scaled by the voxel volume of the header spacing) is
  emptied for this column only (WT, TC and HD95 use the raw prediction).
- HD95: MedPy's ``hd95`` (95th percentile of the pooled surface distances in both directions, surfaces from a
  face-connected erosion, voxel spacing in mm) with nnU-Net v1's ``compute_BraTS_HD95`` empty rules: both
  empty -> 0, exactly one empty -> 373.12866.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from p2gmed.data.layouts import LABEL_VALUES, REGIONS
from p2gmed.errors import InputError

BRATS_LABELS = ("brats2023", "brats2018")
#: predicted ET smaller than this volume (mm^3) counts as no ET in ``dice_et_pp``: RFNet/mmFormer's 500 voxels on
#: BraTS's 1 mm isotropic grid
ET_POSTPROCESS_MM3 = 500.0
#: HD95 when exactly one of prediction and reference is empty (legacy BraTS / nnU-Net v1)
HD95_ONE_EMPTY = 373.12866
REGION_NAMES = ("wt", "tc", "et")
METRIC_COLUMNS = ("dice_wt", "dice_tc", "dice_et", "dice_et_pp", "hd95_wt", "hd95_tc", "hd95_et")

#: the 15 subsets of {FLAIR, T1ce, T1, T2} in the order of RFNet/mmFormer's test masks (grouped by size,
#: one modality first); canonical names
SUBSETS_15: tuple[tuple[str, ...], ...] = (
    ("t2w",), ("t1c",), ("t1n",), ("t2f",),
    ("t1c", "t2w"), ("t1c", "t1n"), ("t2f", "t1n"), ("t1n", "t2w"), ("t2f", "t2w"), ("t2f", "t1c"),
    ("t2f", "t1c", "t1n"), ("t2f", "t1n", "t2w"), ("t2f", "t1c", "t2w"), ("t1c", "t1n", "t2w"),
    ("t2f", "t1c", "t1n", "t2w"),
)


def check_labels(seg: np.ndarray, labels: str, what: str = "segmentation") -> None:
    """Raise InputError when `seg` holds a value the label convention does not define (e.g. 4 under brats2023)."""
    if labels not in LABEL_VALUES:
        raise InputError(f"unknown label convention '{labels}'; use one of {', '.join(LABEL_VALUES)}")
    bad = sorted(set(np.unique(seg).tolist()) - set(LABEL_VALUES[labels]))
    if bad:
        raise InputError(
            f"{what} has label values {bad} that the '{labels}' convention does not use "
            f"(allowed {list(LABEL_VALUES[labels])}); pass the right --labels"
        )


def region_masks(seg: np.ndarray, labels: str) -> dict[str, np.ndarray]:
    """Boolean (D, H, W) masks of WT, TC and ET of a label volume."""
    return {name: np.isin(seg, values) for name, values in REGIONS[labels].items()}


def legacy_dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice of two boolean masks; both empty -> 1, exactly one empty -> 0."""
    total = int(pred.sum()) + int(ref.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, ref).sum()) / total


def _surface_distances(a: np.ndarray, b: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Distances (mm) from every surface voxel of `a` to the nearest surface voxel of `b` (as MedPy)."""
    footprint = ndimage.generate_binary_structure(a.ndim, 1)
    a_surface = a ^ ndimage.binary_erosion(a, structure=footprint, iterations=1)
    b_surface = b ^ ndimage.binary_erosion(b, structure=footprint, iterations=1)
    distance_to_b = ndimage.distance_transform_edt(~b_surface, sampling=spacing)
    return distance_to_b[a_surface]


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> float:
    """95th percentile Hausdorff distance (MedPy definition) with the legacy BraTS empty rules.

    Args:
        pred: (D, H, W) boolean mask.
        ref: (D, H, W) boolean mask.
        spacing: voxel size in mm per axis.
    """
    pred_empty, ref_empty = not pred.any(), not ref.any()
    if pred_empty and ref_empty:
        return 0.0
    if pred_empty or ref_empty:
        return HD95_ONE_EMPTY
    distances = np.concatenate([_surface_distances(pred, ref, spacing), _surface_distances(ref, pred, spacing)])
    return float(np.percentile(distances, 95))


def brats_metrics(
    pred_labels: np.ndarray,
    ref_labels: np.ndarray,
    labels: str = "brats2023",
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> dict[str, float]:
    """Dice (raw and ET post-processed) and HD95 of WT, TC, ET for one case.

    Args:
        pred_labels: (D, H, W) integer label volume of the prediction.
        ref_labels: (D, H, W) integer label volume of the reference, same convention.
        labels: "brats2023" (ET = 3) or "brats2018" (ET = 4, also BraTS 2019-2021).
        spacing: voxel size in mm (from the NIfTI header) for HD95 and the ET post-processing volume.

    Returns:
        dict with the keys of METRIC_COLUMNS.

    Raises:
        InputError: shapes differ, or a volume holds labels outside the convention.
    """
    if labels not in BRATS_LABELS:
        raise InputError(f"unknown BraTS label convention '{labels}'; use one of {', '.join(BRATS_LABELS)}")
    pred_labels, ref_labels = np.asarray(pred_labels), np.asarray(ref_labels)
    if pred_labels.shape != ref_labels.shape:
        raise InputError(f"prediction shape {pred_labels.shape} differs from reference shape {ref_labels.shape}")
    check_labels(pred_labels, labels, "the prediction")
    check_labels(ref_labels, labels, "the reference")
    pred, ref = region_masks(pred_labels, labels), region_masks(ref_labels, labels)
    result = {f"dice_{r}": legacy_dice(pred[r], ref[r]) for r in REGION_NAMES}
    et_mm3 = float(pred["et"].sum()) * float(np.prod(spacing))
    et_pp = pred["et"] if et_mm3 >= ET_POSTPROCESS_MM3 - 1e-6 else np.zeros_like(pred["et"])
    result["dice_et_pp"] = legacy_dice(et_pp, ref["et"])
    result.update({f"hd95_{r}": hd95(pred[r], ref[r], spacing) for r in REGION_NAMES})
    return {key: result[key] for key in METRIC_COLUMNS}



def resolve_labels(refs: dict, labels: str | None, ref_dir: str | Path) -> str:
    """The BraTS label convention: `labels` if given, else the one every reference case's layout implies."""
    if labels is None:
        found = {f.labels for f in refs.values()}
        if len(found) != 1 or None in found:
            raise InputError(f"cannot tell the label convention of {ref_dir}; pass --labels brats2023|brats2018")
        labels = found.pop()
    if labels not in BRATS_LABELS:
        raise InputError(f"label convention '{labels}' is not BraTS; use --labels brats2023|brats2018")
    return labels


def evaluate_brats(
    pred_dir: str | Path, ref_dir: str | Path, labels: str | None = None, allow_missing: bool = False
) -> list[dict]:
    """BraTS metrics of every predicted segmentation (per case and, for subset folders, per source).

    Args:
        pred_dir: flat folder of ``<case>_seg.nii.gz`` or a folder of ``from-<mod>[+<mod>]`` subfolders.
        ref_dir: flat folder of ``<case>_seg.nii.gz`` or a BraTS data set in any supported layout.
        labels: "brats2023" | "brats2018"; None takes it from the reference layout (a flat folder needs it).
        allow_missing: evaluate only the matched cases instead of failing on unmatched ones.

    Returns:
        one dict per case (and source): case, METRIC_COLUMNS (+ source).
    """
    from p2gmed.evaluation.matching import reference_segmentations, scan_predictions, segmentation_pairs

    by_source = scan_predictions(pred_dir)
    refs = reference_segmentations(ref_dir)
    labels = resolve_labels(refs, labels, ref_dir)
    rows = []
    for case, source, pred_file, pred, ref_file, ref in segmentation_pairs(pred_dir, by_source, refs, allow_missing):
        try:
            metrics = brats_metrics(pred[0], ref[0], labels, spacing=ref[2])
        except InputError as exc:
            raise InputError(f"{pred_file} vs {ref_file}: {exc}") from exc
        rows.append({"case": case, **metrics, **({"source": source} if source is not None else {})})
    return rows
