"""Synthesis metrics against scikit-image, MONAI and hand-worked values, on random and adversarial volumes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import normalized_root_mse, peak_signal_noise_ratio, structural_similarity

from p2gmed.errors import InputError
from p2gmed.evaluation.synthesis import psnr, synthesis_metrics

SHAPE = (24, 28, 20)


def _brain_like(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A reference with a zero background and a noisy, brighter prediction of it."""
    rng = np.random.default_rng(seed)
    ref = np.zeros(SHAPE)
    ref[3:21, 4:24, 3:17] = 200 + 80 * rng.random((18, 20, 14))
    ref[8:14, 9:15, 6:12] += 400  # a bright lesion well above the p99.5 of the tissue
    pred = ref + rng.normal(0, 30, SHAPE)
    return pred, ref


def _unit_reference(pred, ref):
    """The [0, 1] scaling written out independently: each volume's own percentiles over the reference's
    non-zero voxels."""
    region = ref != 0

    def scaled(v):
        low, high = np.percentile(v[region], [0.5, 99.5])
        return np.clip((v - low) / (high - low), 0, 1)

    return scaled(pred), scaled(ref)


@pytest.mark.parametrize("seed", [0, 1])
def test_unit_matches_skimage_and_monai(seed):
    import torch
    from monai.metrics import SSIMMetric

    pred, ref = _brain_like(seed)
    p, r = _unit_reference(pred, ref)
    got = synthesis_metrics(pred, ref, "unit")
    assert got["psnr"] == pytest.approx(peak_signal_noise_ratio(r, p, data_range=1.0), abs=1e-6)
    assert got["nmse"] == pytest.approx(normalized_root_mse(r, p, normalization="euclidean") ** 2, rel=1e-9)
    wang = structural_similarity(r, p, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert got["ssim"] == pytest.approx(wang, abs=1e-9)
    monai_ssim = SSIMMetric(spatial_dims=3, data_range=1.0, kernel_type="gaussian", win_size=11, kernel_sigma=1.5)
    expected = float(monai_ssim(torch.as_tensor(p)[None, None], torch.as_tensor(r)[None, None]).item())
    assert got["ssim"] == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("seed", [0, 3])
def test_paper_matches_authors_recipe(seed):
    """Re-z-scoring with MONAI's NormalizeIntensity, background from the reference, skimage defaults."""
    from monai.transforms import NormalizeIntensity

    pred, ref = _brain_like(seed)
    pred = 0.01 * pred - 3.0  # the network's output scale does not matter: it is re-z-scored
    norm = NormalizeIntensity()
    gt = np.asarray(norm(ref.astype(np.float32)), dtype=np.float64)
    out = np.asarray(norm(pred.astype(np.float32)), dtype=np.float64)
    out = np.where(gt >= -0.35, out, gt)
    data_range = max(np.ptp(out), np.ptp(gt))
    got = synthesis_metrics(pred, ref, "paper")
    assert got["psnr"] == pytest.approx(peak_signal_noise_ratio(gt, out, data_range=data_range), abs=1e-4)
    assert got["ssim"] == pytest.approx(structural_similarity(gt, out, data_range=data_range), abs=1e-5)
    assert got["nmse"] == pytest.approx(normalized_root_mse(gt, out, normalization="euclidean") ** 2, rel=1e-5)


def test_paper_convention_ignores_prediction_scale_and_background():
    pred, ref = _brain_like(5)
    base = synthesis_metrics(pred, ref, "paper")
    rescaled = synthesis_metrics(7.0 * pred + 11.0, ref, "paper")
    for key in base:
        assert rescaled[key] == pytest.approx(base[key], rel=1e-9)


def test_unit_convention_invariant_to_common_scale():
    pred, ref = _brain_like(6)
    base = synthesis_metrics(pred, ref, "unit")
    scaled = synthesis_metrics(3.5 * pred, 3.5 * ref, "unit")
    for key in base:
        assert scaled[key] == pytest.approx(base[key], rel=1e-9)


def test_psnr_hand_worked():
    ref = np.zeros(SHAPE)
    assert psnr(ref + 0.1, ref, 1.0) == pytest.approx(20.0)
    assert psnr(ref + 0.5, ref, 2.0) == pytest.approx(10 * math.log10(4 / 0.25))


def test_unit_clips_each_volume_at_its_own_percentiles():
    """A prediction with an outlier far above its p99.5 is clipped at 1: its error is bounded."""
    pred, ref = _brain_like(2)
    pred[10, 10, 10] = 1e6
    got = synthesis_metrics(pred, ref, "unit")
    p, r = _unit_reference(pred, ref)
    assert p.max() == 1.0 and got["psnr"] == pytest.approx(10 * math.log10(1 / np.mean((p - r) ** 2)))


@pytest.mark.parametrize("convention", ["paper", "unit"])
def test_identical_volumes(convention):
    _, ref = _brain_like(4)
    got = synthesis_metrics(ref.copy(), ref, convention)
    assert got["psnr"] == math.inf
    assert got["nmse"] == 0.0
    assert got["ssim"] == pytest.approx(1.0)


@pytest.mark.parametrize("convention", ["paper", "unit"])
def test_constant_volumes_are_defined(convention):
    const = np.full(SHAPE, 5.0)
    same = synthesis_metrics(const, const, convention)
    assert same["psnr"] == math.inf and same["ssim"] == pytest.approx(1.0)
    other = synthesis_metrics(const + np.random.default_rng(0).random(SHAPE), const, convention)
    assert math.isfinite(other["psnr"]) and math.isfinite(other["ssim"])


def test_empty_reference_gives_documented_nan_nmse():
    zero = np.zeros(SHAPE)
    got = synthesis_metrics(np.random.default_rng(1).random(SHAPE), zero, "unit")
    assert math.isnan(got["nmse"])
    assert math.isfinite(got["psnr"]) and math.isfinite(got["ssim"])


def test_empty_prediction():
    _, ref = _brain_like(7)
    got = synthesis_metrics(np.zeros(SHAPE), ref, "unit")
    _, r = _unit_reference(ref, ref)
    assert got["nmse"] == pytest.approx(1.0)  # sum(r^2) / sum(r^2): the prediction maps to 0 everywhere
    assert got["psnr"] == pytest.approx(10 * math.log10(1 / np.mean(r**2)))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_in_prediction_is_an_error(bad):
    pred, ref = _brain_like(0)
    pred[3, 4, 5] = bad
    with pytest.raises(InputError, match="prediction contains NaN"):
        synthesis_metrics(pred, ref, "unit")


def test_bad_shapes_and_convention():
    pred, ref = _brain_like(0)
    with pytest.raises(InputError, match="shape"):
        synthesis_metrics(pred[:-1], ref, "unit")
    with pytest.raises(InputError, match="convention"):
        synthesis_metrics(pred, ref, "other")
    with pytest.raises(InputError, match="at least 11 voxels"):
        synthesis_metrics(pred[:, :, :8], ref[:, :, :8], "unit")


# ------------------------------------------------------------------------------------ scales and backgrounds


@pytest.mark.parametrize("gain, offset", [(3.0, 0.0), (0.2, 50.0), (1.7, -400.0)])
def test_unit_convention_ignores_an_affine_intensity_change_of_the_prediction(gain, offset):
    """Each volume is scaled by its own percentiles (in the reference's region): a prediction equal to the
    reference up to a * x + b (a > 0), e.g. written on another intensity scale, is a perfect prediction."""
    _, ref = _brain_like(8)
    got = synthesis_metrics(gain * ref + offset, ref, "unit")
    assert got["psnr"] > 250 and got["nmse"] < 1e-25 and got["ssim"] == pytest.approx(1.0)  # exact up to rounding
    noisy, _ = _brain_like(8)
    base, shifted = synthesis_metrics(noisy, ref, "unit"), synthesis_metrics(gain * noisy + offset, ref, "unit")
    for key in base:
        assert shifted[key] == pytest.approx(base[key], rel=1e-9)


def _write_case(folder, case, volumes):
    import nibabel as nib

    folder.mkdir(parents=True, exist_ok=True)
    for modality, data in volumes.items():
        nib.save(nib.Nifti1Image(data.astype(np.float32), np.eye(4)), str(folder / f"{case}_{modality}.nii.gz"))


def _torso():
    """CT in HU (air -1000 around a body with enclosed lungs at -850) and PET in SUV (a cold region in the body)."""
    ct = np.full(SHAPE, -1000.0)
    ct[4:20, 4:24, 2:18] = 40.0
    ct[7:12, 8:20, 5:15] = -850.0  # lungs, inside the body
    pet = np.where(ct > -900, 1.0, 0.0)
    pet[ct == -850.0] = 0.3
    pet[14:18, 6:12, 4:10] = 0.1  # cold tissue
    pet[10:12, 20:23, 12:15] = 8.0  # a lesion
    return ct, pet


@pytest.mark.parametrize("modality", ["ct", "pet"])
def test_paper_convention_on_pet_ct_copies_only_outside_the_body(tmp_path, modality):
    """Low-HU and low-uptake voxels inside the body are scored; only the air outside it takes the reference."""
    from p2gmed.evaluation.synthesis import evaluate_synthesis

    ct, pet = _torso()
    _write_case(tmp_path / "ref", "c1", {"ct": ct, "pet": pet})
    ref = {"ct": ct, "pet": pet}[modality]
    inside_wrong = ref.copy()
    inside_wrong[(ct == -850.0) | (pet == 0.1)] = {"ct": 40.0, "pet": 1.0}[modality]  # lungs / cold tissue missed
    outside_wrong = ref.copy()
    outside_wrong[ct == -1000.0] = np.random.default_rng(0).normal(ref.min(), 1.0, int((ct == -1000.0).sum()))
    body = ct > -900  # the torso box, lungs included
    for name, pred in (("inside", inside_wrong), ("outside", outside_wrong)):
        _write_case(tmp_path / name, "c1", {modality: pred})
        got = evaluate_synthesis(tmp_path / name, tmp_path / "ref", "paper", allow_missing=True)[0]
        ref_z, pred_z = (ref - ref.mean()) / ref.std(), (pred - pred.mean()) / pred.std()
        out = np.where(body, pred_z, ref_z)  # written out by hand: the reference replaces the air only
        data_range = max(np.ptp(out), np.ptp(ref_z))
        assert got["nmse"] == pytest.approx(np.sum((out - ref_z) ** 2) / np.sum(ref_z**2), rel=1e-4), name
        assert got["psnr"] == pytest.approx(peak_signal_noise_ratio(ref_z, out, data_range=data_range), abs=1e-3)


def test_paper_convention_on_mri_keeps_the_release_threshold():
    from p2gmed.evaluation.synthesis import background_rule

    assert "-0.35" in background_rule("t1n") and "HU" in background_rule("ct") and "SUV" in background_rule("pet")
