"""BraTS 2023 lesion-wise Dice and HD95, the challenge's ranking metrics, next to the legacy region metrics.

Definition (BraTS 2023 challenge, per region WT / TC / ET of one case; `CHALLENGES` holds each sub-challenge's
dilation and minimum lesion volume, BraTS-GLI: 3 and 50 mm^3):

1. Lesions are the 26-connected components of the reference and of the prediction.
2. Reference lesions closer than the dilation are one lesion: the reference is dilated `dilation` times with the
   18-neighbourhood, and the reference components inside one 26-connected component of the dilated mask merge.
3. Each (merged) reference lesion is dilated the same way; every predicted component touching the dilated lesion is
   its match (a true positive). Its lesion Dice is the Dice of the lesion and the union of its matches; its HD95
   the 95th-percentile Hausdorff distance between them, 374 mm when nothing matched (a missed lesion).
4. Reference lesions of at most `min_volume` mm^3 are left out of the sums and counts; their matches are still
   not false positives.
5. False positives: predicted components that match no reference lesion, whatever their size. Each adds a Dice of
   0 and an HD95 of 374 mm.
6. Lesion-wise Dice = sum of lesion Dice / (reference lesions + false positives); lesion-wise HD95 = (sum of lesion
   HD95 + 374 x false positives) / (reference lesions + false positives). With neither (both empty): 1 and 0.

The surface distances use the face-connected voxel surfaces of the legacy HD95 (`brats.hd95`, as
MedPy); the challenge's script weights surface elements by area (DeepMind's surface-distance), which differs by
a fraction of a voxel on curved surfaces. Dilation counts voxels, as in the challenge (defined on 1 mm grids).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from p2gmed.errors import InputError
from p2gmed.evaluation.brats import (
    BRATS_LABELS,
    METRIC_COLUMNS,
    REGION_NAMES,
    brats_metrics,
    check_labels,
    hd95,
    region_masks,
)

#: (dilation iterations, minimum lesion volume in mm^3) of each BraTS 2023 sub-challenge
CHALLENGES = {
    "BraTS-GLI": (3, 50.0),
    "BraTS-SSA": (3, 50.0),
    "BraTS-MEN": (1, 50.0),
    "BraTS-PED": (3, 50.0),
    "BraTS-MET": (1, 2.0),
}
#: HD95 (mm) of a missed or a false-positive lesion
HD95_PENALTY = 374.0
LESIONWISE_COLUMNS = tuple(
    f"{kind}_{r}" for kind in ("lw_dice", "lw_hd95", "lw_tp", "lw_fp", "lw_fn") for r in REGION_NAMES
)
_FULL = ndimage.generate_binary_structure(3, 3)  # 26-connectivity
_DILATE = ndimage.generate_binary_structure(3, 2)  # the challenge's dilation element (18-neighbourhood)


def _hd95(a: np.ndarray, b: np.ndarray, spacing: Sequence[float]) -> float:
    """The legacy HD95 of a lesion and what matched it; a missed or false lesion (an empty side) is penalised."""
    if not a.any() or not b.any():
        return HD95_PENALTY
    return hd95(a, b, spacing)


def lesionwise_region(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    dilation: int = 3,
    min_volume: float = 50.0,
) -> dict[str, float]:
    """Lesion-wise Dice and HD95 of one region (see the module docstring).

    Args:
        pred, ref: (D, H, W) boolean masks of the region.
        spacing: voxel size in mm (lesion volumes and distances).
        dilation: dilation iterations that merge nearby reference lesions and define a lesion's neighbourhood.
        min_volume: reference lesions of at most this volume (mm^3) are not counted.

    Returns:
        {"dice", "hd95", "tp" (counted reference lesions that were found), "fp", "fn" (counted ones missed)}.
    """
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    voxel = float(np.prod(spacing))
    pred_cc, _ = ndimage.label(pred, structure=_FULL)
    ref_cc, _ = ndimage.label(ref, structure=_FULL)
    merged_cc, n_merged = ndimage.label(ndimage.binary_dilation(ref, _DILATE, iterations=dilation), structure=_FULL)
    lesions = np.where(ref, merged_cc, 0)  # every reference voxel carries its merged lesion's id
    matched: set[int] = set()
    dice_sum = hd_sum = 0.0
    tp = fn = 0
    for lesion_id in range(1, n_merged + 1):
        lesion = lesions == lesion_id
        if not lesion.any():
            continue
        near = ndimage.binary_dilation(lesion, _DILATE, iterations=dilation)
        hits = np.unique(pred_cc[near & (pred_cc > 0)])
        matched.update(int(h) for h in hits)
        if lesion.sum() * voxel <= min_volume:
            continue  # too small to count; its matches are not false positives either
        found = np.isin(pred_cc, hits) if hits.size else np.zeros_like(pred)
        dice_sum += 2.0 * np.logical_and(found, lesion).sum() / (found.sum() + lesion.sum())
        hd_sum += _hd95(lesion, found, spacing)
        tp, fn = (tp + 1, fn) if hits.size else (tp, fn + 1)
    fp = len(set(np.unique(pred_cc[pred_cc > 0]).tolist()) - matched)
    counted = tp + fn + fp
    if counted == 0:
        return {"dice": 1.0, "hd95": 0.0, "tp": 0, "fp": 0, "fn": 0}
    return {
        "dice": dice_sum / counted,
        "hd95": (hd_sum + HD95_PENALTY * fp) / counted,
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }


def lesionwise_metrics(
    pred_labels: np.ndarray,
    ref_labels: np.ndarray,
    labels: str = "brats2023",
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    challenge: str = "BraTS-GLI",
) -> dict[str, float]:
    """Lesion-wise Dice, HD95 and lesion counts of WT, TC and ET for one case (keys `LESIONWISE_COLUMNS`).

    Raises:
        InputError: unknown challenge or label convention, shapes differ, or labels outside the convention.
    """
    if challenge not in CHALLENGES:
        raise InputError(f"unknown BraTS challenge '{challenge}'; use one of {', '.join(CHALLENGES)}")
    if labels not in BRATS_LABELS:
        raise InputError(f"unknown BraTS label convention '{labels}'; use one of {', '.join(BRATS_LABELS)}")
    if np.shape(pred_labels) != np.shape(ref_labels):
        raise InputError(f"prediction shape {np.shape(pred_labels)} differs from reference {np.shape(ref_labels)}")
    check_labels(pred_labels, labels, "the prediction")
    check_labels(ref_labels, labels, "the reference")
    dilation, min_volume = CHALLENGES[challenge]
    pred, ref = region_masks(pred_labels, labels), region_masks(ref_labels, labels)
    result: dict[str, float] = {}
    for region in REGION_NAMES:
        scores = lesionwise_region(pred[region], ref[region], spacing, dilation, min_volume)
        for key, value in scores.items():
            result[f"lw_{key}_{region}"] = value
    return {key: result[key] for key in LESIONWISE_COLUMNS}


def evaluate_brats_metrics(
    pred_dir: str | Path,
    ref_dir: str | Path,
    labels: str | None = None,
    allow_missing: bool = False,
    metrics: str = "both",
    challenge: str = "BraTS-GLI",
) -> tuple[list[dict], tuple[str, ...]]:
    """Legacy and/or lesion-wise BraTS metrics of every predicted segmentation, each pair loaded once.

    Args:
        pred_dir, ref_dir, labels, allow_missing: as for `brats.evaluate_brats`.
        metrics: "legacy", "lesionwise" or "both".
        challenge: the sub-challenge whose dilation and minimum lesion size apply (`CHALLENGES`).

    Returns:
        (rows, columns): one dict per case (and source), and the CSV columns in order.
    """
    from p2gmed.evaluation.brats import resolve_labels
    from p2gmed.evaluation.matching import reference_segmentations, scan_predictions, segmentation_pairs

    if metrics not in ("legacy", "lesionwise", "both"):
        raise InputError(f"--metrics must be legacy, lesionwise or both, got '{metrics}'")
    by_source = scan_predictions(pred_dir)
    refs = reference_segmentations(ref_dir)
    labels = resolve_labels(refs, labels, ref_dir)
    rows = []
    for case, source, pred_file, pred, ref_file, ref in segmentation_pairs(pred_dir, by_source, refs, allow_missing):
        row: dict = {"case": case}
        try:
            if metrics in ("legacy", "both"):
                row.update(brats_metrics(pred[0], ref[0], labels, spacing=ref[2]))
            if metrics in ("lesionwise", "both"):
                row.update(lesionwise_metrics(pred[0], ref[0], labels, ref[2], challenge))
        except InputError as exc:
            raise InputError(f"{pred_file} vs {ref_file}: {exc}") from exc
        rows.append({**row, **({"source": source} if source is not None else {})})
    columns = ("case",) + (METRIC_COLUMNS if metrics != "lesionwise" else ()) + (
        LESIONWISE_COLUMNS if metrics != "legacy" else ()
    )
    return rows, columns


def lesionwise_table(rows: list[dict], fmt: str = "markdown") -> str:
    """Lesion-wise Dice (%) and HD95 (mm), mean ± std over cases, and lesion counts summed, per source."""
    from p2gmed.evaluation.tables import Table, _source_key, _source_label, cell

    header = ["Source", "LW Dice WT", "LW Dice TC", "LW Dice ET", "LW HD95 WT", "LW HD95 TC", "LW HD95 ET",
              "TP/FP/FN WT", "TP/FP/FN TC", "TP/FP/FN ET"]
    body = []
    for source in sorted({r.get("source") for r in rows}, key=_source_key):
        group = [r for r in rows if r.get("source") == source]
        line = [_source_label(source)]
        line += [cell([g[f"lw_dice_{r}"] for g in group], 2, 100.0) for r in REGION_NAMES]
        line += [cell([g[f"lw_hd95_{r}"] for g in group], 2) for r in REGION_NAMES]
        line += ["/".join(str(sum(int(g[f"lw_{k}_{r}"]) for g in group)) for k in ("tp", "fp", "fn"))
                 for r in REGION_NAMES]
        body.append(line)
    notes = ["BraTS 2023 lesion-wise metrics (lesion Dice in %, HD95 in mm, 374 mm per missed or false lesion); "
             "mean ± std (population) over cases; lesion counts summed over cases."]
    return Table(header, body, notes).render(fmt)
