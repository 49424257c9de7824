"""Random fields and soft shapes shared by the brain and torso simulators.

Everything here is a pure function of a `numpy.random.Generator` and array shapes, so a simulator that draws
its randomness from one seeded generator in a fixed order is bit-for-bit reproducible.

Shape legend: D, H, W are the voxel axes of the output grid (RAS: x, y, z).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def individual_rng(seed: int, *stream: int) -> np.random.Generator:
    """A generator for one (seed, stream...) pair; different streams are statistically independent."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), *map(int, stream)]))


def smooth_field(rng: np.random.Generator, shape: tuple[int, int, int], nodes: int = 5) -> np.ndarray:
    """A smooth random field of about unit standard deviation, shape `shape`.

    White noise on a coarse lattice of `nodes` points per axis, interpolated separably with normalised
    Gaussian weights (one small matrix per axis, so it costs almost nothing): the field varies over roughly
    `size / nodes` voxels whatever the grid resolution.

    Returns:
        float32 array of shape `shape`.
    """
    nodes = max(2, int(nodes))
    coarse = rng.standard_normal((nodes, nodes, nodes)).astype(np.float32)
    wx, wy, wz = (_interpolation_weights(size, nodes) for size in shape)
    # contract the small axes first: only the last product has the full size
    field = np.einsum("ijk,ck->ijc", coarse, wz)
    field = np.einsum("ijc,bj->ibc", field, wy)
    # einsum, not BLAS matmul: a threaded BLAS on a busy machine is 30x slower for this thin product
    field = np.einsum("ai,ij->aj", wx, field.reshape(nodes, -1)).reshape(shape)
    field -= field.mean()
    return (field / max(float(field.std()), 1e-6)).astype(np.float32)


def _interpolation_weights(size: int, nodes: int) -> np.ndarray:
    """(size, nodes) row-normalised Gaussian weights mapping a coarse lattice onto `size` points."""
    fine = np.linspace(0.0, nodes - 1.0, size, dtype=np.float32)
    weights = np.exp(-0.5 * ((fine[:, None] - np.arange(nodes, dtype=np.float32)[None]) / 0.7) ** 2)
    return weights / weights.sum(1, keepdims=True)


def soft_step(signed_distance_mm: np.ndarray, width_mm: float) -> np.ndarray:
    """Partial-volume membership from a signed distance (positive inside): 0.5 on the boundary.

    A logistic ramp about one voxel wide plays the role of the voxel's partial-volume fraction.
    """
    return (1.0 / (1.0 + np.exp(-np.clip(signed_distance_mm / max(width_mm, 1e-6), -30, 30)))).astype(np.float32)


def ellipsoid_distance(
    coords: np.ndarray, center: np.ndarray, radii: np.ndarray, rotation: np.ndarray | None = None
) -> np.ndarray:
    """Approximate signed distance (mm, positive inside) to an ellipsoid surface.

    Args:
        coords: (3, D, H, W) world coordinates in mm.
        center: (3,) centre in mm.
        radii: (3,) semi-axes in mm.
        rotation: optional (3, 3) rotation of the ellipsoid's axes.

    Returns:
        (D, H, W) float32: (1 - normalised radius) x smallest semi-axis, exact for a sphere.
    """
    offset = coords - np.asarray(center, dtype=np.float32).reshape(3, 1, 1, 1)
    if rotation is not None:
        offset = np.einsum("ij,j...->i...", np.asarray(rotation, dtype=np.float32).T, offset)
    q = np.sqrt(sum((offset[i] / float(radii[i])) ** 2 for i in range(3)))
    return ((1.0 - q) * float(np.min(radii))).astype(np.float32)


def rotation_matrix(angles_rad: tuple[float, float, float]) -> np.ndarray:
    """(3, 3) rotation: about x, then y, then z by the given angles (radians)."""
    ax, ay, az = angles_rad
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def grid_coords(shape: tuple[int, int, int], spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """World coordinates of a grid centred on the origin, and its RAS affine.

    Returns:
        coords: (3, D, H, W) float32, mm; voxel (i, j, k) sits at affine @ (i, j, k, 1).
        affine: (4, 4) float64 with `spacing` on the diagonal (RAS) and the grid centre at (0, 0, 0).
    """
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = [-(n - 1) / 2.0 * spacing for n in shape]
    axes = [(np.arange(n, dtype=np.float32) - (n - 1) / 2.0) * spacing for n in shape]
    coords = np.stack(np.meshgrid(*axes, indexing="ij"))
    return coords, affine


def rician(rng: np.random.Generator, signal: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude of a complex signal with Gaussian noise of std `sigma` in both channels (MRI noise)."""
    real = signal + np.float32(sigma) * rng.standard_normal(signal.shape, dtype=np.float32)
    imag = np.float32(sigma) * rng.standard_normal(signal.shape, dtype=np.float32)
    return np.sqrt(real * real + imag * imag).astype(np.float32)


def blur_mm(volume: np.ndarray, fwhm_mm: float, spacing: float) -> np.ndarray:
    """Gaussian blur with the given full width at half maximum in mm (a scanner's point-spread function)."""
    sigma_vox = fwhm_mm / (2.0 * np.sqrt(2.0 * np.log(2.0))) / spacing
    return ndimage.gaussian_filter(volume, sigma_vox, mode="nearest").astype(np.float32)


def grid_shape(fov_mm: tuple[float, float, float], spacing: float) -> tuple[int, int, int]:
    """Voxels per axis covering a field of view at a spacing (at least 8 per axis)."""
    return tuple(max(8, int(round(f / spacing))) for f in fov_mm)  # type: ignore[return-value]
