"""`p2g data convert-dicom`: DICOM series of the built-in phantom with known geometry, HU and dose, written with
pydicom and read back (HU exact, SUV within 1 %, affine within 1e-4), and pydicom's own CT test file."""

from __future__ import annotations

import datetime as dt

import nibabel as nib
import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from pydicom.dataset import FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

from p2gmed.cli import main  # noqa: E402
from p2gmed.data.dicom import read_series  # noqa: E402
from p2gmed.data.synthetic.torso import generate_torso  # noqa: E402

WEIGHT_KG, DOSE_BQ, HALF_LIFE_S = 75.0, 350e6, 6586.2  # F-18
INJECTION = dt.datetime(2024, 1, 31, 9, 0, 0)
SCAN_START = dt.datetime(2024, 1, 31, 10, 5, 30)
CT_SOP, PET_SOP = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.128"


def decayed_dose(at: dt.datetime) -> float:
    return DOSE_BQ * 2.0 ** (-(at - INJECTION).total_seconds() / HALF_LIFE_S)


def write_series(folder, volume, affine, modality, study_uid, *, pet=None, drop=(), shuffle=True):
    """Write a (X, Y, Z) volume as a DICOM series with the geometry of the RAS `affine`.

    CT: int16 with intercept -1024 (values must be integers in HU). PET: Bq/ml as uint16 with a slope per slice.
    `pet` holds the SUV tags to write; `drop` names tags to leave out.
    """
    folder.mkdir(parents=True)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    dc, dr = np.linalg.norm(lps[:3, 0]), np.linalg.norm(lps[:3, 1])
    orientation = [*(lps[:3, 0] / dc), *(lps[:3, 1] / dr)]
    series_uid = generate_uid()
    order = np.random.default_rng(0).permutation(volume.shape[2]) if shuffle else range(volume.shape[2])
    for n, k in enumerate(order):  # files in random order: the reader must sort by position
        ds = pydicom.Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CT_SOP if modality == "CT" else PET_SOP
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
        ds.Modality, ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = modality, "P001", study_uid, series_uid
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = SCAN_START.strftime("%Y%m%d")
        ds.StudyDescription = "PET-CT phantom"
        ds.ImageOrientationPatient = [round(float(v), 10) for v in orientation]
        ds.ImagePositionPatient = [round(float(v), 6) for v in lps[:3, 3] + k * lps[:3, 2]]
        ds.PixelSpacing = [round(float(dr), 6), round(float(dc), 6)]
        ds.SliceThickness = round(float(np.linalg.norm(lps[:3, 2])), 6)
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        plane = volume[:, :, k].T
        if modality == "CT":
            ds.PixelRepresentation, ds.RescaleSlope, ds.RescaleIntercept = 1, 1, -1024
            ds.PixelData = (plane + 1024).astype(np.int16).tobytes()
        else:
            slope = max(float(plane.max()), 1e-3) / 60000.0
            ds.PixelRepresentation, ds.RescaleSlope, ds.RescaleIntercept = 0, f"{slope:.10g}"[:16], 0
            ds.PixelData = np.round(plane / float(ds.RescaleSlope)).astype(np.uint16).tobytes()
            ds.CorrectedImage = pet["corrected"]
            ds.Units, ds.DecayCorrection = "BQML", pet["decay"]
            ds.PatientWeight = WEIGHT_KG
            ds.SeriesTime = SCAN_START.strftime("%H%M%S")
            ds.AcquisitionTime = pet["times"][k].strftime("%H%M%S.%f")
            info = pydicom.Dataset()
            info.RadionuclideTotalDose, info.RadionuclideHalfLife = DOSE_BQ, HALF_LIFE_S
            info.RadiopharmaceuticalStartTime = INJECTION.strftime("%H%M%S")
            ds.RadiopharmaceuticalInformationSequence = [info]
        for keyword in drop:
            if keyword in ds:
                delattr(ds, keyword)
            for item in ds.get("RadiopharmaceuticalInformationSequence", []):
                if keyword in item:
                    delattr(item, keyword)
        ds.save_as(str(folder / f"{n:04d}.dcm"), enforce_file_format=True)


@pytest.fixture(scope="module")
def phantom():
    out = generate_torso(seed=3, kind="nac", spacing=10.0)
    out["ct"] = np.round(out["ct"]).astype(np.float32)  # DICOM CT stores integers
    return out


def _pet_activity(suv, decay):
    """Bq/ml that the scanner would store, and the per-slice acquisition times."""
    times = [SCAN_START + dt.timedelta(seconds=30 * k) for k in range(suv.shape[2])]
    if decay == "START":
        activity = suv * decayed_dose(SCAN_START) / (WEIGHT_KG * 1000)
    elif decay == "ADMIN":
        activity = suv * DOSE_BQ / (WEIGHT_KG * 1000)
    else:  # NONE: each slice's activity at its own time
        doses = np.array([decayed_dose(t) for t in times])
        activity = suv * doses[None, None, :] / (WEIGHT_KG * 1000)
    return activity, times


def _write_study(root, phantom, decay="START", drop=(), affine=None):
    affine = phantom["affine"] if affine is None else affine
    study = generate_uid()
    write_series(root / "ct", phantom["ct"], affine, "CT", study)
    for name, key, corrected in (("pet", "pet", ["DECY", "ATTN", "SCAT"]), ("nac", "pet_nac", ["DECY"])):
        activity, times = _pet_activity(phantom[key], decay)
        write_series(root / name, activity, affine, "PT", study, drop=drop,
                     pet={"decay": decay, "times": times, "corrected": corrected})


def _check_suv(found, expected):
    bright = expected > 0.1
    assert np.abs(found[bright] / expected[bright] - 1).max() < 0.01
    assert np.abs(found - expected).max() < 0.01 * expected.max()


@pytest.mark.parametrize("decay", ["START", "ADMIN", "NONE"])
def test_phantom_round_trip_nac_layout(tmp_path, phantom, decay):
    _write_study(tmp_path / "dicom", phantom, decay)
    assert main(["data", "convert-dicom", str(tmp_path / "dicom"), str(tmp_path / "out"), "--layout", "nac"]) == 0
    subject = tmp_path / "out" / "P001"
    ct, pet, nac = (nib.load(str(subject / f)) for f in ("CT.nii.gz", "PET_AC.nii.gz", "PET_NAC.nii.gz"))
    for img in (ct, pet, nac):
        np.testing.assert_allclose(img.affine, phantom["affine"], atol=1e-4)
        assert img.shape == phantom["ct"].shape
    np.testing.assert_array_equal(ct.get_fdata(), phantom["ct"])  # HU exact (same grid: resampling is the identity)
    _check_suv(pet.get_fdata(), phantom["pet"])
    _check_suv(nac.get_fdata(), phantom["pet_nac"])
    assert main(["data", "check", str(tmp_path / "out")]) == 0


def test_oblique_geometry_and_autopet_layout(tmp_path, phantom):
    angle = np.deg2rad(17.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = phantom["affine"].copy()
    affine[:3, :3] = rotation @ np.diag([10.0, 10.0, 10.0])
    _write_study(tmp_path / "dicom", phantom, affine=affine)
    assert main(["data", "convert-dicom", str(tmp_path / "dicom"), str(tmp_path / "out"), "--layout", "autopet"]) == 0
    (study,) = (tmp_path / "out" / "PETCT_P001").iterdir()
    for name in ("CT", "CTres", "PET", "SUV"):
        img = nib.load(str(study / f"{name}.nii.gz"))
        np.testing.assert_allclose(img.affine, affine, atol=1e-4)
    np.testing.assert_array_equal(nib.load(str(study / "CT.nii.gz")).get_fdata(), phantom["ct"])
    _check_suv(nib.load(str(study / "SUV.nii.gz")).get_fdata(), phantom["pet"])
    activity = nib.load(str(study / "PET.nii.gz")).get_fdata()
    expected = phantom["pet"] * decayed_dose(SCAN_START) / (WEIGHT_KG * 1000)
    assert np.abs(activity - expected).max() < 0.01 * expected.max()  # Bq/ml kept as stored


@pytest.mark.parametrize("tag", ["PatientWeight", "RadionuclideTotalDose", "RadionuclideHalfLife", "DecayCorrection"])
def test_missing_suv_tag_is_one_sentence_and_writes_nothing(tmp_path, phantom, capsys, tag):
    _write_study(tmp_path / "dicom", phantom, drop=(tag,))
    assert main(["data", "convert-dicom", str(tmp_path / "dicom"), str(tmp_path / "out"), "--layout", "nac"]) == 2
    err = capsys.readouterr().err
    assert tag in err and "SUV" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.nii.gz"))


def test_existing_output_and_missing_series_are_refused(tmp_path, phantom, capsys):
    _write_study(tmp_path / "dicom", phantom)
    (tmp_path / "out" / "P001").mkdir(parents=True)
    assert main(["data", "convert-dicom", str(tmp_path / "dicom"), str(tmp_path / "out"), "--layout", "nac"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["data", "convert-dicom", str(tmp_path / "dicom" / "ct"), str(tmp_path / "o2"), "--layout", "nac"]) == 2
    assert "attenuation-corrected PET" in capsys.readouterr().err


def test_pydicom_ct_test_file():
    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    volume, affine, _ = read_series([path])
    expected = ds.pixel_array.T.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(volume[..., 0], expected)  # HU: stored values x slope + intercept
    iop = np.asarray(ds.ImageOrientationPatient, float)
    dr, dc = (float(v) for v in ds.PixelSpacing)
    lps_voxel = np.asarray(ds.ImagePositionPatient, float) + 3 * dc * iop[:3] + 5 * dr * iop[3:]  # column 3, row 5
    ras = affine @ np.array([3, 5, 0, 1.0])
    np.testing.assert_allclose(ras[:3], lps_voxel * [-1, -1, 1], atol=1e-4)
