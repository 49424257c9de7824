"""Real MRI averages in MNI space, read offline from installed packages, on one 2 mm grid.

Sources (nothing is downloaded at run time and nothing is copied into this repository):

* `spm-runtime==25.1.2.post4` (PyPI; SPM is GPL-2, the averages carry the MNI permissive notice): its
  `_spm.ctf` is a plain zip holding SPM's canonical images. Used: the ICBM avg152 T1, T2 and PD averages and
  avg305 T1 (91 x 109 x 91 @ 2 mm, LAS), the single-subject Colin27 T1 (same grid, with skull), the
  intracranial mask `mask_ICV` and the tissue probability map `TPM` (GM, WM, CSF, ... at 1.5 mm).
  Install it with `pip install --no-deps spm-runtime==25.1.2.post4` (or `make bench-transfer`).
* nilearn (a dependency of p2gmed): the ICBM152 2009 T1 template (1 mm, brain only) and its brain mask.

Every image is resampled by its affine onto the avg152 grid (`resample`); the skull-stripped T1 inputs are
given to the model on their own grids, as a user would give them.
"""

from __future__ import annotations

import importlib.util
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from p2gmed.data.convert import resample_to

SPM_REQUIREMENT = "spm-runtime==25.1.2.post4"
SPM_INSTALL = f"pip install --no-deps {SPM_REQUIREMENT}"
SPM_MEMBER = "fsroot/_spm/cleaned/spm/{}"
#: TPM volumes (SPM order) and the probability above which a voxel counts as that tissue (CSF is thinner)
TPM_CLASSES = {"gm": (0, 0.8), "wm": (1, 0.8), "csf": (2, 0.7)}


class RealDataMissing(RuntimeError):
    """The package holding the real images is not installed (or lacks a file); the message says what to do."""


def spm_archive() -> Path:
    """The zip inside the installed spm-runtime, located without importing the package (no MATLAB needed)."""
    spec = importlib.util.find_spec("spm_runtime")
    if spec is None or not spec.submodule_search_locations:
        raise RealDataMissing(f"the real MRI templates come from the package spm-runtime; install it with "
                              f"`{SPM_INSTALL}`")
    archive = Path(list(spec.submodule_search_locations)[0]) / "_spm" / "_spm.ctf"
    if not archive.is_file():
        raise RealDataMissing(f"{archive} is missing; reinstall the pinned version with `{SPM_INSTALL}`")
    return archive


def read_spm(name: str, archive: Path | None = None) -> nib.Nifti1Image:
    """One NIfTI of SPM's tree, e.g. "canonical/avg152T1.nii", as an in-memory nibabel image."""
    archive = archive or spm_archive()
    member = SPM_MEMBER.format(name)
    with zipfile.ZipFile(archive) as zf:
        try:
            data = zf.read(member)
        except KeyError:
            raise RealDataMissing(f"{archive} has no member {member}; install the pinned version with "
                                  f"`{SPM_INSTALL}`") from None
    return nib.Nifti1Image.from_bytes(data)


def resample(volume: np.ndarray, affine: np.ndarray, shape: tuple[int, ...], target: np.ndarray,
             order: int = 1) -> np.ndarray:
    """`volume` (X, Y, Z[, C]) with voxel->mm `affine` sampled on the grid (`shape`, `target`); 0 outside.

    A target voxel v takes the value at source voxel inv(affine) @ target @ v (`p2gmed.data.convert.resample_to`,
    the resampling of `p2g data convert-dicom`, channel by channel).
    """
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim == 4:
        channels = [resample(volume[..., c], affine, shape, target, order) for c in range(volume.shape[3])]
        return np.stack(channels, axis=-1)
    return resample_to(volume, affine, shape, target, fill=0.0, order=order)


@dataclass
class RealInput:
    """A skull-stripped real T1 on its own grid (what the model is given) and its brain mask there."""

    name: str
    t1: np.ndarray
    affine: np.ndarray
    mask: np.ndarray

    def on(self, shape: tuple[int, ...], target: np.ndarray, volume: np.ndarray | None = None) -> np.ndarray:
        """`volume` (default the T1) of this input's grid resampled onto another grid."""
        return resample(self.t1 if volume is None else volume, self.affine, shape, target)


@dataclass
class RealSet:
    """Reference images on the avg152 grid, and the real T1 inputs on their own grids.

    Attributes:
        shape, affine: the avg152 grid (91 x 109 x 91 @ 2 mm, LAS).
        t1, t2, pd: the avg152 averages, in [0, 1].
        mask: intracranial mask (SPM's mask_ICV > 0.5).
        tissues: "gm", "wm", "csf" -> bool, TPM probability above the class's threshold (`TPM_CLASSES`).
        inputs: name -> RealInput.
    """

    shape: tuple[int, int, int]
    affine: np.ndarray
    t1: np.ndarray
    t2: np.ndarray
    pd: np.ndarray
    mask: np.ndarray
    tissues: dict[str, np.ndarray]
    inputs: dict[str, RealInput] = field(default_factory=dict)


def _array(img: nib.Nifti1Image) -> np.ndarray:
    return np.asarray(img.dataobj, dtype=np.float32)


def nilearn_t1() -> RealInput:
    """The ICBM152 2009 T1 nilearn ships (1 mm, already brain-only), masked by nilearn's brain mask."""
    from nilearn.datasets import load_mni152_brain_mask, load_mni152_template

    img = load_mni152_template(resolution=1)
    mask_img = load_mni152_brain_mask(resolution=1)
    mask = resample(_array(mask_img), mask_img.affine, img.shape, img.affine, order=0) > 0.5
    return RealInput("MNI152 2009 (nilearn)", _array(img) * mask, img.affine, mask)


def load_real(with_nilearn: bool = True) -> RealSet:
    """Every real image of the check, read from the installed packages.

    Raises:
        RealDataMissing: spm-runtime is not installed or is another version.
    """
    archive = spm_archive()
    ref = read_spm("canonical/avg152T1.nii", archive)
    shape, affine = ref.shape[:3], ref.affine
    images = {k: _array(read_spm(f"canonical/avg152{k.upper()}.nii", archive)) for k in ("t1", "t2", "pd")}
    icv = read_spm("tpm/mask_ICV.nii", archive)
    mask = resample(_array(icv), icv.affine, shape, affine) > 0.5
    tpm = read_spm("tpm/TPM.nii", archive)
    probabilities = resample(_array(tpm)[..., :3], tpm.affine, shape, affine)
    tissues = {k: (probabilities[..., i] > threshold) & mask for k, (i, threshold) in TPM_CLASSES.items()}
    real = RealSet(shape, affine, images["t1"], images["t2"], images["pd"], mask, tissues)
    for name, member in (("avg152T1", "canonical/avg152T1.nii"), ("avg305T1", "canonical/avg305T1.nii"),
                         ("Colin27 single_subj_T1", "canonical/single_subj_T1.nii")):
        img = read_spm(member, archive)
        real.inputs[name] = RealInput(name, _array(img) * mask, img.affine, mask.copy())
    if with_nilearn:
        item = nilearn_t1()
        real.inputs[item.name] = item
    return real
