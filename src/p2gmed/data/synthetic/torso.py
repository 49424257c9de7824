"""Simulated whole-body FDG PET/CT (AutoPET-like) and non-attenuation-corrected PET, from a procedural torso.

This is a simulation for tests and demos, not data of real patients. Every length below is in mm in "body
coordinates" (x to the patient's left, y anterior, z up from the pelvic floor), scaled per individual.

Anatomy (per individual: width scale 0.85-1.15, height scale 0.92-1.08, organ centres +-8 mm, organ radii
x 0.85-1.15, subcutaneous fat 10-30 mm)
    Body outline: elliptic trunk (semi-axes 150 x 105) from the thighs to the shoulders (z 610), two
    thighs (radius 75), neck (radius 55), head (ellipsoid 78 x 98 x 110 at z 790) with scalp, skull (7 mm)
    and brain. Organs as ellipsoids: bladder (z 70), kidneys (+-75, z 260), liver (right, z 350), spleen
    (left, z 350), lungs (+-80, z 480, 62 x 72 x 115), heart (z 440; myocardial shell 12 mm + blood pool).
    Bowel (z 190, 105 x 60 x 85): 30 HU with gas pockets (-700 HU) and patchy uptake 1.3 +- 0.5 SUV.
    Bones: vertebral column (bodies 18 mm radius with discs every 28 mm, posterior elements), ribs every
    24 mm from z 400 to 600, pelvic ring, femoral heads and shafts, skull.
Study (per study of an individual: pose, uptake, lesions, noise)
    Rotation up to 4 deg about z and 2 deg about x/y, shift +-10 mm in-plane. The field of view (default
    72 x 56 x 96 voxels of 5 mm = 360 x 280 x 480 mm) covers the upper thighs to the shoulders, or, for
    about a third of the studies, the abdomen to the top of the head (so the brain is in view).
    Lesions: none in 30 % of studies (negative cases, as in AutoPET), otherwise 1-4 irregular blobs of
    radius 8-20 mm (distance map perturbed by smooth noise) in lung, liver, lymph-node stations (mediastinal,
    hilar, para-aortic, axillary, inguinal, cervical) or vertebrae, SUV 4-15.
CT (HU)
    air -1000, lung -850 +- 30, fat -100, soft tissue / muscle 40, liver 60, spleen 45, kidney 35, urine 10,
    blood/heart 40, brain 35, cancellous bone 400, cortical bone / ribs / pelvis 700-900, skull 1200,
    lesion 35; partial volume from a soft (one-voxel) boundary of each structure; Gaussian blur sigma
    0.5 voxel and noise 10 HU.
PET (SUV)
    muscle/soft tissue 0.8, fat 0.35, lung 0.4, blood pool 1.6, myocardium 1.5-12, liver 2-3, spleen 1.5-2.5,
    kidneys 4-10, bladder 5-30, brain 6-10, marrow 1.2, cortical bone 0.5, lesions 4-15; Gaussian PSF with
    FWHM 6-8 mm; noise with std 0.15 sqrt(SUV), spatially correlated (0.7 voxel), clipped at 0.
NAC PET (approximation, documented)
    Linear attenuation at 511 keV from HU, bilinear: mu = 0.096 (1 + HU/1000) /cm for HU <= 0 and
    0.096 + 0.076 HU/1000 /cm above (bone 1000 HU -> 0.172). Instead of projecting along every line of
    response, a voxel's attenuation factor is exp(-mu_eff depth), depth = distance to the body surface
    (Euclidean distance transform), mu_eff = the mu map averaged over a 25 mm Gaussian neighbourhood inside
    the body (so lungs attenuate less). NAC = activity x factor (blurred as the PET), then its own noise:
    the surface and lungs look hot, the body centre dark, as in real NAC images.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from p2gmed.data.synthetic.fields import (
    blur_mm,
    ellipsoid_distance,
    grid_coords,
    grid_shape,
    individual_rng,
    rotation_matrix,
    smooth_field,
    soft_step,
)
from p2gmed.errors import InputError

DEFAULT_SPACING = 5.0
FIELD_OF_VIEW_MM = (360.0, 280.0, 480.0)
MU_WATER_PER_CM = 0.096
MU_BONE_SLOPE = 0.076 / 1000.0
LYMPH_NODE_STATIONS = [(0, 10, 460), (-40, 0, 480), (40, 0, 480), (-25, -45, 250), (25, -45, 250),
                       (-120, -10, 560), (120, -10, 560), (-80, 60, 20), (80, 60, 20), (-35, 0, 640), (35, 0, 640)]


def _ellipse2d(x: np.ndarray, y: np.ndarray, cx: float, cy: float, a: float, b: float) -> np.ndarray:
    """Approximate signed in-plane distance (mm, positive inside) to an ellipse, (D, H, W)."""
    return (1.0 - np.sqrt(((x - cx) / a) ** 2 + ((y - cy) / b) ** 2)) * min(a, b)


def _slab(z: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Signed distance to the slab lo <= z <= hi (positive inside)."""
    return np.minimum(z - lo, hi - z)


class _Painter:
    """Paints CT (HU) and SUV maps structure by structure; later structures cover earlier ones."""

    def __init__(self, shape: tuple[int, ...], width_mm: float, track: bool = False):
        self.ct = np.full(shape, -1000.0, np.float32)
        self.suv = np.zeros(shape, np.float32)
        self.width = width_mm
        self.visible: dict[str, np.ndarray] | None = {} if track else None

    def paint(
        self, distance: np.ndarray, hu: float, suv: float, within: np.ndarray | None = None, name: str = ""
    ) -> np.ndarray:
        """Cover the maps with one structure; returns its fraction (D, H, W). With tracking, `visible[name]`
        keeps the fraction of each named structure that later structures have not covered."""
        frac = soft_step(distance, self.width)
        if within is not None:
            frac = frac * within
        self.ct += frac * (np.float32(hu) - self.ct)
        self.suv += frac * (np.float32(suv) - self.suv)
        if self.visible is not None:
            for key in self.visible:
                self.visible[key] *= 1.0 - frac
            if name:
                self.visible[name] = np.maximum(self.visible.get(name, 0.0), frac)
        return frac


def _anatomy(rng: np.random.Generator) -> dict:
    """Per-individual sizes and organ placements (body coordinates, mm)."""
    w, h = rng.uniform(0.85, 1.15), rng.uniform(0.92, 1.08)

    def organ(cx, cy, cz, rx, ry, rz):
        centre = np.array([cx * w, cy * w, cz * h]) + rng.uniform(-8, 8, 3)
        radii = np.array([rx * w, ry * w, rz * h]) * rng.uniform(0.85, 1.15, 3)
        return centre, radii

    return {
        "w": w, "h": h, "fat": rng.uniform(10.0, 30.0),
        "bladder": organ(0, 35, 70, 38, 32, 32),
        "kidney_r": organ(-75, -35, 260, 28, 25, 55), "kidney_l": organ(75, -35, 260, 28, 25, 55),
        "liver": organ(-65, 10, 350, 90, 75, 70), "spleen": organ(85, -35, 350, 35, 30, 50),
        "lung_r": organ(-80, -5, 480, 62, 72, 115), "lung_l": organ(80, -5, 480, 62, 72, 115),
        "heart": organ(25, 25, 440, 55, 45, 55),
        "lung_hu": rng.uniform(-880.0, -820.0),
    }


def _paint_body(p: _Painter, c: np.ndarray, a: dict, uptake: dict) -> np.ndarray:
    """Paint outline, fat, organs and bones on the grid; returns the body's signed distance (D, H, W)."""
    x, y, z = c
    w, h = a["w"], a["h"]
    trunk = np.minimum(_ellipse2d(x, y, 0, 0, 150 * w, 105 * w), _slab(z, -20, 610 * h))
    thighs = np.maximum(*[np.minimum(_ellipse2d(x, y, s * 85 * w, 0, 75 * w, 75 * w), 10 - z) for s in (-1, 1)])
    neck = np.minimum(_ellipse2d(x, y, 0, -10, 55, 55), _slab(z, 590 * h, 720 * h))
    head_centre, head_radii = np.array([0, 10, 790 * h]), np.array([78, 98, 110]) * h
    head = ellipsoid_distance(c, head_centre, head_radii)
    body = np.maximum.reduce([trunk, thighs, neck, head])

    p.paint(body, 40.0, 0.8)
    p.paint(a["fat"] - (body - a["fat"]).clip(-1e3, a["fat"]), -100.0, 0.35,
            within=soft_step(np.minimum(trunk, body), p.width) * (1 - soft_step(head, p.width)))
    p.paint(body - a["fat"], 40.0, 0.8)  # muscle under the fat layer

    ed = {k: ellipsoid_distance(c, *a[k]) for k in ("bladder", "kidney_r", "kidney_l", "liver", "spleen",
                                                    "lung_r", "lung_l", "heart")}
    # bowel: patchy uptake and gas pockets in the abdomen below the liver
    bowel = ellipsoid_distance(c, np.array([0, 20 * w, 190 * h]), np.array([105 * w, 60 * w, 85 * h]))
    pattern = uptake["bowel_pattern"]
    p.paint(bowel, 30.0, 0.0, within=None)
    p.suv += soft_step(bowel, p.width) * (1.3 + 0.5 * pattern)
    p.paint(np.minimum(bowel, 8.0 * (pattern - 1.4)), -700.0, 0.2)
    p.paint(ed["bladder"], 10.0, uptake["bladder"])
    p.paint(ed["kidney_r"], 35.0, uptake["kidney"])
    p.paint(ed["kidney_l"], 35.0, uptake["kidney"])
    p.paint(ed["liver"], 60.0, uptake["liver"], name="liver")
    p.paint(ed["spleen"], 45.0, uptake["spleen"])
    p.paint(ed["lung_r"], a["lung_hu"], 0.4, name="lung")
    p.paint(ed["lung_l"], a["lung_hu"], 0.4, name="lung")
    p.paint(ed["heart"], 40.0, uptake["heart"])
    p.paint(ed["heart"] - 12.0, 40.0, 1.6)  # blood pool inside the myocardium

    # bones: vertebral bodies with discs, posterior elements, ribs, pelvis, femurs, skull
    column = np.minimum(_ellipse2d(x, y, 0, -65 * w, 18, 16), _slab(z, 20 * h, 650 * h))
    p.paint(column, 400.0, 1.2, name="bone")
    p.paint(np.minimum(column, np.abs((z % 28.0) - 14.0) - 11.5), 80.0, 0.8)  # 5 mm discs every 28 mm
    p.paint(np.minimum(_ellipse2d(x, y, 0, -95 * w, 9, 12), _slab(z, 20 * h, 650 * h)), 700.0, 0.5)
    rib_ring = 5.0 - np.abs(_ellipse2d(x, y, 0, 0, 150 * w - a["fat"] - 14, 105 * w - a["fat"] - 14))
    rib_level = 4.0 - np.abs(((z - 400 * h) % 24.0) - 12.0)
    p.paint(np.minimum.reduce([rib_ring, rib_level, _slab(z, 400 * h, 600 * h), 40 - y]),
            700.0, 0.5, name="bone")
    pelvis = np.minimum.reduce([6.0 - np.abs(_ellipse2d(x, y, 0, -10, 120 * w, 85 * w)), _slab(z, 60, 170), 40 - y])
    p.paint(pelvis, 700.0, 0.6, name="bone")
    for s in (-1, 1):
        p.paint(ellipsoid_distance(c, np.array([s * 88 * w, 0, 20]), np.array([24, 24, 24])), 600.0, 1.0)
        p.paint(np.minimum(_ellipse2d(x, y, s * 85 * w, 0, 14, 14), 10 - z), 900.0, 0.5, name="bone")
    p.paint(head, 40.0, 0.8)  # scalp
    p.paint(ellipsoid_distance(c, head_centre, head_radii - 6), 1200.0, 0.5, name="bone")
    p.paint(ellipsoid_distance(c, head_centre, head_radii - 13), 35.0, uptake["brain"])
    return body


def _lesions(rng: np.random.Generator, a: dict, z_range: tuple[float, float]) -> list[tuple[np.ndarray, float]]:
    """Lesion centres (body coordinates) and radii of one study; an empty list for a negative case."""
    if rng.random() < 0.3:
        return []
    lesions = []
    for _ in range(int(rng.integers(1, 5))):
        site = rng.choice(["lung", "liver", "node", "bone"], p=[0.3, 0.25, 0.35, 0.1])
        if site == "node":
            centre = np.array(LYMPH_NODE_STATIONS[rng.integers(len(LYMPH_NODE_STATIONS))], float)
            centre *= [a["w"], a["w"], a["h"]]
        elif site == "bone":
            centre = np.array([0.0, -65 * a["w"], rng.uniform(60, 600) * a["h"]])
        else:
            organ_centre, radii = a[site + ("_r" if site == "lung" and rng.random() < 0.5 else "_l")
                                    if site == "lung" else site]
            centre = organ_centre + rng.uniform(-0.55, 0.55, 3) * radii
        radius = rng.uniform(8.0, 20.0)
        if z_range[0] + radius < centre[2] < z_range[1] - radius:
            lesions.append((centre, radius))
    return lesions


def generate_torso(
    seed: int, kind: str = "petct", spacing: float | None = None, study: int = 0, *, with_tissues: bool = False
) -> dict:
    """Simulate one study of one individual: CT (HU), FDG PET (SUV), lesion mask, and for "nac" NAC-PET.

    Args:
        seed: the individual (anatomy); the same seed and study give identical arrays.
        kind: "petct" (ct, pet) or "nac" (ct, pet, pet_nac).
        spacing: isotropic voxel size in mm (default 5 mm: 72 x 56 x 96 voxels).
        study: the study of that individual (0, 1, ...): same anatomy, its own pose, uptake, lesions, noise.
        with_tissues: also return "tissues": visible fractions {"lung", "liver", "bone"} and the body's
            depth below the skin in mm, "depth_mm", each (D, H, W) (for tests and signal checks).

    Returns:
        "ct" float32 (D, H, W) HU, "pet" float32 SUV, ["pet_nac" float32], "label" uint8 (D, H, W) 0/1
        lesions, "affine" (4, 4) RAS float64.
    """
    if kind not in ("petct", "nac"):
        raise InputError(f"unknown torso kind '{kind}'; use petct or nac")
    spacing = float(spacing or DEFAULT_SPACING)
    if not 1.0 <= spacing <= 15.0:
        raise InputError(f"--spacing {spacing} mm is outside the supported range 1-15 mm for PET/CT")
    anatomy = _anatomy(individual_rng(seed, 2))
    rng = individual_rng(seed, 3, study)
    coords, affine = grid_coords(grid_shape(FIELD_OF_VIEW_MM, spacing), spacing)
    shape = coords.shape[1:]
    half_z = FIELD_OF_VIEW_MM[2] / 2.0

    # study pose: the field of view shows thighs->shoulders, or abdomen->head for about a third
    head_top = 900.0 * anatomy["h"]
    z_offset = (head_top + 15.0 - half_z) if rng.random() < 0.35 else (half_z - 60.0)
    z_offset += rng.uniform(-20.0, 20.0)
    rot = rotation_matrix(tuple(np.deg2rad(rng.uniform(-1, 1, 3) * [2.0, 2.0, 4.0]))).astype(np.float32)
    shift = np.array([*rng.uniform(-10, 10, 2), -z_offset], np.float32).reshape(3, 1, 1, 1)
    body_coords = np.einsum("ij,j...->i...", rot.T, coords - shift)
    uptake = {"bladder": rng.uniform(5, 30), "kidney": rng.uniform(4, 10), "liver": rng.uniform(2, 3),
              "spleen": rng.uniform(1.5, 2.5), "heart": rng.uniform(1.5, 12), "brain": rng.uniform(6, 10),
              "bowel_pattern": smooth_field(rng, shape, nodes=14)}

    painter = _Painter(shape, 0.5 * spacing, track=with_tissues)
    body = _paint_body(painter, body_coords, anatomy, uptake)
    label = np.zeros(shape, np.uint8)
    inside = body > 0
    for centre, radius in _lesions(rng, anatomy, (z_offset - half_z, z_offset + half_z)):
        distance = ellipsoid_distance(body_coords, centre, np.full(3, radius))
        distance = distance + 0.25 * radius * smooth_field(rng, shape, nodes=12)
        frac = painter.paint(distance, 35.0, rng.uniform(4.0, 15.0), within=inside.astype(np.float32))
        label[(frac > 0.5) & inside] = 1

    ct = ndimage.gaussian_filter(painter.ct, 0.5) + 10.0 * rng.standard_normal(shape, dtype=np.float32)
    ct = np.clip(ct, -1024.0, 3071.0).astype(np.float32)
    fwhm = rng.uniform(6.0, 8.0)
    activity = blur_mm(painter.suv, fwhm, spacing)
    out = {"ct": ct, "pet": _pet_noise(rng, activity), "label": label, "affine": affine}
    if kind == "nac":
        factor = attenuation_factor(painter.ct, body > 0, spacing)
        out["pet_nac"] = _pet_noise(rng, blur_mm(painter.suv * factor, fwhm, spacing))
    out = {k: out[k] for k in ("ct", "pet", "pet_nac", "label", "affine") if k in out}
    if with_tissues:
        depth = ndimage.distance_transform_edt(body > 0) * spacing
        out["tissues"] = {k: painter.visible.get(k, np.zeros(shape, np.float32)) for k in ("lung", "liver", "bone")}
        out["tissues"]["depth_mm"] = depth.astype(np.float32)
    return out


def _pet_noise(rng: np.random.Generator, activity: np.ndarray) -> np.ndarray:
    """Count-like noise: std 0.15 sqrt(value), spatially correlated over ~0.7 voxel; clipped at 0."""
    noise = ndimage.gaussian_filter(rng.standard_normal(activity.shape, dtype=np.float32), 0.7)
    noise /= max(float(noise.std()), 1e-6)
    return np.clip(activity + 0.15 * np.sqrt(np.maximum(activity, 0)) * noise, 0, None).astype(np.float32)


def attenuation_factor(ct_hu: np.ndarray, body: np.ndarray, spacing: float) -> np.ndarray:
    """Approximate 511 keV survival probability exp(-mu_eff x depth) of each voxel's photons, in (0, 1].

    Args:
        ct_hu: (D, H, W) CT in HU.
        body: (D, H, W) bool body mask.
        spacing: voxel size in mm.

    Returns:
        (D, H, W) float32; 1 outside the body, decreasing with depth below the surface.
    """
    hu = ct_hu.astype(np.float32)
    mu = np.where(hu <= 0, MU_WATER_PER_CM * (1 + hu / 1000.0), MU_WATER_PER_CM + MU_BONE_SLOPE * hu)
    mu = np.clip(mu, 0, None) * body
    sigma = 25.0 / spacing
    mu_eff = ndimage.gaussian_filter(mu, sigma) / np.maximum(ndimage.gaussian_filter(body.astype(np.float32), sigma), 1e-3)
    depth_cm = ndimage.distance_transform_edt(body) * spacing / 10.0
    return np.exp(-mu_eff * depth_cm).astype(np.float32)
