"""BraTS metrics against MONAI's DiceMetric, a brute-force HD95, the legacy edge-case table, and the paper's
own Table 3 numbers recomputed from its Table 10."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from p2gmed.errors import InputError
from p2gmed.evaluation.brats import HD95_ONE_EMPTY, brats_metrics, hd95
from p2gmed.evaluation.tables import subset_detail_table, subset_table

SHAPE = (20, 22, 18)


def _random_labels(seed: int, et: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    seg = np.zeros(SHAPE, np.int64)
    seg[4:16, 5:17, 3:15] = rng.choice([0, 1, 2, et], size=(12, 12, 12), p=[0.3, 0.2, 0.3, 0.2])
    return seg


def _monai_dice(pred_2018: np.ndarray, ref_2018: np.ndarray) -> dict[str, float]:
    import torch
    from monai.metrics import DiceMetric
    from monai.transforms import ConvertToMultiChannelBasedOnBratsClasses

    to_channels = ConvertToMultiChannelBasedOnBratsClasses()
    p = torch.as_tensor(np.asarray(to_channels(pred_2018[None]))).float()[None]
    r = torch.as_tensor(np.asarray(to_channels(ref_2018[None]))).float()[None]
    dice = DiceMetric(include_background=True, reduction="none", ignore_empty=False)(p, r)[0]
    return {"dice_tc": float(dice[0]), "dice_wt": float(dice[1]), "dice_et": float(dice[2])}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dice_matches_monai_on_random_labels(seed):
    pred, ref = _random_labels(seed, 4), _random_labels(seed + 10, 4)
    got = brats_metrics(pred, ref, "brats2018")
    for key, value in _monai_dice(pred, ref).items():
        assert got[key] == pytest.approx(value, abs=1e-5)
    # the same volumes in BraTS 2023 labels (ET = 3) give the same numbers
    got_2023 = brats_metrics(np.where(pred == 4, 3, pred), np.where(ref == 4, 3, ref), "brats2023")
    assert {k: got_2023[k] for k in got} == pytest.approx(got)


def _et_only(n_voxels: int) -> np.ndarray:
    seg = np.zeros((30, 30, 30), np.int64)
    seg.reshape(-1)[:n_voxels] = 3
    return seg


def test_legacy_edge_cases_and_et_postprocessing():
    empty = np.zeros((30, 30, 30), np.int64)
    assert brats_metrics(empty, empty)["dice_et"] == 1.0 and brats_metrics(empty, empty)["dice_et_pp"] == 1.0
    small = brats_metrics(_et_only(8), empty)
    assert (small["dice_wt"], small["dice_et"], small["dice_et_pp"]) == (0.0, 0.0, 1.0)
    missed = brats_metrics(empty, _et_only(600))
    assert (missed["dice_et"], missed["dice_et_pp"], missed["dice_tc"]) == (0.0, 0.0, 0.0)
    # 499 predicted ET voxels are dropped by post-processing, 500 are kept
    ref = _et_only(600)
    assert brats_metrics(_et_only(499), ref)["dice_et_pp"] == 0.0
    assert brats_metrics(_et_only(499), ref)["dice_et"] == pytest.approx(2 * 499 / 1099)
    assert brats_metrics(_et_only(500), ref)["dice_et_pp"] == pytest.approx(2 * 500 / 1100)
    # WT and TC use the raw prediction
    assert brats_metrics(_et_only(499), ref)["dice_wt"] == pytest.approx(2 * 499 / 1099)


def test_et_postprocessing_threshold_is_a_volume_on_any_grid():
    """500 voxels at 1 mm^3 is 500 mm^3: on a 3 mm grid (27 mm^3 a voxel) that is 18.5 voxels, so a perfect
    prediction of a 100-voxel (2700 mm^3) ET is kept, and a 15-voxel (405 mm^3) one is dropped."""
    ref = _et_only(100)
    assert brats_metrics(ref, ref, spacing=(3.0, 3.0, 3.0))["dice_et_pp"] == 1.0
    assert brats_metrics(ref, ref)["dice_et_pp"] == 0.0  # the same 100 voxels at 1 mm are 100 mm^3
    small = _et_only(18)
    assert brats_metrics(small, ref, spacing=(3.0, 3.0, 3.0))["dice_et_pp"] == 0.0  # 486 mm^3 < 500
    assert brats_metrics(_et_only(19), ref, spacing=(3.0, 3.0, 3.0))["dice_et_pp"] == pytest.approx(2 * 19 / 119)
    anisotropic = brats_metrics(_et_only(250), _et_only(250), spacing=(1.0, 1.0, 2.0))  # 500 mm^3: kept
    assert anisotropic["dice_et_pp"] == 1.0


def test_hd95_empty_conventions():
    empty = np.zeros(SHAPE, bool)
    blob = empty.copy()
    blob[5:9, 5:9, 5:9] = True
    assert hd95(empty, empty) == 0.0
    assert hd95(blob, empty) == HD95_ONE_EMPTY and hd95(empty, blob) == HD95_ONE_EMPTY
    got = brats_metrics(np.zeros(SHAPE, np.int64), np.zeros(SHAPE, np.int64))
    assert (got["hd95_wt"], got["hd95_tc"], got["hd95_et"]) == (0.0, 0.0, 0.0)


def test_hd95_hand_worked_anisotropic():
    a, b = np.zeros(SHAPE, bool), np.zeros(SHAPE, bool)
    a[5, 5, 2], b[5, 5, 5] = True, True
    assert hd95(a, b, spacing=(1.0, 1.0, 2.0)) == pytest.approx(6.0)
    assert hd95(a, b, spacing=(0.5, 3.0, 1.0)) == pytest.approx(3.0)


def _surface_points(mask: np.ndarray, spacing) -> np.ndarray:
    """Voxels with a face neighbour outside the mask (the array border counts as outside), in mm."""
    padded = np.pad(mask, 1)
    inner = padded[1:-1, 1:-1, 1:-1]
    interior = inner.copy()
    for axis in range(3):
        for shift in (-1, 1):
            interior &= np.roll(padded, shift, axis=axis)[1:-1, 1:-1, 1:-1]
    return np.argwhere(mask & ~interior) * np.asarray(spacing)


@pytest.mark.parametrize("seed", [0, 1])
def test_hd95_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    a = np.zeros(SHAPE, bool)
    b = np.zeros(SHAPE, bool)
    a[3:12, 4:15, 2:10] = rng.random((9, 11, 8)) > 0.3
    b[6:17, 2:12, 5:16] = rng.random((11, 10, 11)) > 0.4
    a[0, 0, 0] = True  # a voxel on the array border
    spacing = (1.0, 1.2, 2.5)
    pa, pb = _surface_points(a, spacing), _surface_points(b, spacing)
    d = cdist(pa, pb)
    expected = np.percentile(np.concatenate([d.min(1), d.min(0)]), 95)
    assert hd95(a, b, spacing) == pytest.approx(expected, abs=1e-9)


def test_labels_outside_the_convention_are_rejected():
    seg = _random_labels(0, 4)
    with pytest.raises(InputError, match=r"label values \[4\].*--labels"):
        brats_metrics(seg, seg, "brats2023")
    with pytest.raises(InputError, match="shape"):
        brats_metrics(seg[:-1], seg, "brats2018")
    with pytest.raises(InputError, match="convention"):
        brats_metrics(seg, seg, "autopet")


# The paper's Table 10, row "Ours / Tumour core", grouped by the number of missing modalities (3, 2, 1, 0).
PAPER_TC = [75.83, 71.2, 75.29, 75.71, 80.66, 83.6, 79.23, 74.83, 79.51, 79.52, 83.92, 82.78, 86.65, 81.22, 86.72]
SUBSETS = [
    "t2w", "t1c", "t1n", "t2f", "t1c+t2w", "t1n+t1c", "t1n+t2f", "t1n+t2w", "t2w+t2f", "t1c+t2f",
    "t1n+t1c+t2f", "t1n+t2w+t2f", "t1c+t2w+t2f", "t1n+t1c+t2w", "t1n+t1c+t2w+t2f",
]


def _subset_rows() -> list[dict]:
    """Two cases per subset whose mean TC Dice is the paper's value."""
    rows = []
    for subset, value in zip(SUBSETS, PAPER_TC):
        for offset in (-0.01, 0.01):
            dice = value / 100 + offset
            rows.append({"case": f"c{offset}", "source": f"from-{subset}", "dice_wt": 0.9, "dice_tc": dice,
                         "dice_et": 0.5, "dice_et_pp": 0.6, "hd95_wt": 1.0, "hd95_tc": 2.0, "hd95_et": 3.0})
    return rows


def test_subset_table_reproduces_paper_table3():
    """Table 3 'Ours / Tumor core': all 79.78 (std 4.55), full 86.72, one missing 83.64 (std 2.29)."""
    text = subset_table(_subset_rows(), fmt="csv").splitlines()
    header = text[0].split(",")
    tc = dict(zip(header, next(line for line in text if line.startswith("Tumour core")).split(",")))
    assert (tc["All: mean"], tc["All: std"], tc["Full modality"]) == ("79.78", "4.55", "86.72")
    assert (tc["Missing 1: mean"], tc["Missing 1: std"]) == ("83.64", "2.29")
    assert tc["Missing 2: mean"] == "79.56" and tc["Missing 3: mean"] == "74.51"


def test_subset_detail_table_has_every_subset_most_missing_first():
    lines = subset_detail_table(_subset_rows(), fmt="csv").splitlines()
    assert len(lines[0].split(",")) == 16
    assert lines[1].split(",")[1:] == ["3"] * 4 + ["2"] * 6 + ["1"] * 4 + ["0"]
    tc = next(line for line in lines if line.startswith("Tumour core")).split(",")[1:]
    assert sorted(float(v) for v in tc) == sorted(PAPER_TC)
    assert tc[-1] == "86.72"


def test_subset_table_counts_missing_against_four_modalities():
    rows = [r for r in _subset_rows() if r["source"] in ("from-t1n", "from-t2f")]
    lines = subset_table(rows, fmt="csv").splitlines()
    tc = dict(zip(lines[0].split(","), next(line for line in lines if line.startswith("Tumour core")).split(",")))
    assert tc["Full modality"] == "n/a" and tc["Missing 1: mean"] == "n/a"
    assert tc["Missing 3: mean"] == f"{(75.29 + 75.71) / 2:.2f}"
