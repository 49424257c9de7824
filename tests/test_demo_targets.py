"""The demo's targets and its two trivial synthesis baselines."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from p2gmed.report.demo_targets import (
    FULL,
    Target,
    demo_targets,
    targets_section,
    voxel_map,
    voxelmap_lines,
    write_synthesis_baselines,
)


def test_baselines_copy_the_source_and_fit_the_target_line(demo_brain, tmp_path):
    from p2gmed.data.read import read_dataset

    folders = write_synthesis_baselines(demo_brain, tmp_path)
    subject = read_dataset(demo_brain)[0]
    case = subject.subject_id
    t1 = np.asarray(nib.load(str(subject.images["t1n"])).dataobj, dtype=np.float32)
    t2 = np.asarray(nib.load(str(subject.images["t2w"])).dataobj, dtype=np.float32)
    copy = np.asarray(nib.load(str(folders[0] / "from-t1n" / f"{case}_t2w.nii.gz")).dataobj)
    linear = np.asarray(nib.load(str(folders[1] / "from-t1n" / f"{case}_t2w.nii.gz")).dataobj)
    np.testing.assert_array_equal(copy, t1)
    brain = (t1 != 0) & (t2 != 0)
    # the least-squares line by the normal equations, independently of np.polyfit
    design = np.stack([t1[brain], np.ones(brain.sum())], 1).astype(np.float64)
    a, b = np.linalg.solve(design.T @ design, design.T @ t2[brain])
    np.testing.assert_allclose(linear[t1 != 0], a * t1[t1 != 0] + b, rtol=1e-4, atol=1e-3 * abs(t2).max())
    assert np.all(linear[t1 == 0] == 0)
    # the oracle is better than copying, in squared error on the brain
    assert np.mean((linear[brain] - t2[brain]) ** 2) < np.mean((copy[brain] - t2[brain]) ** 2)
    # the per-voxel table is at least as good as the line (both oracles; the table's class holds every line up
    # to binning, so allow the binning error of a line: a tenth of the line's own error)
    voxelmap = np.asarray(nib.load(str(folders[2] / "from-t1n" / f"{case}_t2w.nii.gz")).dataobj)
    assert np.all(voxelmap[~brain] == 0)
    linear_error = np.mean((linear[brain] - t2[brain]) ** 2)
    assert np.mean((voxelmap[brain] - t2[brain]) ** 2) < 1.1 * linear_error


def test_voxel_map_by_hand_and_on_a_monotone_target():
    source = np.array([1.0, 1.0, 2.0, 2.0, 3.0, 3.0]).reshape(1, 2, 3)
    target = np.array([0.0, 2.0, 4.0, 6.0, 8.0, 10.0]).reshape(1, 2, 3)
    region = np.ones_like(source, dtype=bool)
    # three equal-count bins {1, 1}, {2, 2}, {3, 3}: each voxel gets its bin's mean target
    np.testing.assert_allclose(voxel_map(source, target, region, bins=3).ravel(), [1, 1, 5, 5, 9, 9])
    region[0, 0, 0] = False  # outside the region: zero, and not part of the fit
    np.testing.assert_allclose(voxel_map(source, target, region, bins=3).ravel(), [0, 2, 5, 5, 9, 9])
    # a target that is a smooth increasing function of the source is reproduced up to the bin width
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (20, 20, 20))
    y = np.exp(2 * x)
    mapped = voxel_map(x, y, np.ones_like(x, dtype=bool), bins=64)
    assert np.abs(mapped - y).max() < 2 * np.exp(2) * (2 / 64)  # slope bound x bin width
    assert not voxel_map(x, y, np.zeros_like(x, dtype=bool)).any()


def _csvs(folder: Path, dice_full: float, ssim: dict[str, float]) -> tuple[Path, dict[str, Path]]:
    folder.mkdir(parents=True, exist_ok=True)
    seg = folder / "seg.csv"
    rows = ["case,source,dice_wt,dice_tc,dice_et"]
    rows += [f"c{i},from-t1c+t1n+t2f+t2w,{dice_full},{dice_full - 0.1},{dice_full - 0.2}" for i in (1, 2)]
    rows += ["c1,from-t2f,0.8,0.1,0.1", "c2,from-t2f,0.6,0.1,0.1"]
    seg.write_text("\n".join(rows) + "\n")
    syn = {}
    for name, value in ssim.items():
        syn[name] = folder / f"{name}.csv"
        syn[name].write_text("case,source,modality,psnr,nmse,ssim\n" + "".join(
            f"c1,from-t1n,{m},20,0.1,{value}\n" for m in ("t2w", "t2f")))
    return seg, syn


def test_targets_met_and_missed_are_stated_one_line_each(tmp_path):
    seg, syn = _csvs(tmp_path, 0.9, {"model": 0.9, "copy": 0.7, "linear": 0.895})
    targets = demo_targets(False, seg, syn, seconds=600)
    by_what = {t.what.split(" (")[0].split(":")[0]: t for t in targets}
    assert len(FULL) == 4 and len(targets) == 1 + 3 + 1 + 2 * 3
    assert targets[0].met is True  # 10 minutes <= 15
    assert by_what["WT Dice from all four modalities"].met is True  # 0.9
    assert by_what["TC Dice from all four modalities"].met is True  # 0.8
    assert by_what["ET Dice from all four modalities"].met is True  # 0.7
    assert by_what["WT Dice from FLAIR alone"].met is False and abs(by_what["WT Dice from FLAIR alone"].value - 0.7) < 1e-9
    margins = [t for t in targets if "baseline" in t.what]
    assert [t.met for t in margins] == [True, False, True, False]  # 0.9 - 0.895 is under the 0.01 margin
    lines = targets_section(targets)
    assert "8 of 11 targets met" in lines[2] and sum(line.startswith("- ") for line in lines) == 11
    # the voxelmap reference is reported next to the model and counted as no target
    _, with_reference = _csvs(tmp_path / "ref", 0.9, {"model": 0.83, "voxelmap": 0.86})
    references = voxelmap_lines(with_reference)
    assert len(references) == 2 and "SSIM 0.860; the model 0.830" in references[0] and "T2" in references[0]
    lines = targets_section(targets, references)
    assert "8 of 11 targets met" in lines[2] and references[1] in lines


def test_quick_targets_and_missing_metrics(tmp_path):
    quick = demo_targets(True, None, {}, seconds=200)
    assert [t.met for t in quick] == [False, None]  # 3.3 minutes > 3; no segmentation CSV
    assert "not measured" in quick[1].line() and Target("x", float("nan"), 1.0).met is None
