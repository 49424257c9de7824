"""Geometry round trip of prediction: loading checks, RAS reorientation, resampling and back (inference/geometry.py)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from p2gmed.errors import DataError
from p2gmed.inference.geometry import WorkingGrid, load_case, native_image

# LPS, anisotropic: x runs right->left (-1.2 mm), y anterior->posterior (-0.9 mm), z up (2.5 mm)
LPS = np.array([[-1.2, 0, 0, 40.0], [0, -0.9, 0, 30.0], [0, 0, 2.5, -20.0], [0, 0, 0, 1]])
# axes permuted (array axis 0 is S, 1 is R, 2 is P) and non-zero origin
PERMUTED = np.array([[0, 1.0, 0, -5.0], [0, 0, -1.5, 12.0], [2.0, 0, 0, 3.0], [0, 0, 0, 1]])


def write(path, data, affine):
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine), str(path))
    return path


def world_of(affine, shape):
    """(3, X, Y, Z) world coordinates of every voxel centre (independent of the code under test)."""
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")).reshape(3, -1)
    return (affine[:3, :3] @ idx + affine[:3, 3:]).reshape(3, *shape)


@pytest.mark.parametrize("affine", [LPS, PERMUTED, np.diag([1.0, 1.0, 1.0, 1.0])])
def test_reorientation_matches_nibabel_canonical_and_inverts_exactly(tmp_path, affine):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(13, 9, 7)).astype(np.float32)  # odd sizes, not multiples of 32
    path = write(tmp_path / "a.nii.gz", data, affine)
    arrays, geometry = load_case({"t1n": path})
    grid = WorkingGrid(geometry, spacing=None)
    canonical = nib.as_closest_canonical(nib.load(str(path)))
    working = grid.to_working(arrays["t1n"])
    np.testing.assert_array_equal(working, canonical.get_fdata(dtype=np.float32))
    np.testing.assert_allclose(grid.affine, canonical.affine, atol=1e-5)
    assert not grid.resampled and grid.shape == canonical.shape
    back = grid.to_native(working)
    np.testing.assert_array_equal(back, data)  # exact: a reorientation loses nothing
    # channel-first arrays go through the same map
    stacked = grid.to_native(np.stack([working, 2 * working]))
    np.testing.assert_array_equal(stacked[1], 2 * data)


def test_geometry_reports_orientation_and_spacing(tmp_path):
    _, geometry = load_case({"t1n": write(tmp_path / "a.nii.gz", np.zeros((5, 6, 7)), LPS)})
    assert geometry.axcodes == "LPS"
    np.testing.assert_allclose(geometry.zooms, (1.2, 0.9, 2.5))
    assert geometry.shape == (5, 6, 7)


def test_resampling_puts_values_at_the_right_world_positions(tmp_path):
    # a linear function of world position is reproduced exactly by linear interpolation
    shape = (11, 15, 9)
    world = world_of(LPS, shape)
    ramp = 0.3 * world[0] - 0.2 * world[1] + 0.1 * world[2] + 5.0
    _, geometry = load_case({"t2w": write(tmp_path / "r.nii.gz", ramp, LPS)})
    grid = WorkingGrid(geometry, spacing=(1.0, 1.0, 1.0))
    assert grid.resampled
    np.testing.assert_allclose(nib.affines.voxel_sizes(grid.affine), (1.0, 1.0, 1.0), atol=1e-6)
    working = grid.to_working(ramp)
    assert working.shape == grid.shape
    expected = world_of(grid.affine, grid.shape)
    expected = 0.3 * expected[0] - 0.2 * expected[1] + 0.1 * expected[2] + 5.0
    # working voxels inside the native extent (the last ones may lie past it and are edge-extended)
    inside = tuple(slice(0, int(np.floor((n - 1) * z))) for n, z in zip(grid.ras_shape, (1.2, 0.9, 2.5)))
    np.testing.assert_allclose(working[inside], expected[inside], atol=1e-3)
    # working grid covers the native extent
    assert all((m - 1) * 1.0 >= (n - 1) * z - 1e-6 for m, n, z in zip(grid.shape, grid.ras_shape, (1.2, 0.9, 2.5)))


def test_resampled_round_trip_returns_native_shape_and_values(tmp_path):
    shape = (17, 12, 9)
    world = world_of(LPS, shape)
    ramp = 0.5 * world[0] + 0.25 * world[2]
    arrays, geometry = load_case({"ct": write(tmp_path / "c.nii.gz", ramp, LPS)})
    grid = WorkingGrid(geometry, spacing=(1.5, 1.5, 1.5))
    back = grid.to_native(grid.to_working(arrays["ct"]))
    assert back.shape == shape
    # interior voxels come back exactly; the border next to the working grid's edge-extended end may not
    # (which native end that is depends on the flips of LPS, so both ends are left out)
    inner = (slice(2, -2),) * 3
    np.testing.assert_allclose(back[inner], ramp[inner], atol=1e-3)
    labels = (ramp > ramp.mean()).astype(np.float32)
    back_labels = grid.to_native(grid.to_working(labels, order=0), order=0)
    assert set(np.unique(back_labels)) <= {0.0, 1.0}
    assert (back_labels == labels).mean() > 0.9


def test_native_image_keeps_shape_affine_and_marks_description(tmp_path):
    src = write(tmp_path / "a.nii.gz", np.ones((7, 5, 3)), PERMUTED)
    _, geometry = load_case({"t1n": src})
    img = native_image(np.full((7, 5, 3), 3, dtype=np.float64), geometry, np.uint8, "p2gmed segmentation")
    nib.save(img, str(tmp_path / "out.nii.gz"))
    back = nib.load(str(tmp_path / "out.nii.gz"))
    assert back.shape == (7, 5, 3) and back.get_data_dtype() == np.uint8
    np.testing.assert_allclose(back.affine, PERMUTED, atol=1e-5)
    assert back.header["descrip"].tobytes().rstrip(b"\0") == b"p2gmed segmentation"
    with pytest.raises(ValueError):
        native_image(np.ones((7, 5, 4)), geometry, np.float32)


# ------------------------------------------------------------------------------------------------ errors


def test_shape_mismatch_names_both_files(tmp_path):
    a = write(tmp_path / "a.nii.gz", np.zeros((5, 6, 7)), LPS)
    b = write(tmp_path / "b.nii.gz", np.zeros((5, 6, 8)), LPS)
    with pytest.raises(DataError) as err:
        load_case({"t1n": a, "t2w": b})
    assert str(a) in str(err.value) and str(b) in str(err.value) and "shape" in str(err.value)


def test_affine_mismatch_names_both_files_but_tolerates_float32_noise(tmp_path):
    a = write(tmp_path / "a.nii.gz", np.zeros((5, 6, 7)), LPS)
    shifted = LPS.copy()
    shifted[0, 3] += 0.5
    b = write(tmp_path / "b.nii.gz", np.zeros((5, 6, 7)), shifted)
    with pytest.raises(DataError) as err:
        load_case({"t1n": a, "t2w": b})
    assert str(a) in str(err.value) and str(b) in str(err.value) and "affine" in str(err.value)
    noisy = LPS.copy()
    noisy[0, 3] += 1e-5
    c = write(tmp_path / "c.nii.gz", np.zeros((5, 6, 7)), noisy)
    load_case({"t1n": a, "t2w": c})  # within tolerance


@pytest.mark.parametrize("problem", ["nan", "inf", "garbage", "missing", "4d"])
def test_bad_files_raise_data_error_naming_the_file(tmp_path, problem):
    path = tmp_path / "bad.nii.gz"
    data = np.zeros((5, 6, 7), dtype=np.float32)
    if problem == "nan":
        data[1, 2, 3] = np.nan
        write(path, data, LPS)
    elif problem == "inf":
        data[0, 0, 0] = np.inf
        write(path, data, LPS)
    elif problem == "garbage":
        path.write_bytes(b"this is not a NIfTI file at all")
    elif problem == "4d":
        write(path, np.zeros((5, 6, 7, 2)), LPS)
    with pytest.raises(DataError) as err:
        load_case({"t2f": path})
    assert str(path) in str(err.value)


def test_singleton_fourth_axis_is_accepted(tmp_path):
    path = write(tmp_path / "a.nii.gz", np.ones((5, 6, 7, 1)), LPS)
    arrays, geometry = load_case({"pet": path})
    assert arrays["pet"].shape == (5, 6, 7) and geometry.shape == (5, 6, 7)
