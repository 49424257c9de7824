"""Reading every layout: names, modality sets, label conventions, patients, missing modalities, errors."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from p2gmed.data.manifests import label_convention
from p2gmed.data.read import detect_layout, read_case_dir, read_dataset
from p2gmed.errors import DataError, InputError

SHAPE = (6, 5, 4)


def nifti(path: Path, value: float = 1.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.full(SHAPE, value, np.float32), np.eye(4)), str(path))
    return path


def brats_case(root: Path, case: str, names: tuple[str, ...], sep: str) -> Path:
    for n in names:
        nifti(root / case / f"{case}{sep}{n}.nii.gz")
    return root / case


def test_brats23_names_modalities_labels_and_timepoint_patients(tmp_path):
    for case in ("BraTS-GLI-00002-001", "BraTS-GLI-00002-000", "BraTS-GLI-00005-000"):
        brats_case(tmp_path, case, ("t1n", "t1c", "t2w", "t2f", "seg"), "-")
    assert detect_layout(tmp_path) == "brats23"
    subjects = read_dataset(tmp_path)
    assert [s.subject_id for s in subjects] == [
        "BraTS-GLI-00002-000",
        "BraTS-GLI-00002-001",
        "BraTS-GLI-00005-000",
    ]
    assert [s.patient_id for s in subjects] == ["BraTS-GLI-00002", "BraTS-GLI-00002", "BraTS-GLI-00005"]
    s = subjects[0]
    assert set(s.images) == {"t1n", "t1c", "t2w", "t2f"}
    assert s.images["t2f"].name == "BraTS-GLI-00002-000-t2f.nii.gz"
    assert s.label.name == "BraTS-GLI-00002-000-seg.nii.gz"
    assert (s.layout, s.labels) == ("brats23", "brats2023")


def test_brats21_old_names_map_to_canonical_and_et4_convention(tmp_path):
    brats_case(tmp_path, "BraTS2021_00000", ("t1", "t1ce", "t2", "flair", "seg"), "_")
    (s,) = read_dataset(tmp_path)
    assert detect_layout(tmp_path) == "brats21"
    assert s.images["t1c"].name == "BraTS2021_00000_t1ce.nii.gz"
    assert s.images["t2f"].name == "BraTS2021_00000_flair.nii.gz"
    assert s.images["t1n"].name == "BraTS2021_00000_t1.nii.gz"
    assert s.labels == "brats2018"


def test_brats18_under_hgg_lgg(tmp_path):
    brats_case(tmp_path / "HGG", "Brats18_TCIA01_101_1", ("t1", "t1ce", "t2", "flair", "seg"), "_")
    brats_case(tmp_path / "LGG", "Brats18_2013_0_1", ("t1", "t1ce", "t2", "flair", "seg"), "_")
    assert detect_layout(tmp_path) == "brats18"
    subjects = read_dataset(tmp_path)
    assert [s.subject_id for s in subjects] == ["Brats18_2013_0_1", "Brats18_TCIA01_101_1"]
    assert all(s.labels == "brats2018" and len(s.images) == 4 for s in subjects)


def test_missing_modality_is_absent_not_filled(tmp_path):
    brats_case(tmp_path, "BraTS-GLI-00001-000", ("t1n", "t2w", "seg"), "-")
    (s,) = read_dataset(tmp_path)
    assert set(s.images) == {"t1n", "t2w"}
    assert s.missing(("t1n", "t1c", "t2w", "t2f")) == ["t1c", "t2f"]


def test_modalities_argument_restricts_images(tmp_path):
    brats_case(tmp_path, "BraTS-GLI-00001-000", ("t1n", "t1c", "t2w", "t2f"), "-")
    (s,) = read_dataset(tmp_path, modalities=["T1", "flair"])
    assert set(s.images) == {"t1n", "t2f"}


AUTOPET_STUDIES = (
    "08-12-2005-NA-PET-CT Ganzkoerper  primaer mit KM-96698",
    "03-05-2006-NA-PET-CT Ganzkoerper  primaer mit KM-10434",
)


def test_autopet_two_studies_one_patient(tmp_path):
    for study in AUTOPET_STUDIES:
        for f in ("CT", "CTres", "PET", "SUV", "SEG"):
            nifti(tmp_path / "PETCT_0af7ffe12a" / study / f"{f}.nii.gz")
    for f in ("CTres", "SUV"):  # a second patient without a label
        nifti(tmp_path / "PETCT_1bc" / "study" / f"{f}.nii.gz")
    assert detect_layout(tmp_path) == "autopet"
    subjects = read_dataset(tmp_path)
    assert len(subjects) == 3
    a, b = (s for s in subjects if s.patient_id == "PETCT_0af7ffe12a")
    assert a.subject_id != b.subject_id
    for s in (a, b):
        assert " " not in s.subject_id and s.subject_id.startswith("PETCT_0af7ffe12a_")
        assert s.images["ct"].name == "CTres.nii.gz" and s.images["pet"].name == "SUV.nii.gz"
        assert s.label.name == "SEG.nii.gz" and s.labels == "autopet"
        assert set(s.extra) == {"ct_original", "pet_activity"}
    assert "PETCT_0af7ffe12a_08-12-2005-NA-PET-CT_Ganzkoerper_primaer_mit_KM-96698" in {
        a.subject_id,
        b.subject_id,
    }
    (c,) = (s for s in subjects if s.patient_id == "PETCT_1bc")
    assert c.label is None


def _nnunet(root: Path, channel_names: dict, labels: dict | None = None, with_ts: bool = False) -> None:
    root.mkdir(parents=True)
    meta = {
        "channel_names": channel_names,
        "labels": labels or {"background": 0, "tumor": 1},
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    for case in ("PETCT_aa_s1", "PETCT_aa_s2"):
        nifti(root / "imagesTr" / f"{case}_0000.nii.gz", 0.0)
        nifti(root / "imagesTr" / f"{case}_0001.nii.gz", 1.0)
    nifti(root / "labelsTr" / "PETCT_aa_s1.nii.gz")
    if with_ts:
        nifti(root / "imagesTs" / "PETCT_bb_s1_0000.nii.gz", 0.0)
        nifti(root / "imagesTs" / "PETCT_bb_s1_0001.nii.gz", 1.0)


def test_nnunet_channels_identified_by_name(tmp_path):
    root = tmp_path / "Dataset001"
    _nnunet(root, {"0": "PET", "1": "CT"}, with_ts=True)  # PET first, as the autoPET-I baseline writes it
    assert detect_layout(root) == "nnunet"
    subjects = read_dataset(root)
    assert [s.subject_id for s in subjects] == ["PETCT_aa_s1", "PETCT_aa_s2", "PETCT_bb_s1"]
    s1, s2, ts = subjects
    assert s1.images["pet"].name.endswith("_0000.nii.gz") and s1.images["ct"].name.endswith("_0001.nii.gz")
    assert s1.label is not None and s2.label is None and ts.label is None  # labelsTr optional
    assert s1.patient_id == s2.patient_id == "PETCT_aa" and s1.labels == "autopet"


def test_nnunet_ambiguous_channel_names_are_refused(tmp_path):
    root = tmp_path / "Dataset221"
    _nnunet(root, {"0": "CT", "1": "CT"})  # nnU-Net's AutoPET-II json names normalisation schemes
    with pytest.raises(DataError, match="dataset.json"):
        read_dataset(root)


def test_nac_layout(tmp_path):
    for subj in ("sub-02", "sub-01"):
        for f in ("CT", "PET_AC", "PET_NAC"):
            nifti(tmp_path / subj / f"{f}.nii.gz")
    assert detect_layout(tmp_path) == "nac"
    subjects = read_dataset(tmp_path)
    assert [s.subject_id for s in subjects] == ["sub-01", "sub-02"]
    assert (
        subjects[0].images["pet_nac"].name == "PET_NAC.nii.gz"
        and subjects[0].images["pet"].name == "PET_AC.nii.gz"
    )
    assert subjects[0].label is None and subjects[0].labels is None


def test_decathlon_datalist_file_and_folder(tmp_path):
    nifti(tmp_path / "img" / "c1-t1n.nii.gz")
    nifti(tmp_path / "img" / "c1-t2f.nii.gz")
    nifti(tmp_path / "img" / "c1-seg.nii.gz")
    datalist = {
        "labels": "brats2023",
        "training": [{"t1n": "img/c1-t1n.nii.gz", "FLAIR": "img/c1-t2f.nii.gz", "seg": "img/c1-seg.nii.gz"}],
    }
    (tmp_path / "list.json").write_text(json.dumps(datalist))
    for root in (tmp_path / "list.json", tmp_path):
        assert detect_layout(root) == "decathlon"
        (s,) = read_dataset(root)
        assert s.subject_id == "c1" and set(s.images) == {"t1n", "t2f"}
        assert s.images["t2f"] == tmp_path / "img" / "c1-t2f.nii.gz" and s.label.name == "c1-seg.nii.gz"
        assert s.labels == "brats2023"


def test_label_convention_inference():
    assert label_convention({"background": 0, "tumor": 1}) == "autopet"
    assert (
        label_convention({"0": "background", "1": "necrotic", "2": "edema", "4": "enhancing tumour"})
        == "brats2018"
    )
    assert label_convention({"background": 0, "NETC": 1, "SNFH": 2, "ET": 3}) == "brats2023"
    # nnU-Net's internal BraTS relabelling (1 = edema) must not pass for BraTS 2023
    assert label_convention({"background": 0, "edema": 1, "necrosis": 2, "enhancing": 3}) is None
    assert label_convention({"background": 0, "whole tumor": [1, 2, 3]}) is None


def test_read_case_dir(tmp_path):
    case = brats_case(tmp_path, "BraTS2021_00007", ("t1", "t1ce", "t2", "flair"), "_")
    s = read_case_dir(case)
    assert s.subject_id == "BraTS2021_00007" and s.layout == "brats21" and len(s.images) == 4
    study = tmp_path / "PETCT_ab" / AUTOPET_STUDIES[0]
    for f in ("CTres", "SUV"):
        nifti(study / f"{f}.nii.gz")
    s = read_case_dir(study)
    assert s.patient_id == "PETCT_ab" and set(s.images) == {"ct", "pet"}
    with pytest.raises(DataError, match=str(tmp_path)):
        read_case_dir(tmp_path)


def test_unrecognisable_folder_names_it(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "sub").mkdir()
    with pytest.raises(DataError, match=str(tmp_path)):
        read_dataset(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        read_dataset(tmp_path / "nope")
    with pytest.raises(InputError, match="unknown layout"):
        read_dataset(tmp_path, layout="brats99")


def test_explicit_layout_with_nothing_of_it(tmp_path):
    brats_case(tmp_path, "BraTS-GLI-00001-000", ("t1n",), "-")
    with pytest.raises(DataError, match="no autopet subjects"):
        read_dataset(tmp_path, layout="autopet")


def test_built_in_demo_sets_read_back(demo_brain, demo_petct, demo_nac):
    brain = read_dataset(demo_brain)
    assert len(brain) == 4 and all(set(s.images) == {"t1n", "t1c", "t2w", "t2f"} for s in brain)
    assert all(s.label is not None and s.labels == "brats2023" for s in brain)
    petct = read_dataset(demo_petct)
    assert detect_layout(demo_petct) == "autopet" and len(petct) == 4
    assert len({s.patient_id for s in petct}) == 3  # one patient has two studies
    assert all(set(s.images) == {"ct", "pet"} and s.labels == "autopet" for s in petct)
    nac = read_dataset(demo_nac)
    assert len(nac) == 3 and all(set(s.images) == {"ct", "pet", "pet_nac"} for s in nac)
