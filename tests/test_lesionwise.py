"""BraTS 2023 lesion-wise Dice and HD95 on hand-built cases whose values are worked out by hand.

Cubes of 4^3 = 64 voxels (64 mm^3 at 1 mm, above the 50 mm^3 minimum); BraTS-GLI settings (dilation 3,
minimum 50 mm^3) unless a test says otherwise; a missed or false lesion costs Dice 0 and HD95 374 mm.
"""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest

from p2gmed.cli import main
from p2gmed.errors import InputError
from p2gmed.evaluation.lesionwise import LESIONWISE_COLUMNS, lesionwise_metrics, lesionwise_region

SHAPE = (48, 40, 40)


def cube(corner, size=4, shape=SHAPE):
    mask = np.zeros(shape, bool)
    x, y, z = corner
    mask[x : x + size, y : y + size, z : z + size] = True
    return mask


def score(pred, ref, **kw):
    return lesionwise_region(pred, ref, (1.0, 1.0, 1.0), kw.pop("dilation", 3), kw.pop("min_volume", 50.0))


def test_perfect_single_lesion():
    lesion = cube((10, 10, 10))
    assert score(lesion, lesion) == {"dice": 1.0, "hd95": 0.0, "tp": 1, "fp": 0, "fn": 0}


def test_a_false_positive_lesion_halves_dice_and_costs_374():
    lesion = cube((10, 10, 10))
    pred = lesion | cube((35, 30, 30), size=1)  # one stray voxel far away: a false-positive lesion of any size
    # Dice (1 + 0) / (1 lesion + 1 FP); HD95 (0 + 374) / 2
    assert score(pred, lesion) == {"dice": 0.5, "hd95": 187.0, "tp": 1, "fp": 1, "fn": 0}


def test_a_missed_lesion_costs_dice_0_and_374():
    first, second = cube((5, 5, 5)), cube((30, 25, 25))
    assert score(first, first | second) == {"dice": 0.5, "hd95": 187.0, "tp": 1, "fp": 0, "fn": 1}


def test_shifted_prediction_by_hand():
    # cube shifted by one voxel along x: overlap 3x4x4 = 48, Dice 2*48/128 = 0.75. Of each cube's 56 surface voxels
    # (64 minus the 2^3 interior) 20 lie 1 mm from the other surface (16 on the leading face, 4 on the trailing
    # face's interior) and 36 on it: 40 of the 112 pooled distances are 1, so the 95th percentile is 1 mm.
    ref = cube((10, 10, 10))
    pred = np.roll(ref, 1, axis=0)
    assert score(pred, ref) == {"dice": 0.75, "hd95": 1.0, "tp": 1, "fp": 0, "fn": 0}


def test_small_reference_lesions_are_not_counted_and_their_matches_are_not_false_positives():
    big, small = cube((10, 10, 10)), cube((35, 30, 30), size=2)  # 8 mm^3 <= 50
    assert score(big | small, big | small) == {"dice": 1.0, "hd95": 0.0, "tp": 1, "fp": 0, "fn": 0}
    assert score(big, big | small) == {"dice": 1.0, "hd95": 0.0, "tp": 1, "fp": 0, "fn": 0}  # missed: not an FN
    # with a lower minimum (BraTS-MET: 2 mm^3) the small lesion counts: missed -> (1 + 0) / 2
    assert score(big, big | small, dilation=1, min_volume=2.0)["dice"] == 0.5


def test_nearby_reference_lesions_merge_within_the_dilation():
    # two cubes 2 voxels apart merge into one 128-voxel lesion after 3 dilations; finding one of them gives the
    # merged lesion a Dice of 2*64 / (64 + 128) = 2/3 and no missed lesion
    a, b = cube((10, 10, 10)), cube((16, 10, 10))
    merged = score(a, a | b)
    assert merged["dice"] == pytest.approx(2 / 3) and (merged["tp"], merged["fn"]) == (1, 0)
    # 10 voxels apart they stay two lesions: (1 + 0) / 2
    far = score(a, a | cube((24, 10, 10)))
    assert far["dice"] == 0.5 and (far["tp"], far["fn"]) == (1, 1)


def test_a_prediction_near_but_not_on_the_lesion_is_a_match_with_dice_0():
    ref = cube((10, 10, 10))
    pred = cube((15, 10, 10))  # one empty voxel between them: inside the 3-voxel neighbourhood
    result = score(pred, ref)
    assert (result["dice"], result["tp"], result["fp"], result["fn"]) == (0.0, 1, 0, 0)
    assert result["hd95"] == pytest.approx(5.0)  # far faces 5 voxels apart dominate the 95th percentile


def test_empty_cases():
    empty = np.zeros(SHAPE, bool)
    assert score(empty, empty) == {"dice": 1.0, "hd95": 0.0, "tp": 0, "fp": 0, "fn": 0}
    assert score(cube((1, 1, 1)), empty) == {"dice": 0.0, "hd95": 374.0, "tp": 0, "fp": 1, "fn": 0}
    assert score(empty, cube((1, 1, 1))) == {"dice": 0.0, "hd95": 374.0, "tp": 0, "fp": 0, "fn": 1}


def test_regions_of_a_label_volume_and_spacing():
    ref = np.zeros(SHAPE, np.uint8)
    ref[cube((5, 5, 5))] = 2  # edema far from the core
    ref[cube((30, 25, 25))] = 3  # enhancing tumour
    pred = np.where(ref == 3, 3, 0).astype(np.uint8)  # the edema lesion is missed
    result = lesionwise_metrics(pred, ref, "brats2023")
    assert set(result) == set(LESIONWISE_COLUMNS)
    assert (result["lw_dice_wt"], result["lw_hd95_wt"], result["lw_fn_wt"]) == (0.5, 187.0, 1)
    assert (result["lw_dice_tc"], result["lw_dice_et"], result["lw_fp_et"]) == (1.0, 1.0, 0)
    # at 0.5 mm voxels a 4^3 cube is 8 mm^3: every lesion is below the minimum, nothing is counted
    small = lesionwise_metrics(pred, ref, "brats2023", spacing=(0.5, 0.5, 0.5))
    assert (small["lw_dice_wt"], small["lw_hd95_wt"], small["lw_tp_wt"], small["lw_fn_wt"]) == (1.0, 0.0, 0, 0)
    with pytest.raises(InputError, match="challenge"):
        lesionwise_metrics(pred, ref, "brats2023", challenge="BraTS-XYZ")
    with pytest.raises(InputError, match="label values"):
        lesionwise_metrics(np.full(SHAPE, 4, np.uint8), ref, "brats2023")


@pytest.mark.parametrize("metrics", ["lesionwise", "both"])
def test_cli_metrics_columns(tmp_path, metrics):
    ref = np.zeros(SHAPE, np.uint8)
    ref[cube((10, 10, 10))] = 3
    pred = ref.copy()
    pred[cube((35, 30, 30), size=1)] = 3
    for folder, data in (("ref", ref), ("pred", pred)):
        (tmp_path / folder).mkdir()
        nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / folder / "c1.nii.gz"))  # nnU-Net naming
    out = tmp_path / "m.csv"
    assert main(["evaluate", "brats", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"),
                 "--labels", "brats2023", "--metrics", metrics, "--out", str(out)]) == 0
    (row,) = list(csv.DictReader(out.open()))
    assert ("dice_wt" in row) == (metrics == "both")
    assert float(row["lw_dice_et"]) == 0.5 and float(row["lw_hd95_et"]) == 187.0 and row["lw_fp_et"] == "1"
    assert "lesion-wise" in out.with_suffix(".md").read_text()
