"""Image-synthesis metrics (PSNR, NMSE, 3D SSIM) of one predicted volume against its reference.

Two conventions, because published numbers are not comparable across them:

``paper``
    What the authors' released test script (``test_test.py``) computes: the reference is z-scored over the
    whole volume (MONAI ``NormalizeIntensity``, population std, std 0 -> 1), the prediction is re-z-scored the
    same way, and the prediction's background (z-scored reference below -0.35) is replaced by the reference.
    SSIM is scikit-image's default (uniform 7-voxel window, sample covariance) and PSNR scikit-image's, both
    with ``data_range = max(range(pred), range(ref))``. The released code reports the plain MSE in z-score
    units; here ``nmse = sum((p - r)^2) / sum(r^2)`` on the same re-z-scored volumes (the MSE divided by the
    reference's mean energy, which is 1 for a z-scored volume: the two agree up to the background swap).

``unit``
    A community protocol (fastMRI NMSE, Wang et al. SSIM, BraSyn percentile scaling): both volumes are scaled
    to [0, 1] by the reference's 0.5 and 99.5 percentiles inside its non-zero region and clipped; PSNR with
    data range 1; ``nmse = sum((p - r)^2) / sum(r^2)``; SSIM with a Gaussian window (sigma 1.5, 11 taps),
    population covariance, data range 1, averaged over the valid (unpadded) region, which is what MONAI's
    ``SSIMMetric(spatial_dims=3, kernel_type="gaussian")`` computes.

Edge cases, in both conventions: identical volumes give PSNR = inf (as scikit-image and MONAI); a reference
with zero energy after scaling gives NMSE = NaN; when both volumes are constant the data range is taken as 1 so
that SSIM stays defined (1 for identical constants). A NaN or inf in the prediction is an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from p2gmed.errors import InputError

Convention = Literal["paper", "unit"]
CONVENTIONS = ("paper", "unit")

#: background threshold on the z-scored reference in the authors' test script (``mask = gt.ge(-0.35)``)
PAPER_BACKGROUND_Z = -0.35
#: percentiles of the reference (inside its non-zero region) mapped to 0 and 1 in the ``unit`` convention
UNIT_PERCENTILES = (0.5, 99.5)
#: Wang et al. (2004) SSIM settings of the ``unit`` convention
UNIT_SSIM_SIGMA = 1.5
UNIT_SSIM_WINDOW = 11


def zscore(volume: np.ndarray) -> np.ndarray:
    """Whole-volume z-score as MONAI ``NormalizeIntensity(nonzero=False)``: population std, std 0 -> 1.

    Args:
        volume: (D, H, W) array.

    Returns:
        (D, H, W) float64 array.
    """
    volume = np.asarray(volume, dtype=np.float64)
    std = volume.std()
    return (volume - volume.mean()) / (std if std > 0 else 1.0)


def paper_prepare(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Re-z-score both volumes and copy the reference's background into the prediction (authors' test code).

    Args:
        pred: (D, H, W) prediction in any intensity scale.
        ref: (D, H, W) reference in any intensity scale.

    Returns:
        (pred, ref), each (D, H, W) float64 in z-score units.
    """
    ref_z = zscore(ref)
    pred_z = zscore(pred)
    foreground = ref_z >= PAPER_BACKGROUND_Z
    return np.where(foreground, pred_z, ref_z), ref_z


def unit_prepare(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale both volumes to [0, 1] by the reference's [p0.5, p99.5] inside its non-zero region, then clip.

    An all-zero reference uses the whole volume; a constant one (p0.5 == p99.5) only shifts (scale 1).

    Args:
        pred: (D, H, W) prediction in the reference's intensity scale.
        ref: (D, H, W) reference.

    Returns:
        (pred, ref), each (D, H, W) float64 in [0, 1].
    """
    ref = np.asarray(ref, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    region = ref[ref != 0]
    if region.size == 0:
        region = ref.ravel()
    low, high = np.percentile(region, UNIT_PERCENTILES)
    scale = high - low if high > low else 1.0
    return np.clip((pred - low) / scale, 0.0, 1.0), np.clip((ref - low) / scale, 0.0, 1.0)


def psnr(pred: np.ndarray, ref: np.ndarray, data_range: float) -> float:
    """Peak signal-to-noise ratio 10 log10(R^2 / MSE) in dB; inf for identical volumes."""
    mse = float(np.mean((pred - ref) ** 2))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(data_range**2 / mse))


def nmse(pred: np.ndarray, ref: np.ndarray) -> float:
    """Normalised MSE sum((p - r)^2) / sum(r^2) (fastMRI); NaN when the reference has no energy."""
    energy = float(np.sum(ref**2))
    if energy == 0.0:
        return float("nan")
    return float(np.sum((pred - ref) ** 2) / energy)


def ssim(pred: np.ndarray, ref: np.ndarray, data_range: float, gaussian: bool) -> float:
    """3D SSIM by scikit-image: Wang settings (``gaussian=True``) or scikit-image defaults (uniform 7-window).

    Args:
        pred: (D, H, W) array; every axis at least the window size (11 resp. 7).
        ref: (D, H, W) array.
        data_range: R in C1 = (0.01 R)^2, C2 = (0.03 R)^2.
        gaussian: Gaussian window sigma 1.5, 11 taps, population covariance; else the authors' settings.
    """
    from skimage.metrics import structural_similarity

    window = UNIT_SSIM_WINDOW if gaussian else 7
    if min(ref.shape) < window:
        raise InputError(f"SSIM needs at least {window} voxels on every axis, the volume has shape {ref.shape}")
    if gaussian:
        return float(
            structural_similarity(
                ref, pred, data_range=data_range, gaussian_weights=True, sigma=UNIT_SSIM_SIGMA,
                use_sample_covariance=False,
            )
        )
    return float(structural_similarity(ref, pred, data_range=data_range))


def synthesis_metrics(pred: np.ndarray, ref: np.ndarray, convention: Convention = "unit") -> dict[str, float]:
    """PSNR, NMSE and SSIM of one synthesized volume.

    Args:
        pred: (D, H, W) predicted volume (its own intensity scale for ``paper``, the reference's for ``unit``).
        ref: (D, H, W) reference volume.
        convention: ``"paper"`` (authors' test script) or ``"unit"`` (percentile-scaled [0, 1], Wang SSIM).

    Returns:
        {"psnr": dB, "nmse": ratio, "ssim": index}.

    Raises:
        InputError: unknown convention, shape mismatch, non-3D input, or NaN/inf values.
    """
    if convention not in CONVENTIONS:
        raise InputError(f"unknown synthesis convention '{convention}'; use one of {', '.join(CONVENTIONS)}")
    pred = np.asarray(pred)
    ref = np.asarray(ref)
    if pred.shape != ref.shape or pred.ndim != 3:
        raise InputError(f"prediction shape {pred.shape} and reference shape {ref.shape} must be equal and 3D")
    if not np.isfinite(pred).all():
        raise InputError("the prediction contains NaN or infinite values")
    if not np.isfinite(ref).all():
        raise InputError("the reference contains NaN or infinite values")
    if convention == "paper":
        pred_c, ref_c = paper_prepare(pred, ref)
        data_range = max(np.ptp(pred_c), np.ptp(ref_c))
        data_range = float(data_range) if data_range > 0 else 1.0
        return {
            "psnr": psnr(pred_c, ref_c, data_range),
            "nmse": nmse(pred_c, ref_c),
            "ssim": ssim(pred_c, ref_c, data_range, gaussian=False),
        }
    pred_c, ref_c = unit_prepare(pred, ref)
    return {"psnr": psnr(pred_c, ref_c, 1.0), "nmse": nmse(pred_c, ref_c), "ssim": ssim(pred_c, ref_c, 1.0, True)}


def evaluate_synthesis(
    pred_dir: str | Path, ref_dir: str | Path, convention: Convention = "unit", allow_missing: bool = False
) -> list[dict]:
    """Metrics of every predicted modality of every case (and source subset) against its reference.

    Args:
        pred_dir: flat folder of ``<case>_<modality>.nii.gz`` or a folder of ``from-<mod>[+<mod>]`` subfolders.
        ref_dir: flat folder in the same naming or a data set in any supported layout.
        convention: "paper" or "unit" (see the module docstring).
        allow_missing: evaluate only the matched case/modality pairs instead of failing on unmatched ones.

    Returns:
        one dict per (case, modality[, source]): case, modality, psnr, nmse, ssim (+ source).

    Raises:
        InputError / DataError: unmatched files (unless allowed), unreadable or NaN volumes, grid mismatch.
    """
    from p2gmed.evaluation.matching import (
        check_same_grid,
        load_volume,
        pair_keys,
        scan_predictions,
        scan_reference,
    )

    if convention not in CONVENTIONS:
        raise InputError(f"unknown synthesis convention '{convention}'; use one of {', '.join(CONVENTIONS)}")
    by_source = scan_predictions(pred_dir)
    refs = scan_reference(ref_dir)
    ref_keys = {(c, m) for c, files in refs.items() for m in files.images}
    pairs = {}
    for source, preds in by_source.items():
        pred_keys = {(c, m) for c, files in preds.items() for m in files.images}
        where = f"predicted images in {Path(pred_dir) / source if source else pred_dir}"
        pairs[source] = set(pair_keys(pred_keys, ref_keys, where, allow_missing))
    rows = []
    for case, modality in sorted(set().union(*pairs.values())):
        ref_path = refs[case].images[modality]
        ref = load_volume(ref_path)
        for source, preds in by_source.items():
            if (case, modality) not in pairs[source]:
                continue
            pred_path = preds[case].images[modality]
            pred = load_volume(pred_path)
            check_same_grid(pred_path, pred, ref_path, ref)
            row = {"case": case, "modality": modality, **synthesis_metrics(pred[0], ref[0], convention)}
            if source is not None:
                row["source"] = source
            rows.append(row)
    return rows
