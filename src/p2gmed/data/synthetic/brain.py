"""Simulated BraTS-like brain MRI (T1, T1ce, T2, FLAIR) with a glioma, from real MNI152 tissue maps.

This is a simulation for tests and demos, not data of real patients. Recipe (offline-data-sources.md §3.2, §6):

Anatomy
    The ICBM152 2009 grey-matter and white-matter probability maps and the T1 template shipped inside the
    nilearn wheel (1 mm, read from the package's own files: nothing is downloaded). Brain mask = T1 / max > 0.2
    with holes filled (nilearn's `load_mni152_brain_mask` rule); CSF = clip(mask - GM - WM, 0, 1).
Individual
    Each individual gets its own size (scale 0.9-1.1 per axis), pose (rotation up to 8 deg about x/y,
    10 deg about z; shift up to 6 mm) and smooth random deformation (three fields, std 3 mm, ~5 nodes per
    axis), applied by resampling the 1 mm maps (linear) onto the output grid.
Tumour
    One glioma centred in white matter (WM fraction > 0.6) at least ~ the enhancing radius inside the brain.
    Nested compartments from an anisotropic, randomly rotated distance map perturbed by smooth noise:
    necrosis NCR (radius 3-10 mm) inside an enhancing rim ET (4-8 mm thick; the necrosis follows the core's
    perturbed outline, so the rim is never erased) inside edema ED (10-20 mm beyond);
    edema reaches further along white matter (its radius scales with the local WM share) and is restricted
    to brain tissue (GM + WM > 0.3). Labels: NCR = 1, ED = 2, ET = 3 (BraTS 2023).
Signal
    Partial-volume mixing S = sum_k p_k s_k over GM, WM, CSF, NCR, ED, ET with per-individual jitter (+-10 %)
    of PD, T1, T2 (ms, ~3 T values of `TISSUES`). Spin echo s = PD (1 - e^(-TR/T1)) e^(-TE/T2) for T1w
    (TR 500, TE 10) and T2w (TR 4500, TE 95); inversion recovery s = PD |1 - 2e^(-TI/T1) + e^(-TR/T1)|
    e^(-TE/T2) for FLAIR (TR 9000, TE 120, TI = T1_csf ln(2 / (1 + e^(-TR/T1_csf))) = 2446 ms, nulling
    nominal CSF). T1ce: gadolinium
    shortens T1 in ET, 1/T1' = 1/T1 + r1 C (r1 = 4 /s/mM, C = 0.3-0.8 mM). Sequence timings jitter +-5 %.
Scanner
    Smooth multiplicative bias field exp(0.1 g) (shared by the session, plus a small per-scan part), Rician
    noise (sigma 1.5-3 % of the brain's 99th percentile), a per-scan intensity scale (200-2000) and zero
    background (skull-stripped, as BraTS distributes it).

Default grid: 3 mm isotropic over a 192 x 228 x 192 mm field of view, i.e. 64 x 76 x 64 voxels, RAS affine.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
from scipy import ndimage

from p2gmed.data.synthetic.fields import (
    grid_coords,
    grid_shape,
    individual_rng,
    rician,
    rotation_matrix,
    smooth_field,
    soft_step,
)
from p2gmed.errors import InputError

DEFAULT_SPACING = 3.0
FIELD_OF_VIEW_MM = (192.0, 228.0, 192.0)
MODALITIES = ("t1n", "t1c", "t2w", "t2f")

#: class -> (PD relative, T1 ms, T2 ms), about 3 T
TISSUES = {
    "gm": (0.80, 1600.0, 100.0),
    "wm": (0.70, 900.0, 75.0),
    "csf": (1.00, 4200.0, 2000.0),
    "ncr": (0.95, 2800.0, 300.0),
    "ed": (0.90, 1700.0, 180.0),
    "et": (0.85, 1400.0, 120.0),
}
_FLAIR_TR = 9000.0
#: inversion time nulling nominal CSF: 1 - 2 e^(-TI/T1) + e^(-TR/T1) = 0
FLAIR_TI = TISSUES["csf"][1] * float(np.log(2.0 / (1.0 + np.exp(-_FLAIR_TR / TISSUES["csf"][1]))))
#: sequence -> (TR, TE, TI) in ms; TI None for spin echo
SEQUENCES = {"t1n": (500.0, 10.0, None), "t2w": (4500.0, 95.0, None), "t2f": (_FLAIR_TR, 120.0, FLAIR_TI)}
GADOLINIUM_R1 = 4.0e-3  # relaxivity per ms per mM

_NILEARN_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}


@functools.lru_cache(maxsize=2)
def mni_tissue_maps(block: int = 2) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The MNI152 GM, WM, CSF fractions and brain mask, read from the nilearn wheel's files.

    The files are located without importing nilearn (whose import takes seconds); they are the very files
    `nilearn.datasets.load_mni152_{gm,wm}_template` read. The 1 mm maps are averaged over blocks of
    `block`^3 voxels (2 -> 2 mm) so that a 3 mm individual is made in a fraction of a second.

    Returns:
        maps: {"gm", "wm", "csf", "mask"} -> float32 (about 197/block, 233/block, 189/block) in [0, 1].
        affine: (4, 4) voxel -> MNI mm of the block-averaged grid.
    """
    import nibabel as nib

    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the built-in brain data needs the package 'nilearn' (pip install nilearn)")
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    data, affine = {}, None
    for key, name in _NILEARN_FILES.items():
        path = folder / name
        if not path.is_file():
            raise InputError(f"the MNI152 template file {path} is missing from the nilearn installation")
        img = nib.load(path)
        affine = img.affine
        volume = np.asarray(img.dataobj, dtype=np.float32)
        for axis in range(3):  # block mean, one axis at a time (strided sums are fast)
            n = volume.shape[axis] - volume.shape[axis] % block
            parts = [volume[(slice(None),) * axis + (slice(i, n, block),)] for i in range(block)]
            volume = sum(parts) / block
        data[key] = volume / max(float(volume.max()), 1e-6)
    block_affine = affine @ np.diag([block, block, block, 1.0])
    block_affine[:3, 3] = affine[:3, :3] @ np.full(3, (block - 1) / 2.0) + affine[:3, 3]
    mask = ndimage.binary_fill_holes(data["t1"] > 0.2).astype(np.float32)
    gm, wm = data["gm"] * mask, data["wm"] * mask
    csf = np.clip(mask - gm - wm, 0.0, 1.0)
    return {"gm": gm, "wm": wm, "csf": csf, "mask": mask}, block_affine


def _warp_anatomy(rng: np.random.Generator, coords: np.ndarray, spacing: float) -> dict[str, np.ndarray]:
    """Resample the MNI maps onto the output grid through the individual's size, pose and deformation.

    Args:
        coords: (3, D, H, W) output-grid world coordinates (mm, centred on 0).

    Returns:
        {"gm", "wm", "csf", "mask"} -> float32 (D, H, W).
    """
    maps, affine = mni_tissue_maps(2 if spacing >= 2.0 else 1)
    nz = np.argwhere(maps["mask"] > 0.5)
    centre_vox = (nz.min(0) + nz.max(0)) / 2.0
    centre_mm = affine[:3, :3] @ centre_vox + affine[:3, 3]

    scale = rng.uniform(0.9, 1.1, 3)
    angles = np.deg2rad(rng.uniform(-1, 1, 3) * np.array([8.0, 8.0, 10.0]))
    shift = rng.uniform(-6.0, 6.0, 3)
    shape = coords.shape[1:]
    displacement = np.stack([3.0 * smooth_field(rng, shape, nodes=5) for _ in range(3)])

    # output point x -> template point: undo pose and size, then deform
    rot = rotation_matrix(tuple(angles)).astype(np.float32)
    local = np.einsum("ij,j...->i...", rot.T, coords - shift.reshape(3, 1, 1, 1).astype(np.float32))
    template_mm = local / scale.reshape(3, 1, 1, 1).astype(np.float32) + displacement
    template_mm += centre_mm.reshape(3, 1, 1, 1).astype(np.float32)
    inv = np.linalg.inv(affine)
    vox = np.einsum("ij,j...->i...", inv[:3, :3].astype(np.float32), template_mm)
    vox += inv[:3, 3].reshape(3, 1, 1, 1).astype(np.float32)
    out = {k: ndimage.map_coordinates(maps[k], vox, order=1, mode="constant", cval=0.0) for k in ("gm", "wm", "mask")}
    out["csf"] = np.clip(out["mask"] - out["gm"] - out["wm"], 0.0, 1.0)
    return out


def _tumour(
    rng: np.random.Generator, anatomy: dict[str, np.ndarray], coords: np.ndarray, spacing: float
) -> dict[str, np.ndarray]:
    """Soft fractions of the nested tumour compartments, shape (D, H, W) each: "ncr", "et", "ed"."""
    shape = coords.shape[1:]
    r_ncr = rng.uniform(3.0, 10.0)
    r_et = r_ncr + rng.uniform(4.0, 8.0)
    r_ed = r_et + rng.uniform(10.0, 20.0)

    mask = anatomy["mask"] > 0.5
    depth_mm = ndimage.distance_transform_edt(mask) * spacing
    candidates = np.argwhere((anatomy["wm"] > 0.6) & (depth_mm > r_et + 4.0))
    if len(candidates) == 0:  # tiny grids: fall back to the deepest brain voxel
        candidates = np.argwhere(depth_mm >= depth_mm.max() - spacing)
    centre = coords[(slice(None), *candidates[rng.integers(len(candidates))])]

    axes = rng.uniform(0.75, 1.3, 3)
    rot = rotation_matrix(tuple(rng.uniform(-np.pi, np.pi, 3))).astype(np.float32)
    local = np.einsum("ij,j...->i...", rot.T, coords - centre.reshape(3, 1, 1, 1))
    distance = np.sqrt(sum((local[i] / axes[i]) ** 2 for i in range(3)))
    # the necrosis follows the core's outline scaled down (one shared field), so the enhancing rim keeps a
    # thickness of (r_et - r_ncr) x the local scale everywhere; independent fields let the necrosis reach past
    # the core and erase the rim (measured: ET 0-83 voxels in 8 of 20 brains)
    core_field = smooth_field(rng, shape, nodes=9)
    rim_irregularity = smooth_field(rng, shape, nodes=9)
    core_d = distance + 0.35 * r_et * core_field
    ncr_d = distance + 0.35 * r_ncr * core_field + 0.1 * (r_et - r_ncr) * rim_irregularity
    edema_d = distance + 0.3 * r_ed * smooth_field(rng, shape, nodes=7)

    width = 0.5 * spacing
    brain = soft_step(anatomy["mask"] - 0.5, 0.1)
    tissue = soft_step(anatomy["gm"] + anatomy["wm"] - 0.3, 0.05)
    wm_share = anatomy["wm"] / np.maximum(anatomy["gm"] + anatomy["wm"], 1e-3)
    reach = r_et + (r_ed - r_et) * (0.5 + 0.7 * wm_share)  # edema spreads along white matter

    core = soft_step(r_et - core_d, width) * brain
    ncr = np.minimum(soft_step(r_ncr - ncr_d, width), core)
    whole = np.maximum(core, soft_step(reach - edema_d, width) * tissue * brain)
    return {"ncr": ncr, "et": core - ncr, "ed": whole - core}


def _signal(fractions: dict[str, np.ndarray], params: dict[str, tuple[float, float, float]], seq) -> np.ndarray:
    """Partial-volume mixture of pure-tissue signals for one sequence (TR, TE, TI); (D, H, W) float32."""
    tr, te, ti = seq
    out = np.zeros(next(iter(fractions.values())).shape, np.float32)
    for name, frac in fractions.items():
        pd, t1, t2 = params[name]
        if ti is None:
            s = pd * (1.0 - np.exp(-tr / t1)) * np.exp(-te / t2)
        else:
            s = pd * abs(1.0 - 2.0 * np.exp(-ti / t1) + np.exp(-tr / t1)) * np.exp(-te / t2)
        out += np.float32(s) * frac
    return out


def generate_brain(seed: int, spacing: float | None = None, *, with_tissues: bool = False) -> dict:
    """Simulate one individual's skull-stripped T1, T1ce, T2, FLAIR and tumour labels.

    Args:
        seed: the individual; the same seed gives identical arrays.
        spacing: isotropic voxel size in mm (default 3 mm: 64 x 76 x 64 voxels).
        with_tissues: also return "tissues": the healthy-tissue fractions {"gm", "wm", "csf"} (D, H, W)
            that were mixed (for tests and signal checks).

    Returns:
        {"t1n", "t1c", "t2w", "t2f"}: float32 (D, H, W) non-negative, 0 outside the brain;
        "label": uint8 (D, H, W) with 0 background, 1 NCR, 2 ED, 3 ET; "affine": (4, 4) RAS float64.
    """
    spacing = float(spacing or DEFAULT_SPACING)
    if not 0.5 <= spacing <= 12.0:
        raise InputError(f"--spacing {spacing} mm is outside the supported range 0.5-12 mm")
    rng = individual_rng(seed, 1)
    coords, affine = grid_coords(grid_shape(FIELD_OF_VIEW_MM, spacing), spacing)
    shape = coords.shape[1:]

    anatomy = _warp_anatomy(rng, coords, spacing)
    tumour = _tumour(rng, anatomy, coords, spacing)
    healthy = 1.0 - (tumour["ncr"] + tumour["et"] + tumour["ed"])
    fractions = {k: anatomy[k] * healthy for k in ("gm", "wm", "csf")} | tumour

    params = {k: tuple(v * rng.uniform(0.9, 1.1) for v in vals) for k, vals in TISSUES.items()}
    concentration = rng.uniform(0.3, 0.8)
    pd, t1, t2 = params["et"]
    gd_params = params | {"et": (pd, 1.0 / (1.0 / t1 + GADOLINIUM_R1 * concentration), t2)}
    sequences = {k: tuple(None if v is None else v * rng.uniform(0.95, 1.05) for v in seq)
                 for k, seq in SEQUENCES.items()}

    brain = anatomy["mask"] > 0.5
    session_bias = smooth_field(rng, shape, nodes=3)
    images = {}
    for modality in MODALITIES:
        seq = sequences["t1n" if modality == "t1c" else modality]
        clean = _signal(fractions, gd_params if modality == "t1c" else params, seq)
        bias = np.exp(0.1 * session_bias + 0.03 * smooth_field(rng, shape, nodes=3))
        clean = clean * bias
        sigma = rng.uniform(0.015, 0.03) * float(np.percentile(clean[brain], 99))
        noisy = rician(rng, clean, sigma) * np.float32(rng.uniform(200.0, 2000.0))
        images[modality] = np.where(brain, noisy, 0.0).astype(np.float32)

    label = np.zeros(shape, np.uint8)
    whole = (tumour["ncr"] + tumour["et"] + tumour["ed"]) > 0.5
    core = (tumour["ncr"] + tumour["et"]) > 0.5
    label[whole] = 2
    label[core] = 3
    label[core & (tumour["ncr"] > 0.5 * (tumour["ncr"] + tumour["et"]))] = 1
    label[~brain] = 0
    out = images | {"label": label, "affine": affine}
    if with_tissues:
        out["tissues"] = {k: fractions[k] for k in ("gm", "wm", "csf")}
    return out
