"""AutoPET metrics against a scipy re-implementation of the official script, hand-built lesion layouts and
hand-worked aggregates."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from p2gmed.errors import InputError
from p2gmed.evaluation.autopet import autopet_metrics, autopet_summary, rows_from_csv

SHAPE = (16, 18, 14)


def _official_like(pred: np.ndarray, gt: np.ndarray, voxel_ml: float) -> tuple[float, float, float]:
    """The autoPET-I/II ``compute_metrics`` loop, with scipy's 18-connectivity labelling instead of cc3d."""
    structure = ndimage.generate_binary_structure(3, 2)

    def unmatched(mask, other):
        labels, n = ndimage.label(mask, structure=structure)
        return sum(int((labels == i).sum()) for i in range(1, n + 1) if not (other[labels == i]).any())

    with np.errstate(invalid="ignore", divide="ignore"):
        dice = 2 * float((gt & pred).sum()) / float(gt.sum() + pred.sum()) if (gt.sum() + pred.sum()) else math.nan
    return dice, unmatched(pred, gt) * voxel_ml, unmatched(gt, pred) * voxel_ml


@pytest.mark.parametrize("seed", range(4))
def test_matches_scipy_reimplementation_on_random_masks(seed):
    rng = np.random.default_rng(seed)
    pred = rng.random(SHAPE) > 0.85
    gt = rng.random(SHAPE) > 0.88
    got = autopet_metrics(pred, gt, voxel_ml=0.064)
    dice, fpv, fnv = _official_like(pred, gt, 0.064)
    assert got["dice"] == pytest.approx(dice, abs=1e-12)
    assert got["fpv_ml"] == pytest.approx(fpv, abs=1e-9)
    assert got["fnv_ml"] == pytest.approx(fnv, abs=1e-9)


def test_connectivity_is_18_not_26_nor_6():
    gt = np.zeros(SHAPE, bool)
    pred = np.zeros(SHAPE, bool)
    gt[5, 5, 5] = True
    pred[5, 5, 5] = True  # a hit
    pred[6, 6, 5] = True  # edge neighbour of the hit: same 18-component, not a false positive
    pred[4, 4, 4] = True  # corner neighbour only: its own component, a false positive of 1 voxel
    got = autopet_metrics(pred, gt, voxel_ml=1.0)
    assert got["fpv_ml"] == 1.0 and got["fnv_ml"] == 0.0
    assert got["dice"] == pytest.approx(2 / 4)


def test_official_edge_cases():
    empty = np.zeros(SHAPE, bool)
    lesion = empty.copy()
    lesion[2:6, 2:6, 2:6] = True  # 64 voxels
    elsewhere = empty.copy()
    elsewhere[10:13, 10:13, 8:11] = True  # 27 voxels
    tn = autopet_metrics(empty, empty, 0.5)
    assert math.isnan(tn["dice"]) and (tn["fpv_ml"], tn["fnv_ml"]) == (0.0, 0.0)
    assert tn["ref_positive"] is False and tn["pred_positive"] is False
    fp = autopet_metrics(lesion, empty, 0.5)
    assert (fp["dice"], fp["fpv_ml"], fp["fnv_ml"]) == (0.0, 32.0, 0.0)
    fn = autopet_metrics(empty, lesion, 0.5)
    assert (fn["dice"], fn["fpv_ml"], fn["fnv_ml"]) == (0.0, 0.0, 32.0)
    both = autopet_metrics(elsewhere, lesion, 0.5)
    assert (both["dice"], both["fpv_ml"], both["fnv_ml"]) == (0.0, 13.5, 32.0)
    perfect = autopet_metrics(lesion.astype(np.uint8) * 7, lesion, 0.5)  # any non-zero value is lesion
    assert (perfect["dice"], perfect["fpv_ml"], perfect["fnv_ml"]) == (1.0, 0.0, 0.0)


def test_partially_hit_lesion_adds_no_volume():
    gt = np.zeros(SHAPE, bool)
    gt[2:8, 2:8, 2:8] = True
    pred = np.zeros(SHAPE, bool)
    pred[7:10, 7:10, 7:10] = True  # overlaps gt in one voxel
    got = autopet_metrics(pred, gt, 1.0)
    assert (got["fpv_ml"], got["fnv_ml"]) == (0.0, 0.0)
    assert got["dice"] == pytest.approx(2 / (216 + 27))


def _row(dice, ref_positive, pred_positive, fpv=0.0, fnv=0.0):
    return {"dice": dice, "fpv_ml": fpv, "fnv_ml": fnv, "ref_positive": ref_positive, "pred_positive": pred_positive}


def test_summary_hand_worked():
    rows = [
        _row(0.8, True, True, fpv=2.0), _row(0.6, True, True),  # two true positives
        _row(0.0, True, False, fnv=5.0),  # a false negative
        _row(math.nan, False, False),  # a true negative
        _row(0.0, False, True, fpv=4.0),  # a false positive
    ]
    s = autopet_summary(rows)
    assert (s["n"], s["tp"], s["fn"], s["tn"], s["fp"]) == (5, 2, 1, 1, 1)
    assert s["dice_challenge"] == pytest.approx((0.8 + 0.6 + 0.0) / 3)
    assert s["dice_paper"] == pytest.approx((0.8 + 0.6) / 5)
    assert s["dice_paper"] == pytest.approx(s["dice_challenge"] * 3 / 5)  # identity of the reference notes
    assert s["dice_minus"] == pytest.approx((0.8 + 0.6 + 1.0) / 5)
    assert s["fpv_ml"] == pytest.approx(6.0 / 5) and s["fnv_ml"] == pytest.approx(1.0)
    assert (s["tpr"], s["fnr"]) == pytest.approx((2 / 3, 1 / 3))
    assert (s["tnr"], s["fpr"]) == pytest.approx((0.5, 0.5))


def test_summary_without_negatives_has_nan_rates():
    s = autopet_summary([_row(0.5, True, True)])
    assert math.isnan(s["tnr"]) and math.isnan(s["fpr"]) and s["tpr"] == 1.0


def test_bad_input():
    with pytest.raises(InputError, match="shape"):
        autopet_metrics(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), 1.0)
    with pytest.raises(InputError, match="voxel volume"):
        autopet_metrics(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), 0.0)


def test_rows_read_back_from_the_csv_keep_the_case_level_flags(tmp_path):
    import csv

    from p2gmed.evaluation.tables import AUTOPET_COLUMNS, write_csv

    def box(*corners):
        mask = np.zeros(SHAPE, bool)
        for z, y, x in corners:
            mask[z:z + 3, y:y + 3, x:x + 3] = True
        return mask

    empty = np.zeros(SHAPE, bool)
    layouts = {  # name: (prediction, reference)
        "overlap": (box((2, 2, 2)), box((3, 3, 3))),
        "disjoint": (box((1, 1, 1)), box((10, 10, 8))),  # both positive, Dice 0: still a true positive case
        "missed": (empty, box((5, 5, 5))),
        "spurious": (box((5, 5, 5)), empty),
        "empty": (empty, empty),
    }
    truth = [{"case": name, **autopet_metrics(pred, ref, 0.008)} for name, (pred, ref) in layouts.items()]
    write_csv(tmp_path / "m.csv", truth, AUTOPET_COLUMNS)
    with open(tmp_path / "m.csv", newline="") as f:
        back = rows_from_csv(list(csv.DictReader(f)), "m.csv")
    for want, got in zip(truth, back, strict=True):
        assert (got["ref_positive"], got["pred_positive"]) == (want["ref_positive"], want["pred_positive"]), want
    assert autopet_summary(back)["dice_minus"] == pytest.approx(autopet_summary(truth)["dice_minus"])
    assert [(r["ref_positive"], r["pred_positive"]) for r in back][:2] == [(True, True), (True, True)]
    with pytest.raises(InputError, match="m.csv: case a: fpv_ml 'x'"):
        rows_from_csv([{"case": "a", "dice": "0.5", "fpv_ml": "x", "fnv_ml": "0"}], "m.csv")
