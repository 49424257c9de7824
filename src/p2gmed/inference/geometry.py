"""The geometry round trip of prediction: native grid -> model working space -> native grid.

A case's NIfTI files are loaded and checked together (readable, 3D, finite, one shared shape and affine). The model
works on arrays in RAS voxel order (array axes D, H, W = x, y, z), optionally resampled to the training spacing
(`cfg.data.spacing`). `WorkingGrid` holds both directions explicitly:

* reorientation is a pure axis permutation / flip (`nibabel.orientations`), so it is inverted exactly;
* resampling maps working voxel `w` to RAS voxel `w * spacing / zooms` (voxel 0 centres coincide) with
  `scipy.ndimage.affine_transform`, and back with the reciprocal scale onto exactly the native RAS grid.

Outputs therefore always have the input's shape and affine, whatever its size, spacing and orientation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import nibabel as nib
import numpy as np
from nibabel import orientations
from scipy import ndimage

from p2gmed.data.check import image_problem, one_line
from p2gmed.errors import DataError

log = logging.getLogger(__name__)

#: largest difference (mm, per affine entry) tolerated between the affines of one case's files; headers store
#: float32, so files written by different tools differ in the last digits
AFFINE_ATOL = 1e-3
#: relative spacing difference under which resampling is skipped (keeps the round trip exact)
SPACING_RTOL = 1e-3
RAS = orientations.axcodes2ornt(("R", "A", "S"))


@dataclass(frozen=True)
class NativeGeometry:
    """Grid of a case's input files: what every output must reproduce.

    Attributes:
        shape: (X, Y, Z) voxel shape of the files.
        affine: (4, 4) voxel -> world (mm) matrix of the reference file.
        header: NIfTI header of the reference file (outputs copy it, with their own data type).
        reference: the file the geometry was taken from (the first input).
    """

    shape: tuple[int, int, int]
    affine: np.ndarray
    header: nib.Nifti1Header
    reference: Path

    @property
    def axcodes(self) -> str:
        """Orientation code of the voxel axes, e.g. "RAS" or "LPS"."""
        return "".join(orientations.aff2axcodes(self.affine))

    @property
    def zooms(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in nib.affines.voxel_sizes(self.affine))  # type: ignore[return-value]


#: what a case's input may be: a NIfTI file, a nibabel image, or an (array (X, Y, Z), affine (4, 4)) pair
ImageSource = Union[str, Path, nib.spatialimages.SpatialImage, tuple]


def describe_source(modality: str, source: ImageSource) -> str:
    """How messages name an input: its file, or "the <modality> image" for an in-memory one."""
    if isinstance(source, (str, Path)):
        return str(source)
    name = getattr(source, "get_filename", lambda: None)()
    return str(name) if name else f"the {modality} image"


def _as_image(modality: str, source: ImageSource) -> nib.spatialimages.SpatialImage:
    """A nibabel image from a path, an image or an (array, affine) pair; DataError naming what is wrong."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            return nib.load(str(path))
        except FileNotFoundError:
            raise DataError(f"{path}: file does not exist (given for {modality})") from None
        except Exception as exc:  # nibabel raises many types for corrupt or foreign files
            raise DataError(f"{path}: cannot be read as a NIfTI image ({type(exc).__name__}: {one_line(exc)})") from None
    if isinstance(source, nib.spatialimages.SpatialImage):
        return source
    if isinstance(source, tuple) and len(source) == 2:
        array, affine = np.asarray(source[0]), np.asarray(source[1], dtype=np.float64)
        if affine.shape != (4, 4) or not np.isfinite(affine).all():
            raise DataError(f"the {modality} input's affine must be a finite 4x4 matrix, got shape {affine.shape}")
        return nib.Nifti1Image(array.astype(np.float32, copy=False), affine)
    raise DataError(
        f"the {modality} input is a {type(source).__name__}; give a NIfTI path, a nibabel image or an "
        "(array, affine) pair"
    )


def _load_one(modality: str, source: ImageSource) -> tuple[np.ndarray, nib.spatialimages.SpatialImage]:
    """Read one input as float32 (X, Y, Z); DataError naming the file when it cannot be used."""
    img = _as_image(modality, source)
    name = describe_source(modality, source)
    try:
        data = np.asanyarray(img.dataobj)
        if data.dtype.kind != "c" and data.dtype.fields is None:
            data = data.astype(np.float32, copy=False)
    except Exception as exc:  # truncated files fail only when the data are read
        raise DataError(f"{name}: cannot be read as a NIfTI image ({type(exc).__name__}: {one_line(exc)})") from None
    if problem := image_problem(img, data):
        raise DataError(f"{name} {problem}")
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(f"{name}: expected a 3D volume, got shape {data.shape}")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise DataError(f"{name}: {bad} voxels are NaN or infinite")
    if not data.any():
        log.warning("%s (%s) is all zero: an empty scan carries no information, so what is predicted from it "
                    "is a guess; check that it is the file you meant", name, modality)
    return data, img


def load_case(inputs: dict[str, ImageSource]) -> tuple[dict[str, np.ndarray], NativeGeometry]:
    """Load a case's modalities and check that they share one grid.

    Args:
        inputs: canonical modality name -> NIfTI file, nibabel image or (array, affine) pair; the first entry
            is the geometry reference.

    Returns:
        (arrays, geometry): float32 arrays (X, Y, Z) in the inputs' own voxel order, and their common geometry.

    Raises:
        DataError: one sentence per bad input (unreadable, not 3D, NaN/inf), or per input whose shape or affine
            differs from the reference, naming both.
    """
    arrays, geometries = load_case_geometries(inputs)
    return arrays, geometries[next(iter(inputs))]


def load_case_geometries(
    inputs: dict[str, ImageSource],
) -> tuple[dict[str, np.ndarray], dict[str, NativeGeometry]]:
    """`load_case`, with the geometry of every input (the reference of a prediction from a subset that starts
    with it: its affine and header are what the outputs carry). Same arguments and errors."""
    arrays: dict[str, np.ndarray] = {}
    images = {}
    problems: list[str] = []
    for modality, source in inputs.items():
        try:
            arrays[modality], images[modality] = _load_one(modality, source)
        except DataError as exc:
            problems.extend(exc.problems)
    if problems:
        raise DataError(problems)
    ref_mod = next(iter(inputs))
    ref_name, ref_img = describe_source(ref_mod, inputs[ref_mod]), images[ref_mod]
    for modality, img in images.items():
        name = describe_source(modality, inputs[modality])
        if arrays[modality].shape != arrays[ref_mod].shape:
            problems.append(
                f"{name} has shape {arrays[modality].shape} but {ref_name} has {arrays[ref_mod].shape}; "
                "all inputs of a case must share one grid"
            )
        elif not np.allclose(img.affine, ref_img.affine, atol=AFFINE_ATOL):
            diff = float(np.abs(img.affine - ref_img.affine).max())
            problems.append(
                f"{name} has another affine than {ref_name} (largest difference {diff:.4g}); "
                "all inputs of a case must share one grid (resample them onto one first)"
            )
    if problems:
        raise DataError(problems)
    geometries = {}
    for modality, img in images.items():
        header = img.header if isinstance(img.header, nib.Nifti1Header) else nib.Nifti1Header()
        geometries[modality] = NativeGeometry(
            shape=arrays[modality].shape,  # type: ignore[arg-type]
            affine=np.asarray(img.affine, dtype=np.float64),
            header=header.copy(),
            reference=Path(describe_source(modality, inputs[modality])),
        )
    return arrays, geometries


class WorkingGrid:
    """Explicit, invertible map between a native grid and the model's working grid (RAS, training spacing).

    Args:
        native: the case's native geometry.
        spacing: working voxel spacing in mm along the RAS axes, or None to keep the native spacing.

    Attributes:
        ras_shape, ras_affine: the native grid after reorientation to RAS (no resampling).
        shape, affine: the working grid (RAS, resampled when `resampled`).
        resampled: whether a resampling step is part of the round trip.
    """

    def __init__(self, native: NativeGeometry, spacing: tuple[float, float, float] | None = None):
        self.native = native
        source = orientations.io_orientation(native.affine)
        self._to_ras = orientations.ornt_transform(source, RAS)
        self._from_ras = orientations.ornt_transform(RAS, source)
        self.ras_affine = native.affine @ orientations.inv_ornt_aff(self._to_ras, native.shape)
        self.ras_shape = tuple(int(native.shape[int(axis)]) for axis in np.argsort(self._to_ras[:, 0]))
        ras_zooms = np.asarray(nib.affines.voxel_sizes(self.ras_affine), dtype=np.float64)
        target = ras_zooms if spacing is None else np.asarray(spacing, dtype=np.float64)
        if np.any(target <= 0):
            raise DataError(f"working spacing must be positive, got {tuple(target)}")
        self.resampled = not np.allclose(target, ras_zooms, rtol=SPACING_RTOL, atol=0.0)
        # working voxel w sits at RAS voxel w * scale; the working grid covers the native extent
        self._scale = target / ras_zooms if self.resampled else np.ones(3)
        self.spacing = tuple(float(v) for v in target)
        extent = (np.asarray(self.ras_shape) - 1) / self._scale
        self.shape = tuple(int(np.ceil(e - 1e-6)) + 1 for e in extent)
        self.affine = self.ras_affine @ np.diag([*self._scale, 1.0])

    def to_working(self, array: np.ndarray, order: int = 1) -> np.ndarray:
        """Native voxel order -> working grid.

        Args:
            array: (X, Y, Z) or (C, X, Y, Z) in the native files' voxel order.
            order: spline order of the resampling (1 linear for images, 0 nearest for labels).

        Returns:
            float32 (D, H, W) or (C, D, H, W) on the working grid (`self.shape`).
        """
        ras = self._reorient(array, self._to_ras)
        if self.resampled:
            ras = self._resample(ras, self._scale, self.shape, order)
        return np.ascontiguousarray(ras, dtype=np.float32)

    def to_native(self, array: np.ndarray, order: int = 1) -> np.ndarray:
        """Working grid -> native voxel order: the inverse of `to_working`.

        Args:
            array: (D, H, W) or (C, D, H, W) on the working grid.
            order: spline order (resample class probabilities linearly, then take the argmax).

        Returns:
            (X, Y, Z) or (C, X, Y, Z) with the native shape, in the files' voxel order.
        """
        if tuple(array.shape[-3:]) != self.shape:
            raise ValueError(f"expected an array on the working grid {self.shape}, got {array.shape}")
        if self.resampled:
            array = self._resample(array, 1.0 / self._scale, self.ras_shape, order)
        return np.ascontiguousarray(self._reorient(array, self._from_ras))

    @staticmethod
    def _reorient(array: np.ndarray, transform: np.ndarray) -> np.ndarray:
        # apply_orientation acts on the first three axes: move a channel axis behind them
        if array.ndim == 3:
            return orientations.apply_orientation(array, transform)
        moved = orientations.apply_orientation(np.moveaxis(array, 0, -1), transform)
        return np.moveaxis(moved, -1, 0)

    @staticmethod
    def _resample(array: np.ndarray, scale: np.ndarray, shape: tuple[int, ...], order: int) -> np.ndarray:
        """Output voxel o reads input voxel o * scale (edges extended, never zero-filled)."""
        channels = array[None] if array.ndim == 3 else array
        out = np.stack(
            [
                ndimage.affine_transform(
                    c.astype(np.float32), np.diag(scale), output_shape=shape, order=order, mode="nearest"
                )
                for c in channels
            ]
        )
        return out[0] if array.ndim == 3 else out

    def describe(self) -> dict:
        """JSON-ready summary for the prediction sidecar."""
        return {
            "shape": list(self.shape),
            "orientation": "RAS",
            "spacing": [round(v, 6) for v in self.spacing],
            "resampled": bool(self.resampled),
        }


def native_image(array: np.ndarray, geometry: NativeGeometry, dtype: type, description: str = "") -> nib.Nifti1Image:
    """Wrap an (X, Y, Z) array in a NIfTI image with the native affine and header.

    Args:
        array: (X, Y, Z) data in the native voxel order.
        geometry: the case's native geometry (affine, header; sform and qform codes kept).
        dtype: on-disk data type (float32 for images, uint8 for labels).
        description: NIfTI `descrip` field (at most 80 characters), e.g. "p2gmed synthesized t2w".
    """
    if tuple(array.shape) != tuple(geometry.shape):
        raise ValueError(f"output shape {array.shape} differs from the native shape {geometry.shape}")
    header = geometry.header.copy()
    header.set_data_dtype(dtype)
    img = nib.Nifti1Image(np.asarray(array, dtype=dtype), geometry.affine, header=header)
    img.header["descrip"] = description[:79].encode()
    # keep the reference's sform/qform codes (the constructor may reset them) with the exact native affine
    sform_code = int(geometry.header["sform_code"]) or 1
    qform_code = int(geometry.header["qform_code"]) or 1
    img.set_sform(geometry.affine, code=sform_code)
    img.set_qform(geometry.affine, code=qform_code)
    return img
