"""DICOM CT and PET series -> NIfTI volumes with correct geometry, CT in HU and PET in SUV body-weight (pydicom).

Geometry: slices are ordered along the normal of ImageOrientationPatient (IOP) by their ImagePositionPatient (IPP);
voxel (i, j, k) = column i, row j, slice k lies at IPP_0 + i * dc * IOP_row + j * dr * IOP_col + k * step, with
(dr, dc) = PixelSpacing and `step` the mean difference of consecutive IPPs (evenly spaced slices are required);
DICOM's LPS world is turned into NIfTI's RAS by negating x and y.

Intensities: each slice's stored values times its own RescaleSlope plus RescaleIntercept (PET slices usually carry
their own slope). CT is then in HU. PET must be in Bq/ml (Units BQML); SUV body-weight = activity [Bq/ml] x weight
[g] / injected dose [Bq] decayed to the time the activity refers to (QIBA / Vendor-neutral SUV):

* DecayCorrection START: the images are decay corrected to the scan start, DecayCorrectionDateTime if present, else
  SeriesTime (else the earliest AcquisitionTime): dose x 2^-(start - injection) / half-life;
* ADMIN: already corrected to the injection time: the dose itself;
* NONE: each slice at its own AcquisitionTime.

Injection time: RadiopharmaceuticalStartDateTime, else RadiopharmaceuticalStartTime on the series date. A missing
tag is one sentence naming the series' first file and the tag.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from p2gmed.errors import DataError

#: relative tolerance on slice spacing (unevenly spaced series, e.g. with gaps, are refused)
SPACING_RTOL = 0.01


@dataclass
class Series:
    """One DICOM series: its files (slice order not yet known) and the headers that identify it."""

    uid: str
    modality: str
    files: list[Path]
    patient: str
    study: str
    description: str
    attenuation_corrected: bool


def _first(value, default=None):
    return value if value not in (None, "") else default


def find_series(src: str | Path) -> list[Series]:
    """Every CT and PET series under `src` (any folder structure; non-DICOM files are skipped)."""
    import pydicom

    groups: dict[str, list[tuple[Path, object]]] = defaultdict(list)
    for path in sorted(p for p in Path(src).rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - not a DICOM file
            continue
        if getattr(ds, "Modality", None) in ("CT", "PT") and "SeriesInstanceUID" in ds:
            groups[str(ds.SeriesInstanceUID)].append((path, ds))
    series = []
    for uid, items in groups.items():
        ds = items[0][1]
        corrected = " ".join(str(v) for v in (getattr(ds, "CorrectedImage", None) or []))
        description = str(getattr(ds, "SeriesDescription", ""))
        is_nac = "ATTN" not in corrected.upper() and (
            "CorrectedImage" in ds or any(w in description.upper() for w in ("NAC", "UNCORR", "NON-AC", "NOAC"))
        )
        series.append(Series(
            uid=uid, modality=str(ds.Modality), files=[p for p, _ in items],
            patient=str(_first(getattr(ds, "PatientID", None), "patient")),
            study=str(_first(getattr(ds, "StudyInstanceUID", None), "study")),
            description=description, attenuation_corrected=not is_nac,
        ))
    return sorted(series, key=lambda s: (s.patient, s.study, s.modality, s.uid))


def _require(ds, keyword: str, tag: str, path: Path, why: str):
    value = getattr(ds, keyword, None)
    if value in (None, ""):
        raise DataError(f"{path}: the series lacks {keyword} {tag}, needed for {why}")
    return value


def read_series(files: list[Path]) -> tuple[np.ndarray, np.ndarray, list]:
    """Slices of one series -> (float64 volume (columns, rows, slices) with the rescale applied, RAS affine, headers).

    Raises:
        DataError: naming a file, for missing geometry tags, mixed orientations or sizes, uneven slice spacing.
    """
    import pydicom

    slices = [pydicom.dcmread(str(p)) for p in files]
    first = files[0]
    for ds, path in zip(slices, files):
        for keyword, tag in (("ImageOrientationPatient", "(0020,0037)"), ("ImagePositionPatient", "(0020,0032)"),
                             ("PixelSpacing", "(0028,0030)")):
            _require(ds, keyword, tag, path, "the image geometry")
    orientation = np.asarray(slices[0].ImageOrientationPatient, dtype=np.float64)
    row_dir, col_dir = orientation[:3], orientation[3:]
    normal = np.cross(row_dir, col_dir)
    for ds, path in zip(slices, files):
        if not np.allclose(np.asarray(ds.ImageOrientationPatient, dtype=np.float64), orientation, atol=1e-4):
            raise DataError(f"{path}: its ImageOrientationPatient differs from {first}'s within one series")
        if (ds.Rows, ds.Columns) != (slices[0].Rows, slices[0].Columns):
            raise DataError(f"{path}: its image size differs from {first}'s within one series")
    positions = np.asarray([np.asarray(ds.ImagePositionPatient, dtype=np.float64) for ds in slices])
    order = np.argsort(positions @ normal)
    slices = [slices[i] for i in order]
    positions = positions[order]
    files = [files[i] for i in order]
    dr, dc = (float(v) for v in slices[0].PixelSpacing)
    if len(slices) > 1:
        steps = np.diff(positions, axis=0)
        lengths = np.linalg.norm(steps, axis=1)
        if lengths.min() <= 0 or not np.allclose(lengths, lengths.mean(), rtol=SPACING_RTOL):
            raise DataError(
                f"{first}: the slices of its series are not evenly spaced (spacing {lengths.min():.4g} to "
                f"{lengths.max():.4g} mm); a gap or a duplicate slice cannot be converted to one volume"
            )
        step = (positions[-1] - positions[0]) / (len(slices) - 1)
    else:
        thickness = float(_first(getattr(slices[0], "SpacingBetweenSlices", None), 0) or
                          _first(getattr(slices[0], "SliceThickness", None), 1.0))
        step = normal * thickness
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = row_dir * dc, col_dir * dr, step, positions[0]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    volume = np.stack([
        np.asarray(ds.pixel_array, dtype=np.float64).T * float(_first(getattr(ds, "RescaleSlope", None), 1.0))
        + float(_first(getattr(ds, "RescaleIntercept", None), 0.0))
        for ds in slices
    ], axis=-1)
    return volume, affine, slices


def _datetime(date: str, time: str) -> dt.datetime:
    """DICOM DA + TM ("20240131", "093000.25") -> datetime."""
    time = str(time).split(".")
    base = dt.datetime.strptime(str(date) + time[0].ljust(6, "0")[:6], "%Y%m%d%H%M%S")
    fraction = float("0." + time[1]) if len(time) > 1 and time[1] else 0.0
    return base + dt.timedelta(seconds=fraction)


def _dicom_datetime(text: str) -> dt.datetime:
    """DICOM DT ("20240131093000.25", maybe with a UTC offset, which is dropped) -> datetime."""
    text = str(text).split("+")[0].split("-")[0]
    return _datetime(text[:8], text[8:] or "000000")


def suv_factors(slices: list, path: Path) -> np.ndarray:
    """Per slice, the factor turning Bq/ml into SUV body-weight (see the module docstring).

    Raises:
        DataError: one sentence naming `path` and the missing or unsupported tag.
    """
    ds = slices[0]
    why = "SUV body-weight"
    units = str(_require(ds, "Units", "(0054,1001)", path, why)).upper()
    if units != "BQML":
        raise DataError(f"{path}: PET Units (0054,1001) is {units}; SUV needs activity in Bq/ml (BQML)")
    weight_g = float(_require(ds, "PatientWeight", "(0010,1030)", path, why)) * 1000.0
    info = _require(ds, "RadiopharmaceuticalInformationSequence", "(0054,0016)", path, why)[0]
    dose = float(_require(info, "RadionuclideTotalDose", "(0018,1074)", path, why))
    half_life = float(_require(info, "RadionuclideHalfLife", "(0018,1075)", path, why))
    decay = str(_require(ds, "DecayCorrection", "(0054,1102)", path, why)).upper()
    if decay == "ADMIN":
        return np.full(len(slices), weight_g / dose)
    if getattr(info, "RadiopharmaceuticalStartDateTime", None):
        injection = _dicom_datetime(info.RadiopharmaceuticalStartDateTime)
    else:
        start = _require(info, "RadiopharmaceuticalStartTime", "(0018,1072)", path, why)
        injection = _datetime(_require(ds, "SeriesDate", "(0008,0021)", path, why), start)
    if decay == "START":
        if getattr(ds, "DecayCorrectionDateTime", None):
            reference = _dicom_datetime(ds.DecayCorrectionDateTime)
        elif getattr(ds, "SeriesTime", None):
            reference = _datetime(ds.SeriesDate, ds.SeriesTime)
        else:
            reference = min(_datetime(s.AcquisitionDate, _require(s, "AcquisitionTime", "(0008,0032)", path, why))
                            for s in slices)
        times = [reference] * len(slices)
    elif decay == "NONE":
        times = [_datetime(_first(getattr(s, "AcquisitionDate", None), ds.SeriesDate),
                           _require(s, "AcquisitionTime", "(0008,0032)", path, why)) for s in slices]
    else:
        raise DataError(f"{path}: PET DecayCorrection (0054,1102) is {decay}; SUV needs START, ADMIN or NONE")
    elapsed = np.array([(t - injection).total_seconds() for t in times])
    if np.any(elapsed < 0):
        raise DataError(f"{path}: the PET was acquired before the injection time it records; check the times")
    return weight_g / (dose * np.power(2.0, -elapsed / half_life))


def series_to_volume(series: Series) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(volume, affine, suv) of a series: CT in HU (suv None); PET activity in Bq/ml and SUV body-weight."""
    volume, affine, slices = read_series(series.files)
    if series.modality == "CT":
        return volume.astype(np.float32), affine, None
    factors = suv_factors(slices, series.files[0])
    return volume.astype(np.float32), affine, (volume * factors[None, None, :]).astype(np.float32)
