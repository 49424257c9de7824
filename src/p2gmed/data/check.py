"""`p2g data check`: validate a data set folder before training on it.

Each file is opened with nibabel and its voxels read once (one file in memory at a time): readable NIfTI (not
truncated), a 3-D volume, no NaN/Inf, the same shape and affine as the subject's other files (within
`AFFINE_TOLERANCE_MM`), labels with the image's shape and only the values their convention allows. Missing
modalities and labels are reported (a data set may legitimately lack some) but are not errors.
"""

from __future__ import annotations

import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from p2gmed.data import layouts
from p2gmed.data.read import detect_layout, read_dataset
from p2gmed.data.records import Subject
from p2gmed.errors import DataError
from p2gmed.modalities import ALL, canonical

#: largest difference between two files' affine entries (mm) still taken as the same grid
AFFINE_TOLERANCE_MM = 1e-3

#: the modalities each layout is expected to hold (nnunet/decathlon: what their subjects name)
EXPECTED = {
    "brats23": tuple(layouts.MODALITY_FILES["brats23"]),
    "brats21": tuple(layouts.MODALITY_FILES["brats21"]),
    "brats18": tuple(layouts.MODALITY_FILES["brats18"]),
    "autopet": tuple(layouts.MODALITY_FILES["autopet"]),
    "nac": tuple(layouts.MODALITY_FILES["nac"]),
}


@dataclass(frozen=True)
class Geometry:
    """A NIfTI file's grid: `shape` (D, H, W), `affine` (4, 4) voxel -> mm, `spacing` (3,) mm."""

    shape: tuple[int, int, int]
    affine: np.ndarray
    spacing: tuple[float, float, float]


def read_geometry(path: Path):
    """Open `path` lazily (header only). Returns (nibabel image, Geometry).

    Raises:
        DataError: naming the file when it is not a readable NIfTI file or not a 3-D volume.
    """
    try:
        img = nib.load(str(path))
    except FileNotFoundError:
        raise DataError(f"{path} does not exist.") from None
    except Exception as exc:  # nibabel raises several types for non-NIfTI input
        raise DataError(f"{path} is not a readable NIfTI file ({exc}).") from None
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise DataError(f"{path} has shape {shape}, not a 3-D volume.")
    spacing = tuple(round(float(z), 4) for z in img.header.get_zooms()[:3])
    return img, Geometry(shape, np.asarray(img.affine, dtype=np.float64), spacing)  # type: ignore[arg-type]


def geometry_mismatch(path: Path, geom: Geometry, ref_path: Path, ref: Geometry) -> str | None:
    """A sentence naming both files when their grids differ, else None."""
    if geom.shape != ref.shape:
        return f"{path} has shape {geom.shape} but {ref_path} has {ref.shape}"
    diff = float(np.abs(geom.affine - ref.affine).max())
    if diff > AFFINE_TOLERANCE_MM:
        return f"{path} has an affine that differs from {ref_path}'s by up to {diff:.3g} mm"
    return None


def read_voxels(path: Path, img) -> np.ndarray:
    """All voxels of an opened image, or DataError naming the file (truncated gzip, short file, ...)."""
    try:
        return np.asanyarray(img.dataobj)
    except (EOFError, OSError, zlib.error, ValueError) as exc:
        raise DataError(f"{path} is truncated or corrupt ({exc}).") from None


def label_value_problem(values: np.ndarray, convention: str | None) -> str | None:
    """Why a label file's distinct `values` are illegal for `convention`, or None."""
    if np.any(values != np.round(values)):
        return "holds non-integer label values"
    if convention in layouts.LABEL_VALUES:
        allowed = layouts.LABEL_VALUES[convention]
        bad = sorted({int(v) for v in values} - set(allowed))
        if bad:
            return f"holds label values {bad} not allowed in {convention} labels {allowed}"
    return None


@dataclass
class CheckReport:
    """Outcome of `check_dataset`: the problems (one sentence per bad file) and what the summary prints."""

    root: Path
    layout: str
    subjects: list[Subject]
    expected: tuple[str, ...]
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    shapes: Counter = field(default_factory=Counter)
    spacings: Counter = field(default_factory=Counter)
    label_values: set = field(default_factory=set)

    def summary(self) -> str:
        n = len(self.subjects)
        lines = [
            f"{self.root}: layout {self.layout}, {n} subjects, "
            f"{len({s.patient_id for s in self.subjects})} patients"
        ]
        for m in self.expected:
            present = sum(m in s.images for s in self.subjects)
            lines.append(
                f"  {m:8s} present in {present}/{n}" + (f", missing in {n - present}" if present < n else "")
            )
        n_labels = sum(s.label is not None for s in self.subjects)
        conventions = sorted({s.labels for s in self.subjects if s.labels}) or ["none"]
        lines.append(
            f"  labels   present in {n_labels}/{n} (convention {', '.join(conventions)}; values seen "
            f"{sorted(self.label_values) if self.label_values else '-'})"
        )
        lines.append(
            "  shapes   " + ", ".join(f"{'x'.join(map(str, s))} ({c})" for s, c in self.shapes.most_common(5))
        )
        lines.append(
            "  spacing  "
            + ", ".join(f"{'x'.join(map(str, s))} mm ({c})" for s, c in self.spacings.most_common(5))
        )
        lines += [f"  warning: {w}" for w in self.warnings]
        lines.append(f"  {len(self.problems)} bad file(s)" if self.problems else "  all files OK")
        return "\n".join(lines)


def _check_file(
    path: Path,
    ref: tuple[Path, Geometry] | None,
    label_convention: str | None,
    report: CheckReport,
    is_label: bool,
) -> tuple[Path, Geometry] | None:
    """Check one file; append one sentence to `report.problems` if anything is wrong. Returns its geometry."""
    try:
        img, geom = read_geometry(path)
        data = read_voxels(path, img)
    except DataError as exc:
        report.problems.extend(exc.problems)
        return None
    issues = []
    if ref is not None and (mismatch := geometry_mismatch(path, geom, *ref)):
        issues.append(mismatch.removeprefix(f"{path} "))
    if np.issubdtype(data.dtype, np.floating) and not (finite := np.isfinite(data)).all():
        issues.append(f"holds {int((~finite).sum())} NaN/Inf voxels")
    if is_label and np.isfinite(data).all():
        values = np.unique(data)
        report.label_values.update(int(v) for v in values if v == round(v))
        if problem := label_value_problem(values, label_convention):
            issues.append(problem)
    if issues:
        report.problems.append(f"{path} " + "; ".join(issues) + ".")
    return path, geom


def check_subject(subject: Subject, report: CheckReport) -> None:
    """Check every file of one subject against the first readable image; updates `report`."""
    ref = None
    for modality in report.expected:
        if modality not in subject.images:
            report.warnings.append(f"{subject.subject_id} has no {modality} file.")
            continue
        checked = _check_file(subject.images[modality], ref, None, report, is_label=False)
        if checked is not None and ref is None:
            ref = checked
            report.shapes[checked[1].shape] += 1
            report.spacings[checked[1].spacing] += 1
    if subject.label is not None:
        if not subject.label.is_file():
            report.problems.append(f"{subject.label} (label of {subject.subject_id}) does not exist.")
        else:
            _check_file(subject.label, ref, subject.labels, report, is_label=True)


def check_dataset(
    root: str | Path,
    layout: str = "auto",
    modalities: list[str] | None = None,
    channels: dict[int, str] | None = None,
) -> CheckReport:
    """Validate every file of a data set (`channels`: nnU-Net channel index -> modality, see `read_dataset`).

    Returns the report; the caller decides what problems mean (`p2g data check` raises `DataError(problems)`).

    Raises:
        DataError: when the folder holds no recognisable data set.
    """
    root = Path(root)
    found = detect_layout(root) if layout == "auto" else layout
    subjects = read_dataset(root, found, modalities, channels=channels)
    present = {m for s in subjects for m in s.images}
    expected = EXPECTED.get(found, tuple(m for m in ALL if m in present))
    if modalities:
        expected = tuple(canonical(m) for m in modalities)
    report = CheckReport(root, found, subjects, expected)
    for subject in subjects:
        check_subject(subject, report)
    n_labels = sum(s.label is not None for s in subjects)
    if 0 < n_labels < len(subjects):
        report.warnings.append(f"{len(subjects) - n_labels} of {len(subjects)} subjects have no label file.")
    return report
