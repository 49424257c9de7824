"""`p2g data convert-dicom SRC DST --layout nac|autopet`: DICOM PET/CT studies -> a p2gmed data set in NIfTI.

Studies are grouped by PatientID and StudyInstanceUID; each needs one CT series and one attenuation-corrected PET
series (the largest of each kind when there are several; a PET whose CorrectedImage (0028,0051) lacks ATTN, or
whose description says NAC, is the non-attenuation-corrected one). The CT is resampled onto the PET grid (linear,
-1024 HU outside the CT's field of view), as the AutoPET conversion does, so that a subject's files share a grid.

* `nac`: `<DST>/<patient>[_<n>]/CT.nii.gz` (HU, PET grid), `PET_AC.nii.gz` and `PET_NAC.nii.gz` (SUV body-weight);
* `autopet`: `<DST>/PETCT_<patient>/<study date>-<study>/CT.nii.gz` (HU, own grid), `CTres.nii.gz` (HU, PET grid),
  `PET.nii.gz` (Bq/ml) and `SUV.nii.gz` (SUV body-weight).

Existing files are never overwritten: a subject folder that exists is an error naming it.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import ndimage

from p2gmed.data.records import safe_id
from p2gmed.errors import DataError, InputError

CT_OUTSIDE_HU = -1024.0


def resample_to(
    volume: np.ndarray, affine: np.ndarray, target_shape, target_affine, fill: float, order: int = 1
) -> np.ndarray:
    """`volume` (voxel -> world by `affine`) on the grid (`target_shape`, `target_affine`), spline `order`
    (linear by default), `fill` outside."""
    mapping = np.linalg.inv(affine) @ target_affine  # target voxel -> source voxel
    return ndimage.affine_transform(
        np.asarray(volume).astype(np.float32), mapping[:3, :3], offset=mapping[:3, 3],
        output_shape=tuple(target_shape[:3]), order=order, mode="constant", cval=fill,
    ).astype(np.float32)


def _image(data: np.ndarray, affine: np.ndarray):
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    return img


def _largest(series):
    return max(series, key=lambda s: len(s.files)) if series else None


def convert_dicom(src: str | Path, dst: str | Path, layout: str) -> list[Path]:
    """Convert every PET/CT study under `src` into `dst` in `layout`; returns the subject folders written.

    Raises:
        InputError: unknown layout, no DICOM PET/CT study, an existing subject folder. DataError: a study without
            a CT or an attenuation-corrected PET, or a series that cannot be converted (naming its file and tag).
    """
    import pydicom

    from p2gmed.data.dicom import find_series, series_to_volume, suv_factors

    if layout not in ("nac", "autopet"):
        raise InputError(f"--layout must be nac or autopet for DICOM conversion, got '{layout}'")
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise InputError(f"{src} is not a folder of DICOM files")
    studies = defaultdict(list)
    for series in find_series(src):
        studies[(series.patient, series.study)].append(series)
    if not studies:
        raise InputError(f"{src} holds no DICOM CT or PET series")
    plans, seen = [], defaultdict(int)
    for (patient, study), members in sorted(studies.items()):
        ct = _largest([s for s in members if s.modality == "CT"])
        ac = _largest([s for s in members if s.modality == "PT" and s.attenuation_corrected])
        nac = _largest([s for s in members if s.modality == "PT" and not s.attenuation_corrected])
        if ct is None or ac is None:
            missing = "a CT series" if ct is None else "an attenuation-corrected PET series"
            raise DataError(f"{src}: the study {study} of patient {patient} has no {missing}")
        if layout == "nac" and nac is None:
            raise DataError(f"{src}: the study {study} of patient {patient} has no non-attenuation-corrected PET "
                            "series, which the nac layout needs")
        seen[patient] += 1
        plans.append((patient, seen[patient], ct, ac, nac))
    folders = []
    for patient, n, _, ac, _ in plans:
        if layout == "nac":
            folders.append(dst / (safe_id(patient) + (f"_{n}" if seen[patient] > 1 else "")))
        else:
            folders.append(dst / f"PETCT_{safe_id(patient)}" / safe_id(f"{_study_header(ac)}-{n}"))
        if folders[-1].exists():
            raise InputError(f"{folders[-1]} already exists; p2g never overwrites data, choose an empty DST")
    for _, _, _, ac, nac in plans:  # every SUV tag is checked before the first file is written
        for pet in (ac, nac) if layout == "nac" else (ac,):
            suv_factors([pydicom.dcmread(str(f), stop_before_pixels=True) for f in pet.files], pet.files[0])
    written = []
    for (patient, n, ct, ac, nac), folder in zip(plans, folders):
        pet, pet_affine, suv = series_to_volume(ac)
        hu, ct_affine, _ = series_to_volume(ct)
        ct_res = resample_to(hu, ct_affine, pet.shape, pet_affine, CT_OUTSIDE_HU)
        if layout == "nac":
            _, nac_affine, nac_suv = series_to_volume(nac)
            if nac_suv.shape != pet.shape or not np.allclose(nac_affine, pet_affine, atol=1e-3):
                nac_suv = resample_to(nac_suv, nac_affine, pet.shape, pet_affine, 0.0)
            images = {name: _image(data, pet_affine) for name, data in
                      (("CT.nii.gz", ct_res), ("PET_AC.nii.gz", suv), ("PET_NAC.nii.gz", nac_suv))}
        else:
            images = {"CT.nii.gz": _image(hu, ct_affine)}
            images.update({name: _image(data, pet_affine) for name, data in
                           (("CTres.nii.gz", ct_res), ("PET.nii.gz", pet), ("SUV.nii.gz", suv))})
        written.append(_write_subject(folder, images))
    return written


def _study_header(series) -> str:
    import pydicom

    ds = pydicom.dcmread(str(series.files[0]), stop_before_pixels=True)
    return f"{getattr(ds, 'StudyDate', '') or 'study'}-{getattr(ds, 'StudyDescription', '') or 'PET-CT'}"


def _write_subject(folder: Path, images: dict) -> Path:
    """Write a subject's files into a hidden sibling folder, then rename it into place: never half-written."""
    import shutil
    import tempfile

    from p2gmed.io import save_nifti

    if folder.exists():
        raise InputError(f"{folder} already exists; p2g never overwrites data, choose an empty DST")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for name, img in images.items():
            save_nifti(img, staging / name)
        staging.rename(folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return folder
