"""`p2g data check` names each bad file and exits 2; `p2g data make-demo` refuses foreign folders."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from p2gmed.cli import main
from p2gmed.data.check import check_dataset

SHAPE = (8, 8, 6)
MODS23 = ("t1n", "t1c", "t2w", "t2f")
MODS21 = ("t1", "t1ce", "t2", "flair")


def save(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


def make_brats(root: Path, layout: str = "brats23", cases: int = 2) -> list[Path]:
    """Clean tiny BraTS data: `cases` case folders; returns them."""
    rng = np.random.default_rng(0)
    dirs = []
    for i in range(cases):
        case = f"BraTS-GLI-{i:05d}-000" if layout == "brats23" else f"BraTS2021_{i:05d}"
        sep, names, et = ("-", MODS23, 3) if layout == "brats23" else ("_", MODS21, 4)
        for n in names:
            save(root / case / f"{case}{sep}{n}.nii.gz", rng.random(SHAPE).astype(np.float32))
        seg = np.zeros(SHAPE, np.uint8)
        seg[2:4, 2:4, 2:4] = (1, 2, et)[i % 3]
        save(root / case / f"{case}{sep}seg.nii.gz", seg)
        dirs.append(root / case)
    return dirs


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_clean_dataset_passes_with_summary(tmp_path, capsys):
    make_brats(tmp_path)
    rc, out, err = run_cli(["data", "check", str(tmp_path)], capsys)
    assert rc == 0, err
    assert "brats23" in out and "2 subjects" in out and "8x8x6" in out and "all files OK" in out
    assert "values seen [0, 1, 2]" in out


def _check_fails(root: Path, bad: Path, words: str, capsys) -> str:
    rc, _, err = run_cli(["data", "check", str(root)], capsys)
    assert rc == 2
    lines = [line for line in err.strip().splitlines() if str(bad) in line]
    assert len(lines) == 1, err  # one sentence for the bad file, naming it
    assert words in lines[0], err
    return err


def test_truncated_gzip_is_named(tmp_path, capsys):
    (case, _) = make_brats(tmp_path)
    bad = case / f"{case.name}-t2w.nii.gz"
    raw = bad.read_bytes()
    bad.write_bytes(raw[: len(raw) // 2])
    _check_fails(tmp_path, bad, "truncated", capsys)


def test_not_a_nifti_is_named(tmp_path, capsys):
    (case, _) = make_brats(tmp_path)
    bad = case / f"{case.name}-t1c.nii.gz"
    bad.write_bytes(gzip.compress(b"this is not an image" * 40))
    _check_fails(tmp_path, bad, "not a readable NIfTI", capsys)


def test_nan_is_named(tmp_path, capsys):
    (case, _) = make_brats(tmp_path)
    data = np.ones(SHAPE, np.float32)
    data[1, 1, 1] = np.nan
    bad = save(case / f"{case.name}-t1n.nii.gz", data)
    _check_fails(tmp_path, bad, "1 NaN/Inf", capsys)


def test_shape_mismatch_is_named(tmp_path, capsys):
    (case, _) = make_brats(tmp_path)
    bad = save(case / f"{case.name}-t2f.nii.gz", np.ones((8, 8, 5), np.float32))
    err = _check_fails(tmp_path, bad, "shape (8, 8, 5)", capsys)
    assert f"{case.name}-t1n.nii.gz" in err  # the reference file is named too


def test_affine_mismatch_is_named_but_tiny_differences_pass(tmp_path, capsys):
    (case, _) = make_brats(tmp_path)
    shifted = np.eye(4)
    shifted[0, 3] = 0.0005  # below the 1e-3 mm tolerance
    save(case / f"{case.name}-t1c.nii.gz", np.ones(SHAPE, np.float32), shifted)
    assert not check_dataset(tmp_path).problems
    shifted[0, 3] = 0.5
    bad = save(case / f"{case.name}-t1c.nii.gz", np.ones(SHAPE, np.float32), shifted)
    _check_fails(tmp_path, bad, "affine", capsys)


@pytest.mark.parametrize("layout, value", [("brats23", 4), ("brats23", 5), ("brats21", 3)])
def test_label_values_outside_convention(tmp_path, capsys, layout, value):
    (case, _) = make_brats(tmp_path, layout)
    seg = np.zeros(SHAPE, np.uint8)
    seg[0, 0, 0] = value
    sep = "-" if layout == "brats23" else "_"
    bad = save(case / f"{case.name}{sep}seg.nii.gz", seg)
    _check_fails(tmp_path, bad, f"label values [{value}]", capsys)


def test_label_shape_must_equal_image_shape(tmp_path, capsys):
    (case, _) = make_brats(tmp_path)
    bad = save(case / f"{case.name}-seg.nii.gz", np.zeros((4, 4, 4), np.uint8))
    _check_fails(tmp_path, bad, "shape (4, 4, 4)", capsys)


def test_missing_modality_is_reported_not_fatal(tmp_path, capsys):
    (case, _) = make_brats(tmp_path)
    (case / f"{case.name}-t1c.nii.gz").unlink()
    rc, out, err = run_cli(["data", "check", str(tmp_path)], capsys)
    assert rc == 0, err
    assert "t1c      present in 1/2, missing in 1" in out
    assert f"{case.name} has no t1c file" in out


def test_several_bad_files_one_sentence_each(tmp_path, capsys):
    a, b = make_brats(tmp_path)
    bad1 = save(a / f"{a.name}-t1n.nii.gz", np.full(SHAPE, np.inf, np.float32))
    bad2 = save(b / f"{b.name}-t2w.nii.gz", np.ones((3, 3, 3), np.float32))
    rc, _, err = run_cli(["data", "check", str(tmp_path)], capsys)
    assert rc == 2
    assert len(err.strip().splitlines()) == 2
    assert str(bad1) in err and str(bad2) in err


def test_check_unrecognisable_folder_exits_2(tmp_path, capsys):
    rc, _, err = run_cli(["data", "check", str(tmp_path)], capsys)
    assert rc == 2 and str(tmp_path) in err and "Traceback" not in err


def test_make_demo_refuses_foreign_nonempty_folder(tmp_path, capsys):
    (tmp_path / "precious.txt").write_text("keep me")
    rc, _, err = run_cli(["data", "make-demo", "--out", str(tmp_path)], capsys)
    assert rc == 2 and "not empty" in err
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious.txt"]


def test_make_demo_round_trip_checks_clean(tmp_path, capsys):
    pytest.importorskip("p2gmed.data.synthetic", reason="built-in data generator not available")
    from p2gmed.data import synthetic

    if not hasattr(synthetic, "make_demo"):
        pytest.skip("make_demo not available yet")
    out = tmp_path / "demo"
    rc, _, err = run_cli(
        ["data", "make-demo", "--out", str(out), "--subjects", "2", "--kind", "brain"], capsys
    )
    assert rc == 0, err
    rc, out_text, err = run_cli(["data", "check", str(out)], capsys)
    assert rc == 0, err
    assert "2 subjects" in out_text and "all files OK" in out_text
    # a demo folder is replaced only with --force, and then only p2g's files: the user's notes stay
    (out / "notes.txt").write_text("mine")
    rc, _, err = run_cli(
        ["data", "make-demo", "--out", str(out), "--subjects", "1", "--kind", "brain"], capsys
    )
    assert rc == 2 and "--force" in err and "Traceback" not in err
    assert len(check_dataset(out).subjects) == 2
    rc, _, err = run_cli(
        ["data", "make-demo", "--out", str(out), "--subjects", "1", "--kind", "brain", "--force"], capsys
    )
    assert rc == 0, err
    assert len(check_dataset(out).subjects) == 1
    assert (out / "notes.txt").read_text() == "mine"
