"""Writing subjects in every layout: names, JSON content, label values, NIfTI headers, atomicity, bytes."""

from __future__ import annotations

import filecmp
import gzip
import json
import re

import nibabel as nib
import numpy as np
import pytest

from p2gmed.data.synthetic import autopet_patients, make_demo
from p2gmed.data.write import to_nifti, write_subjects
from p2gmed.io import save_nifti
from p2gmed.errors import InputError

STUDY = re.compile(r"^\d\d-\d\d-\d{4}-NA-PET-CT Ganzkoerper  primaer mit KM-\d{5}$")


def _tiny(kind: str, index: int) -> dict:
    """A hand-made 6x5x4 individual whose label holds every class of its kind."""
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    modalities = {"brain": ("t1n", "t1c", "t2w", "t2f"), "petct": ("ct", "pet"), "nac": ("ct", "pet", "pet_nac")}[kind]
    arrays = {m: np.full((6, 5, 4), 10.0 * c + index + 1, np.float32) for c, m in enumerate(modalities)}
    label = np.zeros((6, 5, 4), np.uint8)
    label[0, 0, :] = [1, 2, 3, 0] if kind == "brain" else [1, 1, 0, 0]
    return arrays | {"label": label, "affine": affine}


def _load(path):
    img = nib.load(path)
    return img, np.asarray(img.dataobj)


def test_brats23_fixture_names_headers_labels(demo_brain):
    cases = sorted(p.name for p in demo_brain.iterdir())
    assert cases == [f"BraTS-GLI-{i:05d}-000" for i in range(4)]
    for case in cases:
        names = sorted(p.name for p in (demo_brain / case).iterdir())
        assert names == sorted(f"{case}-{s}.nii.gz" for s in ("t1n", "t1c", "t2w", "t2f", "seg"))
        t1, t1_data = _load(demo_brain / case / f"{case}-t1n.nii.gz")
        seg, seg_data = _load(demo_brain / case / f"{case}-seg.nii.gz")
        assert t1.get_data_dtype() == np.float32 and seg.get_data_dtype() == np.uint8
        np.testing.assert_allclose(t1.affine, seg.affine)
        np.testing.assert_allclose(t1.header.get_zooms(), (3.0, 3.0, 3.0))
        assert int(t1.header["qform_code"]) == 1 and int(t1.header["sform_code"]) == 1
        assert nib.aff2axcodes(t1.affine) == ("R", "A", "S")
        assert set(np.unique(seg_data)) <= {0, 1, 2, 3} and 3 in seg_data


@pytest.mark.parametrize("layout, sep, suffixes", [
    ("brats21", "_", ("t1", "t1ce", "t2", "flair", "seg")),
    ("brats18", "_", ("t1", "t1ce", "t2", "flair", "seg")),
])
def test_older_brats_layouts_write_et_as_4(tmp_path, layout, sep, suffixes):
    paths = write_subjects([_tiny("brain", i) for i in range(3)], tmp_path / "ds", layout, kind="brain")
    assert len(paths) == 3 and len({p.name for p in paths}) == 3
    prefix = "BraTS2021_" if layout == "brats21" else "Brats18_"
    for folder in paths:
        assert folder.name.startswith(prefix)
        assert sorted(p.name for p in folder.iterdir()) == sorted(f"{folder.name}{sep}{s}.nii.gz" for s in suffixes)
        _, seg = _load(folder / f"{folder.name}{sep}seg.nii.gz")
        assert sorted(np.unique(seg)) == [0, 1, 2, 4]
        _, t1 = _load(folder / f"{folder.name}{sep}t1.nii.gz")
        assert t1.dtype == np.float32


def test_autopet_fixture_layout_and_two_studies(demo_petct):
    patients = sorted(p for p in demo_petct.iterdir())
    assert len(patients) == 3 and all(re.fullmatch(r"PETCT_[0-9a-f]{10}", p.name) for p in patients)
    studies = [s for p in patients for s in p.iterdir()]
    assert len(studies) == 4 and sorted(len(list(p.iterdir())) for p in patients) == [1, 1, 2]
    for study in studies:
        assert STUDY.match(study.name), study.name
        assert sorted(p.name for p in study.iterdir()) == ["CT.nii.gz", "CTres.nii.gz", "PET.nii.gz", "SEG.nii.gz",
                                                          "SUV.nii.gz"]
        _, ct = _load(study / "CT.nii.gz")
        _, ctres = _load(study / "CTres.nii.gz")
        assert np.array_equal(ct, ctres)
        _, suv = _load(study / "SUV.nii.gz")
        _, pet = _load(study / "PET.nii.gz")
        hot = suv > 0.5
        factor = pet[hot] / suv[hot]
        assert np.allclose(factor, factor[0], rtol=1e-4) and 1000 < factor[0] < 10000  # Bq/ml per SUV
        seg_img, seg = _load(study / "SEG.nii.gz")
        assert seg_img.get_data_dtype() == np.uint8 and set(np.unique(seg)) <= {0, 1}


def test_autopet_patient_grouping():
    assert autopet_patients(2) == [0, 1]
    assert autopet_patients(4) == [0, 0, 1, 2]
    assert autopet_patients(8) == [0, 0, 1, 1, 2, 3, 4, 5]


def test_nac_fixture_layout(demo_nac):
    subjects = sorted(p.name for p in demo_nac.iterdir())
    assert subjects == ["NAC_000", "NAC_001", "NAC_002"]
    for subject in subjects:
        assert sorted(p.name for p in (demo_nac / subject).iterdir()) == ["CT.nii.gz", "PET_AC.nii.gz",
                                                                          "PET_NAC.nii.gz"]
        shapes = {_load(demo_nac / subject / f)[1].shape for f in ("CT.nii.gz", "PET_AC.nii.gz", "PET_NAC.nii.gz")}
        assert len(shapes) == 1


def test_nnunet_layout_and_dataset_json(tmp_path):
    individuals = [_tiny("petct", i) for i in range(2)]
    paths = write_subjects(individuals, tmp_path / "ds", "nnunet", kind="petct")
    root = tmp_path / "ds"
    dataset = json.loads((root / "dataset.json").read_text())
    assert dataset["channel_names"] == {"0": "ct", "1": "pet"}
    assert dataset["labels"] == {"background": 0, "lesion": 1}
    assert dataset["numTraining"] == 2 and dataset["file_ending"] == ".nii.gz"
    assert sorted(p.name for p in (root / "imagesTr").iterdir()) == [
        "petct_000_0000.nii.gz", "petct_000_0001.nii.gz", "petct_001_0000.nii.gz", "petct_001_0001.nii.gz"]
    assert sorted(p.name for p in (root / "labelsTr").iterdir()) == ["petct_000.nii.gz", "petct_001.nii.gz"]
    # channel 1 of case 1 is the PET of individual 1 (value 10 * 1 + 1 + 1)
    assert np.all(_load(root / "imagesTr" / "petct_001_0001.nii.gz")[1] == 12.0)
    assert paths[0] == root / "imagesTr" / "petct_000_0000.nii.gz"


def test_decathlon_datalist_points_at_files(tmp_path):
    write_subjects([_tiny("brain", i) for i in range(2)], tmp_path / "ds", "decathlon", kind="brain")
    root = tmp_path / "ds"
    datalist = json.loads((root / "datalist.json").read_text())
    assert datalist["modalities"] == ["t1n", "t1c", "t2w", "t2f"]
    assert len(datalist["training"]) == 2
    for entry in datalist["training"]:
        assert set(entry) == {"t1n", "t1c", "t2w", "t2f", "label"}
        assert all((root / p).is_file() for p in entry.values())
        assert 3 in _load(root / entry["label"])[1]  # BraTS 2023 convention


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = make_demo(tmp_path / "a", kind="petct", subjects=1, seed=3, spacing=10.0)[0]
    b = make_demo(tmp_path / "b", kind="petct", subjects=1, seed=3, spacing=10.0)[0]
    c = make_demo(tmp_path / "c", kind="petct", subjects=1, seed=4, spacing=10.0)[0]
    assert a.relative_to(tmp_path / "a") == b.relative_to(tmp_path / "b")
    for name in ("CT.nii.gz", "SUV.nii.gz", "SEG.nii.gz", "PET.nii.gz"):
        assert filecmp.cmp(a / name, b / name, shallow=False)
    assert not filecmp.cmp(a / "CTres.nii.gz", next((tmp_path / "c").rglob("CTres.nii.gz")), shallow=False)
    assert c.parent.name != a.parent.name  # other patient identifier


def test_gzip_header_has_no_time_or_name(tmp_path):
    path = save_nifti(to_nifti(np.ones((2, 2, 2)), np.eye(4)), tmp_path / "x.nii.gz")
    raw = path.read_bytes()
    assert raw[:2] == b"\x1f\x8b" and raw[3] & 0x08 == 0 and raw[4:8] == b"\0\0\0\0"
    assert np.array_equal(np.asarray(nib.load(path).dataobj), np.ones((2, 2, 2)))
    assert gzip.decompress(raw)[:4] == (348).to_bytes(4, "little")  # NIfTI-1 header size


@pytest.mark.parametrize("kind, layout", [("petct", "brats23"), ("brain", "autopet"), ("petct", "nac"),
                                          ("nac", "brats21"), ("brain", "nac"), ("brain", "nosuch")])
def test_impossible_kind_layout_combinations(tmp_path, kind, layout):
    with pytest.raises(InputError, match="layout"):
        make_demo(tmp_path / "x", kind=kind, subjects=1, layout=layout)
    assert not (tmp_path / "x").exists()


def test_bad_arguments(tmp_path):
    with pytest.raises(InputError, match="kind"):
        make_demo(tmp_path / "x", kind="knee")
    with pytest.raises(InputError, match="subjects"):
        make_demo(tmp_path / "x", subjects=0)


def test_existing_non_empty_folder_is_refused_and_kept(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(InputError, match=str(out)):
        write_subjects([_tiny("brain", 0)], out, "brats23", kind="brain")
    assert [p.name for p in out.iterdir()] == ["mine.txt"] and (out / "mine.txt").read_text() == "keep me"


def test_failure_midway_leaves_nothing_behind(tmp_path):
    broken = _tiny("brain", 1)
    del broken["t2f"]  # the second subject lacks a modality: writing fails after the first subject
    with pytest.raises(KeyError):
        write_subjects([_tiny("brain", 0), broken], tmp_path / "ds", "brats23", kind="brain")
    assert list(tmp_path.iterdir()) == []
