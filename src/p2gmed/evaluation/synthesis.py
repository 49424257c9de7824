"""Image-synthesis metrics (PSNR, NMSE, 3D SSIM) of one predicted volume against its reference.

Two conventions, because published numbers are not comparable across them (docs/method.md, section 9):

``paper``
    What the authors' released test script (``test_test.py``) computes: the reference is z-scored over the
    whole volume (MONAI ``NormalizeIntensity``, population std, std 0 -> 1), the prediction is re-z-scored the
    same way, and the prediction's background is replaced by the reference. The background is modality-specific
    (``background_rule``): for MRI the release's rule, z-scored reference below -0.35; for CT and PET the air
    around the patient, i.e. outside the body that training and ``p2g predict`` use (CT > -500 HU with enclosed
    air filled, from the case's reference CT; SUV > 0.05 when the case has no CT). The release's -0.35 is a
    brain-MRI level: on a whole-body CT or PET it also swaps lungs, fat and cold tissue for the reference.
    SSIM is scikit-image's default (uniform 7-voxel window, sample covariance) and PSNR scikit-image's, both
    with ``data_range = max(range(pred), range(ref))``. The released code reports the plain MSE in z-score
    units; here ``nmse = sum((p - r)^2) / sum(r^2)`` on the same re-z-scored volumes (the MSE divided by the
    reference's mean energy, which is 1 for a z-scored volume: the two agree up to the background swap).

``unit``
    A community protocol (fastMRI NMSE, Wang et al. SSIM, BraSyn percentile scaling) on a scale each volume
    defines for itself: each volume is mapped to [0, 1] by its OWN 0.5 and 99.5 percentiles, both taken inside
    the reference's non-zero region, and clipped. A prediction that equals the reference up to an affine
    intensity change a x + b (a > 0) therefore scores perfectly: synthesized MRI has no absolute scale (``p2g
    predict`` writes it on the pooled scale of the given scans), so that scale must not enter the metric. PSNR
    with data range 1; ``nmse = sum((p - r)^2) / sum(r^2)``; SSIM with a Gaussian window (sigma 1.5, 11 taps),
    population covariance, data range 1, averaged over the valid (unpadded) region, which is what MONAI's
    ``SSIMMetric(spatial_dims=3, kernel_type="gaussian")`` computes.

Edge cases, in both conventions: identical volumes give PSNR = inf (as scikit-image and MONAI); a reference
with zero energy after scaling gives NMSE = NaN; a constant volume only shifts (scale 1); when both volumes are
constant the data range is taken as 1 so that SSIM stays defined (1 for identical constants). A NaN or inf in
the prediction is an error.
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
#: percentiles of each volume (inside the reference's non-zero region) mapped to 0 and 1 in the ``unit`` convention
UNIT_PERCENTILES = (0.5, 99.5)
#: the body rule of training and `p2g predict` (data.body_hu, and SUV > 0.05 for PET alone)
BODY_HU = -500.0
BODY_SUV = 0.05
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


def background_rule(modality: str) -> str:
    """One sentence: which voxels the ``paper`` convention takes from the reference, for `modality`."""
    from p2gmed.modalities import KIND, canonical

    kind = KIND.get(canonical(modality), "mri")
    if kind == "mri":
        return f"z-scored reference < {PAPER_BACKGROUND_Z} (the release's brain-MRI rule)"
    return (f"outside the body: reference CT <= {BODY_HU:g} HU with enclosed air filled "
            f"(SUV <= {BODY_SUV:g} without a CT)")


def convention_note(convention: Convention, modalities: list[str] | tuple[str, ...]) -> str:
    """The convention and, for ``paper``, each modality's background rule: the header of a synthesis table."""
    from p2gmed.modalities import DISPLAY, canonical

    if convention == "unit":
        return "unit convention: each volume scaled to [0, 1] by its own p0.5-p99.5, Gaussian SSIM"
    rules: dict[str, list[str]] = {}
    for m in modalities:
        rules.setdefault(background_rule(m), []).append(DISPLAY.get(canonical(m), m))
    shown = "; ".join(f"{', '.join(names)}: {rule}" for rule, names in rules.items())
    return f"paper convention: whole-volume z-scores, reference copied into the background ({shown})"


def body_background(case_refs: dict[str, np.ndarray]) -> np.ndarray:
    """(D, H, W) bool, True outside the patient, from a PET/CT case's reference volumes by modality.

    The `foreground: auto` rule of training and `p2g predict` (data/volumes.py: subject_foreground): the CT
    body (HU > -500, enclosed air filled), or SUV > 0.05 when the case has no CT.
    """
    from p2gmed.data.volumes import subject_foreground

    return ~subject_foreground(case_refs, BODY_HU)


def paper_prepare(
    pred: np.ndarray, ref: np.ndarray, background: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Re-z-score both volumes and copy the reference's background into the prediction (authors' test code).

    Args:
        pred: (D, H, W) prediction in any intensity scale.
        ref: (D, H, W) reference in any intensity scale.
        background: (D, H, W) bool, True where the reference replaces the prediction; default the release's
            MRI rule, z-scored reference below -0.35.

    Returns:
        (pred, ref), each (D, H, W) float64 in z-score units.
    """
    ref_z = zscore(ref)
    pred_z = zscore(pred)
    if background is None:
        background = ref_z < PAPER_BACKGROUND_Z
    elif background.shape != ref_z.shape:
        raise InputError(f"background mask shape {background.shape} differs from the volume's {ref_z.shape}")
    return np.where(background, ref_z, pred_z), ref_z


def _percentile_scale(volume: np.ndarray, region: np.ndarray) -> np.ndarray:
    low, high = np.percentile(volume[region], UNIT_PERCENTILES)
    scale = high - low if high > low else 1.0
    return np.clip((volume - low) / scale, 0.0, 1.0)


def unit_prepare(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale each volume to [0, 1] by its own [p0.5, p99.5] inside the reference's non-zero region; clip.

    The region is the reference's (an all-zero reference: the whole volume), so a prediction a * ref + b with
    a > 0 maps exactly onto the scaled reference. A constant volume only shifts (scale 1).

    Args:
        pred: (D, H, W) prediction, on any intensity scale.
        ref: (D, H, W) reference.

    Returns:
        (pred, ref), each (D, H, W) float64 in [0, 1].
    """
    ref = np.asarray(ref, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    region = ref != 0
    if not region.any():
        region = np.ones_like(region)
    return _percentile_scale(pred, region), _percentile_scale(ref, region)


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


def synthesis_metrics(
    pred: np.ndarray, ref: np.ndarray, convention: Convention = "unit", background: np.ndarray | None = None
) -> dict[str, float]:
    """PSNR, NMSE and SSIM of one synthesized volume.

    Args:
        pred: (D, H, W) predicted volume, on any intensity scale (both conventions rescale it by itself).
        ref: (D, H, W) reference volume.
        convention: ``"paper"`` (authors' test script) or ``"unit"`` (each volume percentile-scaled to [0, 1],
            Wang SSIM).
        background: ``paper`` only: (D, H, W) bool, True where the reference replaces the prediction
            (`body_background` for CT/PET); default the MRI rule z < -0.35.

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
        pred_c, ref_c = paper_prepare(pred, ref, background)
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
    from p2gmed.modalities import KIND

    rows = []
    backgrounds: dict[str, np.ndarray] = {}
    for case, modality in sorted(set().union(*pairs.values())):
        ref_path = refs[case].images[modality]
        ref = load_volume(ref_path)
        background = None
        if convention == "paper" and KIND[modality] != "mri":  # PET/CT: the air around the patient
            if case not in backgrounds:
                case_refs = {m: load_volume(p)[0] for m, p in refs[case].images.items() if KIND[m] != "mri"}
                same_grid = {m: v for m, v in case_refs.items() if v.shape == ref[0].shape}
                backgrounds[case] = body_background(same_grid)
            background = backgrounds[case]
        for source, preds in by_source.items():
            if (case, modality) not in pairs[source]:
                continue
            pred_path = preds[case].images[modality]
            pred = load_volume(pred_path)
            check_same_grid(pred_path, pred, ref_path, ref)
            metrics = synthesis_metrics(pred[0], ref[0], convention, background)
            row = {"case": case, "modality": modality, **metrics}
            if source is not None:
                row["source"] = source
            rows.append(row)
    return rows
