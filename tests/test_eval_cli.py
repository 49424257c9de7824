"""`p2g evaluate ...` end to end on tiny NIfTI folders: file matching, CSV columns, summaries, exit codes."""

from __future__ import annotations

import csv
import sys
import types
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from p2gmed.cli import main
from p2gmed.data.records import Subject
from p2gmed.evaluation.synthesis import synthesis_metrics

SHAPE = (16, 16, 12)
AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])


def _save(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def synthesis_dirs(tmp_path):
    rng = np.random.default_rng(0)
    refs = {}
    for case in ("caseA", "caseB"):
        for mod in ("t1n", "t2f"):
            ref = (rng.random(SHAPE) * 100).astype(np.float32)
            refs[case, mod] = ref
            _save(tmp_path / "ref" / f"{case}_{mod}.nii.gz", ref)
            _save(tmp_path / "pred" / f"{case}_{mod}.nii.gz", ref + rng.normal(0, 5, SHAPE).astype(np.float32))
    (tmp_path / "pred" / "caseA.json").write_text("{}")  # p2g predict writes these; they are ignored
    return tmp_path, refs


def test_synthesis_flat(synthesis_dirs, capsys):
    root, refs = synthesis_dirs
    out = root / "res" / "synth.csv"
    assert main(["evaluate", "synthesis", "--pred", str(root / "pred"), "--ref", str(root / "ref"),
                 "--out", str(out), "--convention", "unit"]) == 0
    rows = _read_csv(out)
    assert list(rows[0]) == ["case", "modality", "psnr", "nmse", "ssim"]
    assert {(r["case"], r["modality"]) for r in rows} == set(refs)
    row = next(r for r in rows if r["case"] == "caseB" and r["modality"] == "t2f")
    pred = nib.load(str(root / "pred" / "caseB_t2f.nii.gz")).get_fdata()
    expected = synthesis_metrics(pred, refs["caseB", "t2f"].astype(np.float64), "unit")
    assert float(row["ssim"]) == pytest.approx(expected["ssim"], rel=1e-6)
    assert float(row["psnr"]) == pytest.approx(expected["psnr"], rel=1e-6)
    assert "FLAIR PSNR" in (root / "res" / "synth.md").read_text()
    assert (root / "res" / "synth.summary.csv").exists()
    assert "FLAIR PSNR" in capsys.readouterr().out


def test_synthesis_subsets_add_a_source_column(synthesis_dirs):
    root, _ = synthesis_dirs
    for sub in ("from-t1n", "from-flair+t1"):  # aliases in folder names are accepted and canonicalised
        for f in (root / "pred").glob("*.nii.gz"):
            _save(root / "subsets" / sub / f.name, nib.load(str(f)).get_fdata().astype(np.float32))
    out = root / "subsets.csv"
    assert main(["evaluate", "synthesis", "--pred", str(root / "subsets"), "--ref", str(root / "ref"),
                 "--out", str(out), "--convention", "paper"]) == 0
    rows = _read_csv(out)
    assert list(rows[0]) == ["case", "modality", "psnr", "nmse", "ssim", "source"]
    assert {r["source"] for r in rows} == {"from-t1n", "from-t1n+t2f"}
    assert len(rows) == 8


def test_missing_and_extra_cases(synthesis_dirs, capsys):
    root, _ = synthesis_dirs
    (root / "pred" / "caseB_t1n.nii.gz").unlink()
    out = root / "m.csv"
    args = ["evaluate", "synthesis", "--pred", str(root / "pred"), "--ref", str(root / "ref"), "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "without a prediction" in err and "caseB/t1n" in err and "--allow-missing" in err
    assert not out.exists() and not out.with_suffix(".md").exists()
    assert main(args + ["--allow-missing"]) == 0
    assert len(_read_csv(out)) == 3
    _save(root / "pred" / "caseC_t1n.nii.gz", np.ones(SHAPE, np.float32))
    (root / "ref" / "caseA_t2f.nii.gz").unlink()
    out.unlink()
    assert main(args) == 2
    assert "without a reference" in capsys.readouterr().err and not out.exists()


def test_nan_prediction_is_reported_by_file(synthesis_dirs, capsys):
    root, _ = synthesis_dirs
    bad = np.ones(SHAPE, np.float32)
    bad[1, 2, 3] = np.nan
    _save(root / "pred" / "caseA_t2f.nii.gz", bad)
    out = root / "x.csv"
    assert main(["evaluate", "synthesis", "--pred", str(root / "pred"), "--ref", str(root / "ref"),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "caseA_t2f.nii.gz contains NaN" in err and "Traceback" not in err
    assert not out.exists()


def test_grid_mismatch_bad_names_and_bad_out(synthesis_dirs, capsys):
    root, _ = synthesis_dirs
    base = ["evaluate", "synthesis", "--pred", str(root / "pred"), "--ref", str(root / "ref")]
    _save(root / "pred" / "caseA_t1n.nii.gz", np.ones(SHAPE, np.float32), np.diag([1.0, 1.0, 3.0, 1.0]))
    assert main(base + ["--out", str(root / "a.csv")]) == 2
    assert "voxel grid" in capsys.readouterr().err
    assert main(base + ["--out", str(root / "a.md")]) == 2
    assert ".csv" in capsys.readouterr().err
    # a bare <case>.nii.gz is a segmentation in nnU-Net naming: two segmentations of one case are refused
    _save(root / "pred" / "caseA_seg.nii.gz", np.ones(SHAPE, np.float32))
    _save(root / "pred" / "caseA.nii.gz", np.ones(SHAPE, np.float32))
    assert main(base + ["--out", str(root / "a.csv")]) == 2
    assert "both the segmentation of case 'caseA'" in capsys.readouterr().err


def _seg(points: dict[tuple[int, int, int], int]) -> np.ndarray:
    seg = np.zeros(SHAPE, np.uint8)
    for p, v in points.items():
        seg[p] = v
    return seg


def test_brats_flat_needs_labels_and_uses_header_spacing(tmp_path, capsys):
    _save(tmp_path / "ref" / "c1_seg.nii.gz", _seg({(5, 5, 2): 2}))
    _save(tmp_path / "pred" / "c1_seg.nii.gz", _seg({(5, 5, 5): 2}))
    base = ["evaluate", "brats", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"),
            "--out", str(tmp_path / "b.csv")]
    assert main(base) == 2
    assert "--labels" in capsys.readouterr().err
    assert main(base + ["--labels", "brats2023"]) == 0
    (row,) = _read_csv(tmp_path / "b.csv")
    assert list(row) == ["case", "dice_wt", "dice_tc", "dice_et", "dice_et_pp", "hd95_wt", "hd95_tc", "hd95_et"]
    assert float(row["hd95_wt"]) == pytest.approx(6.0)  # 3 voxels along z at 2 mm
    assert (float(row["dice_wt"]), float(row["dice_tc"]), float(row["hd95_tc"])) == (0.0, 1.0, 0.0)


def test_brats_dataset_reference_and_subsets(tmp_path, monkeypatch):
    """A reference read by p2gmed.data.read (stubbed here): the label convention comes from the subjects."""
    ref_file = _save(tmp_path / "ds" / "BraTS2021_00001" / "BraTS2021_00001_seg.nii.gz", _seg({(4, 4, 4): 4}))
    subject = Subject("BraTS2021_00001", "BraTS2021_00001", {}, ref_file, "brats21", "brats2018")
    fake = types.ModuleType("p2gmed.data.read")
    fake.read_dataset = lambda root, layout="auto": [subject]
    monkeypatch.setitem(sys.modules, "p2gmed.data.read", fake)
    for sub, value in (("from-t1n", 4), ("from-t1n+t1c+t2w+t2f", 1)):
        _save(tmp_path / "pred" / sub / "BraTS2021_00001_seg.nii.gz", _seg({(4, 4, 4): value}))
    out = tmp_path / "b.csv"
    assert main(["evaluate", "brats", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ds"),
                 "--out", str(out)]) == 0
    rows = {r["source"]: r for r in _read_csv(out)}
    assert float(rows["from-t1n"]["dice_et"]) == 1.0 and float(rows["from-t1n"]["dice_et_pp"]) == 0.0
    assert float(rows["from-t1n+t1c+t2w+t2f"]["dice_et"]) == 0.0
    assert float(rows["from-t1n+t1c+t2w+t2f"]["dice_tc"]) == 1.0
    assert "Table 3" in out.with_suffix(".md").read_text()


def test_autopet_csv_leaves_true_negative_dice_empty(tmp_path):
    affine = np.diag([2.0, 2.0, 2.0, 1.0])  # 0.008 ml voxels
    lesion = _seg({(3, 3, 3): 1, (3, 3, 4): 1})
    _save(tmp_path / "ref" / "p1_seg.nii.gz", lesion, affine)
    _save(tmp_path / "pred" / "p1_seg.nii.gz", _seg({(10, 10, 8): 1}), affine)  # missed + one FP voxel
    _save(tmp_path / "ref" / "p2_seg.nii.gz", _seg({}), affine)
    _save(tmp_path / "pred" / "p2_seg.nii.gz", _seg({}), affine)
    out = tmp_path / "a.csv"
    assert main(["evaluate", "autopet", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"),
                 "--out", str(out)]) == 0
    rows = {r["case"]: r for r in _read_csv(out)}
    assert list(rows["p1"]) == ["case", "dice", "fpv_ml", "fnv_ml"]
    assert rows["p2"]["dice"] == "" and float(rows["p2"]["fpv_ml"]) == 0.0
    assert float(rows["p1"]["fpv_ml"]) == pytest.approx(0.008) and float(rows["p1"]["fnv_ml"]) == pytest.approx(0.016)
    md = out.with_suffix(".md").read_text()
    assert "DICE-" in md and "true negative" in md


def test_missing_prediction_folder(tmp_path, capsys):
    assert main(["evaluate", "autopet", "--pred", str(tmp_path / "nope"), "--ref", str(tmp_path),
                 "--out", str(tmp_path / "a.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err
