"""Write in-memory subjects in any supported layout (BraTS 2023/2021/2018, AutoPET, nnU-Net, NAC, Decathlon).

File names come from `p2gmed.data.layouts`, the single source the readers use too. A data set is written into
a hidden sibling folder and renamed onto `out` at the end, so a failure never leaves half a data set behind;
every NIfTI is gzip-compressed with a fixed header (no time stamp, no file name) so that the same arrays
always give the same bytes.

An individual is a dict as `generate_brain` / `generate_torso` return: {modality: float32 (D, H, W),
"label": uint8 (D, H, W) in the BraTS 2023 / AutoPET convention, "affine": (4, 4) RAS}.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from p2gmed.data import layouts
from p2gmed.errors import InputError
from p2gmed.io import save_nifti, write_text
from p2gmed.modalities import MRI, NAC, PETCT

#: modalities of each kind of built-in data, and the layouts that can hold them
KIND_MODALITIES = {"brain": MRI, "petct": PETCT, "nac": NAC}
KIND_LAYOUTS = {
    "brain": ("brats23", "brats21", "brats18", "nnunet", "decathlon"),
    "petct": ("autopet", "nnunet", "decathlon"),
    "nac": ("nac", "nnunet", "decathlon"),
}
#: label names written into nnU-Net / Decathlon JSON (values in the BraTS 2023 / AutoPET convention)
KIND_LABELS = {
    "brain": {"background": 0, "NCR": 1, "ED": 2, "ET": 3},
    "petct": {"background": 0, "lesion": 1},
    "nac": {"background": 0, "lesion": 1},
}
DECATHLON_DATALIST = "datalist.json"
NNUNET_DATASET_JSON = "dataset.json"
_BRATS18_SITES = ("CBICA", "TCIA01", "2013")


def to_nifti(array: np.ndarray, affine: np.ndarray, *, label: bool = False):
    """A NIfTI-1 image with the affine in both qform and sform (code 1, scanner), mm units.

    Args:
        array: (D, H, W); stored as float32, or uint8 when `label`.
        affine: (4, 4) voxel -> RAS mm.
    """
    data = np.asarray(array, dtype=np.uint8 if label else np.float32)
    img = nib.Nifti1Image(data, np.asarray(affine, dtype=np.float64))
    img.set_data_dtype(np.uint8 if label else np.float32)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    return img


def brats_case_id(layout: str, index: int) -> str:
    """Case (and folder) name of the `index`-th subject in a BraTS layout."""
    if layout == "brats23":
        return f"BraTS-GLI-{index:05d}-000"
    if layout == "brats21":
        return f"BraTS2021_{index:05d}"
    site = _BRATS18_SITES[index % len(_BRATS18_SITES)]
    if site == "CBICA":
        letters = "".join(chr(ord("A") + (index // 26**k) % 26) for k in (2, 1, 0))
        return f"Brats18_CBICA_{letters}_1"
    return f"Brats18_{site}_{100 + index if site == 'TCIA01' else index}_1"


def _check_target(out: Path, kind: str, layout: str) -> None:
    if kind not in KIND_MODALITIES:
        raise InputError(f"--kind '{kind}' is unknown; use one of {', '.join(KIND_MODALITIES)}")
    if layout not in layouts.LAYOUTS:
        raise InputError(f"--layout '{layout}' is unknown; use one of {', '.join(layouts.LAYOUTS)}")
    if layout not in KIND_LAYOUTS[kind]:
        raise InputError(
            f"--layout {layout} cannot hold {kind} data; for --kind {kind} use one of {', '.join(KIND_LAYOUTS[kind])}"
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"--out {out} already exists and is not an empty folder; choose a new folder")


def write_subjects(
    individuals: Sequence[Mapping[str, np.ndarray]],
    out: str | Path,
    layout: str,
    *,
    kind: str,
    patients: Sequence[int] | None = None,
    seed: int = 0,
) -> list[Path]:
    """Write individuals as a data set in `layout` under the new (or empty) folder `out`.

    Args:
        individuals: one dict per subject (study), see the module docstring.
        out: data set root; must not exist or be empty.
        layout: one of `layouts.LAYOUTS` that can hold `kind` (see `KIND_LAYOUTS`).
        kind: "brain", "petct" or "nac": decides the modalities written.
        patients: AutoPET only: the patient index of each individual (equal indices = studies of one patient,
            written as two study folders of one PETCT_<id> folder). Default: one patient per individual.
        seed: decides AutoPET identifiers, study dates and activity factors (reproducibly).

    Returns:
        One path per subject: its folder (BraTS, AutoPET study, NAC), or its first image file for the flat
        layouts (nnU-Net, Decathlon).

    Raises:
        InputError: unknown kind or layout, a layout that cannot hold the kind, or a non-empty `out`.
    """
    out = Path(out)
    _check_target(out, kind, layout)
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        writer = {"autopet": _write_autopet, "nnunet": _write_nnunet, "nac": _write_nac,
                  "decathlon": _write_decathlon}.get(layout, _write_brats)
        relative = writer(list(individuals), staging, layout, kind, patients, seed)
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return [out / r for r in relative]


def _write_brats(individuals, root: Path, layout: str, kind: str, patients, seed) -> list[Path]:
    et_value = 4 if layouts.LABEL_CONVENTION[layout] == "brats2018" else 3
    written = []
    for index, ind in enumerate(individuals):
        case = brats_case_id(layout, index)
        for modality in KIND_MODALITIES[kind]:
            path = root / case / layouts.brats_file(case, layout, modality)
            save_nifti(to_nifti(ind[modality], ind["affine"]), path)
        label = np.where(ind["label"] == 3, et_value, ind["label"])
        save_nifti(to_nifti(label, ind["affine"], label=True), root / case / layouts.brats_file(case, layout, "seg"))
        written.append(Path(case))
    return written


def _write_autopet(individuals, root: Path, layout: str, kind: str, patients, seed) -> list[Path]:
    patients = list(patients) if patients is not None else list(range(len(individuals)))
    if len(patients) != len(individuals):
        raise InputError("write_subjects: 'patients' must give one patient index per individual")
    files = layouts.MODALITY_FILES["autopet"]
    written, studies_seen, ids = [], {}, {}
    for ind, patient in zip(individuals, patients):
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7, int(patient)]))
        if patient not in ids:
            ids[patient] = (f"PETCT_{rng.bytes(5).hex()}", rng.integers(0, 2000))
        patient_id, first_day = ids[patient]
        study_index = studies_seen.get(patient, 0)
        studies_seen[patient] = study_index + 1
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 8, int(patient), study_index]))
        day = np.datetime64("2002-01-01") + int(first_day) + 120 * study_index + int(rng.integers(0, 60))
        year, month, dom = str(day).split("-")
        study = f"{month}-{dom}-{year}-NA-PET-CT Ganzkoerper  primaer mit KM-{int(rng.integers(10000, 99999)):05d}"
        folder = root / patient_id / study
        # activity concentration (Bq/ml) = SUV x injected dose (Bq) / body weight (g)
        activity_per_suv = rng.uniform(200e6, 400e6) / rng.uniform(50e3, 100e3)
        affine = ind["affine"]
        save_nifti(to_nifti(ind["ct"], affine), folder / files["ct"])
        save_nifti(to_nifti(ind["ct"], affine), folder / layouts.AUTOPET_EXTRA["ct_original"])
        save_nifti(to_nifti(ind["pet"], affine), folder / files["pet"])
        save_nifti(to_nifti(ind["pet"] * np.float32(activity_per_suv), affine),
                                folder / layouts.AUTOPET_EXTRA["pet_activity"])
        save_nifti(to_nifti(ind["label"], affine, label=True), folder / layouts.LABEL_FILES["autopet"])
        written.append(Path(patient_id) / study)
    return written


def _write_nac(individuals, root: Path, layout: str, kind: str, patients, seed) -> list[Path]:
    written = []
    for index, ind in enumerate(individuals):
        subject = f"NAC_{index:03d}"
        for modality, name in layouts.MODALITY_FILES["nac"].items():
            save_nifti(to_nifti(ind[modality], ind["affine"]), root / subject / name)
        written.append(Path(subject))
    return written


def _write_nnunet(individuals, root: Path, layout: str, kind: str, patients, seed) -> list[Path]:
    modalities = KIND_MODALITIES[kind]
    written = []
    for index, ind in enumerate(individuals):
        case = f"{kind}_{index:03d}"
        for channel, modality in enumerate(modalities):
            save_nifti(to_nifti(ind[modality], ind["affine"]),
                                    root / "imagesTr" / layouts.nnunet_file(case, channel))
        save_nifti(to_nifti(ind["label"], ind["affine"], label=True), root / "labelsTr" / f"{case}.nii.gz")
        written.append(Path("imagesTr") / layouts.nnunet_file(case, 0))
    dataset = {
        "name": f"p2gmed-{kind}",
        "description": f"built-in simulated {kind} data of p2gmed (not real patients)",
        "channel_names": {str(c): m for c, m in enumerate(modalities)},
        "labels": KIND_LABELS[kind],
        "numTraining": len(individuals),
        "file_ending": ".nii.gz",
    }
    write_text(root / NNUNET_DATASET_JSON, json.dumps(dataset, indent=2) + "\n")
    return written


def _write_decathlon(individuals, root: Path, layout: str, kind: str, patients, seed) -> list[Path]:
    modalities = KIND_MODALITIES[kind]
    training, written = [], []
    for index, ind in enumerate(individuals):
        case = f"{kind}_{index:03d}"
        entry = {}
        for modality in modalities:
            rel = f"imagesTr/{case}_{modality}.nii.gz"
            save_nifti(to_nifti(ind[modality], ind["affine"]), root / rel)
            entry[modality] = rel
        entry["label"] = f"labelsTr/{case}.nii.gz"
        save_nifti(to_nifti(ind["label"], ind["affine"], label=True), root / entry["label"])
        training.append(entry)
        written.append(Path(entry[modalities[0]]))
    datalist = {
        "name": f"p2gmed-{kind}",
        "modalities": list(modalities),
        "labels": {str(v): k for k, v in KIND_LABELS[kind].items()},
        "training": training,
    }
    write_text(root / DECATHLON_DATALIST, json.dumps(datalist, indent=2) + "\n")
    return written
