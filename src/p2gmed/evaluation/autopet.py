"""AutoPET lesion metrics per case (as the official autoPET-I/II script) and the aggregates people report.

Per case (``lab-midas/autoPET: val_script.py``, which the autoPET-II evaluation page links to):

- Dice = 2|G n P| / (|G| + |P|) with no guard: NaN when both masks are empty (a true negative), 0 for a
  false-positive-only or false-negative-only case.
- False-positive volume: voxels of every 18-connected component of the prediction that shares no voxel with
  the reference, times the voxel volume in ml. False-negative volume: the same with the roles swapped.

Aggregates (``autopet_summary``), each stated in the output:

- challenge: Dice = mean over reference-positive cases; FPV and FNV = mean over all cases (autoPET-II rule).
- paper (Table 5 "Dice"): Dice counted as 0 for reference-negative cases (true and false negatives of the
  case-level detection), mean over all cases. Equals challenge Dice x N_pos / N.
- DICE- (our reading of the paper's "mean across all samples"): mean over all cases where a true negative
  (both empty) counts 1 and every other case keeps its Dice (a false positive counts 0).
- case-level detection with the any-voxel rule: a case is reference-positive when its reference has a lesion
  voxel, predicted-positive when the prediction has one. TPR = TP / (TP + FN), FNR = 1 - TPR,
  TNR = TN / (TN + FP), FPR = 1 - TNR; NaN where the denominator is 0.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from p2gmed.errors import InputError

#: 18-connectivity (faces + edges), as the official script's ``cc3d.connected_components(..., connectivity=18)``
CONNECTIVITY = 18

AGGREGATE_DEFINITIONS = {
    "dice_challenge": "mean Dice over reference-positive cases (autoPET challenge)",
    "fpv_ml": "mean false-positive volume over all cases, ml (autoPET challenge)",
    "fnv_ml": "mean false-negative volume over all cases, ml (autoPET-II challenge)",
    "dice_paper": "mean over all cases, Dice counted 0 when the reference is empty (paper Table 5 'Dice')",
    "dice_minus": "mean over all cases, Dice counted 1 when both are empty (true negative) (paper 'DICE-')",
    "tpr": "case level, any-voxel rule: TP/(TP+FN), TP = reference and prediction both have lesion voxels",
    "tnr": "case level: TN/(TN+FP), TN = neither has lesion voxels",
    "fnr": "case level: FN/(TP+FN), FN = reference has lesion voxels, prediction none",
    "fpr": "case level: FP/(TN+FP), FP = reference empty, prediction has lesion voxels",
}


def _unmatched_voxels(mask: np.ndarray, other: np.ndarray) -> int:
    """Voxels of the 18-connected components of `mask` that share no voxel with `other`."""
    import cc3d

    components = cc3d.connected_components(mask.astype(np.uint8), connectivity=CONNECTIVITY)
    touched = np.unique(components[other & mask])
    return int(np.count_nonzero(components[~np.isin(components, touched)]))


def autopet_metrics(pred: np.ndarray, ref: np.ndarray, voxel_ml: float) -> dict[str, float | bool]:
    """Dice, false-positive and false-negative volume of one case.

    Args:
        pred: (D, H, W) predicted lesion mask (non-zero = lesion).
        ref: (D, H, W) reference lesion mask (non-zero = lesion).
        voxel_ml: volume of one voxel in ml (product of the spacing in mm / 1000).

    Returns:
        {"dice": float (NaN for a true negative), "fpv_ml", "fnv_ml", "ref_positive": bool,
        "pred_positive": bool}.

    Raises:
        InputError: shapes differ or the voxel volume is not positive.
    """
    pred, ref = np.asarray(pred) != 0, np.asarray(ref) != 0
    if pred.shape != ref.shape:
        raise InputError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    if not voxel_ml > 0:
        raise InputError(f"voxel volume must be positive, got {voxel_ml} ml")
    total = int(pred.sum()) + int(ref.sum())
    dice = 2.0 * int(np.logical_and(pred, ref).sum()) / total if total else float("nan")
    return {
        "dice": dice,
        "fpv_ml": _unmatched_voxels(pred, ref) * voxel_ml,
        "fnv_ml": _unmatched_voxels(ref, pred) * voxel_ml,
        "ref_positive": bool(ref.any()),
        "pred_positive": bool(pred.any()),
    }


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else float("nan")


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def autopet_summary(rows: list[dict]) -> dict[str, float | int]:
    """Aggregate per-case rows of `autopet_metrics` (see the module docstring and AGGREGATE_DEFINITIONS).

    Args:
        rows: dicts with "dice", "fpv_ml", "fnv_ml", "ref_positive", "pred_positive".

    Returns:
        the aggregates plus the case counts "n", "tp", "fn", "tn", "fp" (Dice values in [0, 1]).
    """
    positives = [r for r in rows if r["ref_positive"]]
    tp = sum(1 for r in positives if r["pred_positive"])
    fn = len(positives) - tp
    fp = sum(1 for r in rows if not r["ref_positive"] and r["pred_positive"])
    tn = len(rows) - len(positives) - fp
    return {
        "n": len(rows), "tp": tp, "fn": fn, "tn": tn, "fp": fp,
        "dice_challenge": _mean([r["dice"] for r in positives]),
        "fpv_ml": _mean([r["fpv_ml"] for r in rows]),
        "fnv_ml": _mean([r["fnv_ml"] for r in rows]),
        "dice_paper": _mean([r["dice"] if r["ref_positive"] else 0.0 for r in rows]),
        "dice_minus": _mean([1.0 if math.isnan(r["dice"]) else r["dice"] for r in rows]),
        "tpr": _ratio(tp, tp + fn), "fnr": _ratio(fn, tp + fn),
        "tnr": _ratio(tn, tn + fp), "fpr": _ratio(fp, tn + fp),
    }


def rows_from_csv(rows: list[dict], where: str = "the AutoPET metrics") -> list[dict]:
    """Per-case rows read back from a `p2g evaluate autopet` CSV (strings), in the form `autopet_summary` takes.

    The CSV holds case, dice (empty for NaN), fpv_ml and fnv_ml; the case-level flags follow from them exactly,
    since a voxel has a positive volume: Dice is NaN only when both masks are empty, Dice > 0 needs lesion voxels
    in both, and otherwise every lesion voxel of one mask is unmatched and counts in FPV (prediction) or FNV
    (reference).

    Args:
        rows: dicts of strings, e.g. from `csv.DictReader`.
        where: the file, for error messages.

    Raises:
        InputError: a row whose fpv_ml or fnv_ml is missing or not a number.
    """
    def value(row: dict, key: str) -> float:
        text = row.get(key)
        try:
            return float(text) if text not in (None, "") else math.nan
        except ValueError:
            raise InputError(f"{where}: case {row.get('case')}: {key} {text!r} is not a number") from None

    out = []
    for row in rows:
        dice, fpv, fnv = value(row, "dice"), value(row, "fpv_ml"), value(row, "fnv_ml")
        if math.isnan(fpv) or math.isnan(fnv):
            raise InputError(f"{where}: case {row.get('case')} lacks fpv_ml or fnv_ml")
        overlap = not math.isnan(dice) and dice > 0
        out.append({**row, "dice": dice, "fpv_ml": fpv, "fnv_ml": fnv,
                    "ref_positive": overlap or fnv > 0, "pred_positive": overlap or fpv > 0})
    return out


def evaluate_autopet(pred_dir: str | Path, ref_dir: str | Path, allow_missing: bool = False) -> list[dict]:
    """AutoPET metrics of every predicted ``<case>_seg.nii.gz`` against the reference lesion mask.

    The voxel volume comes from the reference header (the official script reads the prediction's; both lie on
    the same grid, which is checked).

    Returns:
        one dict per case (and source): case, dice, fpv_ml, fnv_ml, ref_positive, pred_positive (+ source).
    """
    from p2gmed.evaluation.matching import reference_segmentations, scan_predictions, segmentation_pairs

    by_source = scan_predictions(pred_dir)
    refs = reference_segmentations(ref_dir)
    rows = []
    for case, source, _, pred, _, ref in segmentation_pairs(pred_dir, by_source, refs, allow_missing):
        voxel_ml = float(np.prod(ref[2])) / 1000.0
        row = {"case": case, **autopet_metrics(pred[0], ref[0], voxel_ml)}
        rows.append({**row, **({"source": source} if source is not None else {})})
    return rows
