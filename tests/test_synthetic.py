"""Built-in simulated data: geometry, individuality, determinism, and the physics of each signal model."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from p2gmed.data.synthetic import generate_brain, generate_torso
from p2gmed.data.synthetic import brain as brain_module
from p2gmed.data.synthetic.fields import smooth_field
from p2gmed.data.synthetic.torso import attenuation_factor
from p2gmed.errors import InputError


@pytest.fixture(scope="module")
def brain0():
    return generate_brain(0, with_tissues=True)


@pytest.fixture(scope="module")
def brain1():
    return generate_brain(1)


@pytest.fixture(scope="module")
def torso_with_lesion():
    """A PET/CT+NAC study with liver, lungs, bone and a lesion in view (seed 5, checked in the test)."""
    return generate_torso(5, "nac", with_tissues=True)


def _centroid(mask: np.ndarray) -> np.ndarray:
    return np.argwhere(mask).mean(0)


# --- brain -----------------------------------------------------------------------------------------------


def test_brain_modalities_share_geometry_and_brain(brain0):
    shapes = {brain0[m].shape for m in ("t1n", "t1c", "t2w", "t2f")} | {brain0["label"].shape}
    assert shapes == {(64, 76, 64)}  # 192 x 228 x 192 mm at 3 mm
    np.testing.assert_allclose(np.diag(brain0["affine"]), [3.0, 3.0, 3.0, 1.0])
    masks = [brain0[m] > 0 for m in ("t1n", "t1c", "t2w", "t2f")]
    for mask in masks[1:]:
        assert np.array_equal(mask, masks[0])  # one skull-stripped brain, zero background in all
    assert all(brain0[m].dtype == np.float32 for m in ("t1n", "t1c", "t2w", "t2f"))
    label = brain0["label"]
    assert label.dtype == np.uint8 and set(np.unique(label)) <= {0, 1, 2, 3}
    assert (label == 2).sum() > 50 and (label == 3).sum() > 20
    assert masks[0][label > 0].all()  # the tumour lies in the brain


def test_tumour_is_nested_core_inside_edema(brain0):
    label = brain0["label"]
    core = np.isin(label, (1, 3))
    from scipy import ndimage

    # the enhancing core is enclosed: growing it by one voxel stays within the whole tumour (or the brain edge)
    grown = ndimage.binary_dilation(core) & (brain0["t1n"] > 0)
    assert (label[grown] > 0).mean() > 0.9


def test_individuals_differ_in_anatomy_and_tumour(brain0, brain1):
    b0, b1 = brain0["t1n"] > 0, brain1["t1n"] > 0
    dice = 2 * (b0 & b1).sum() / (b0.sum() + b1.sum())
    assert dice < 0.98
    distance_vox = np.linalg.norm(_centroid(brain0["label"] > 0) - _centroid(brain1["label"] > 0))
    assert distance_vox > 3


def test_same_seed_same_arrays_other_seed_other_arrays(brain0):
    again = generate_brain(0)
    for key in ("t1n", "t1c", "t2w", "t2f", "label", "affine"):
        assert np.array_equal(again[key], brain0[key])
    assert not np.array_equal(generate_brain(2)["t2f"], brain0["t2f"])


def test_brain_contrasts_follow_relaxation(brain0):
    tissues, label = brain0["tissues"], brain0["label"]
    healthy = label == 0
    csf = (tissues["csf"] > 0.85) & healthy
    wm = (tissues["wm"] > 0.85) & healthy
    gm = (tissues["gm"] > 0.7) & healthy
    assert csf.sum() > 20 and wm.sum() > 100 and gm.sum() > 100
    mean = {m: (lambda mask, m=m: float(brain0[m][mask].mean())) for m in ("t1n", "t1c", "t2w", "t2f")}
    assert mean["t1n"](wm) > mean["t1n"](gm) > mean["t1n"](csf)  # T1: WM > GM > CSF
    assert mean["t2w"](csf) > 1.5 * mean["t2w"](wm)  # T2: CSF bright
    assert mean["t2f"](csf) < 0.5 * mean["t2f"](wm)  # FLAIR: CSF nulled
    assert mean["t2f"](label == 2) > 1.3 * mean["t2f"](wm)  # edema bright on FLAIR
    assert mean["t2w"](label == 2) > 1.3 * mean["t2w"](wm)  # and on T2
    # gadolinium: ET brightens on T1ce relative to T1, far more than white matter does
    et = label == 3
    enhancement_et = mean["t1c"](et) / mean["t1n"](et)
    enhancement_wm = mean["t1c"](wm) / mean["t1n"](wm)
    assert enhancement_et > 1.8 * enhancement_wm


def test_signal_equations_hand_values():
    one = {"wm": np.ones((1,), np.float32)}
    # spin echo: 0.7 (1 - e^(-500/900)) e^(-10/75) = 0.7 * 0.426259 * 0.875173 = 0.261135
    t1w = brain_module._signal(one, {"wm": (0.7, 900.0, 75.0)}, (500.0, 10.0, None))
    assert t1w[0] == pytest.approx(0.261135, rel=1e-4)
    # FLAIR with the CSF-nulling TI: pure nominal CSF gives (almost) no signal
    csf = brain_module._signal({"csf": one["wm"]}, {"csf": brain_module.TISSUES["csf"]},
                               brain_module.SEQUENCES["t2f"])
    assert abs(csf[0]) < 1e-6
    assert brain_module.FLAIR_TI == pytest.approx(4200 * math.log(2 / (1 + math.exp(-9000 / 4200))))


def test_brain_spacing_and_errors():
    coarse = generate_brain(3, spacing=6.0)
    assert coarse["t1n"].shape == (32, 38, 32)
    np.testing.assert_allclose(np.diag(coarse["affine"])[:3], 6.0)
    with pytest.raises(InputError, match="spacing"):
        generate_brain(0, spacing=50.0)


def test_brain_reads_nilearn_files_without_importing_or_downloading(tmp_path):
    code = (
        "import sys; from p2gmed.data.synthetic import generate_brain; generate_brain(0, spacing=6.0);"
        "print('nilearn' in sys.modules)"
    )
    env = {"HOME": str(tmp_path), "NILEARN_DATA": str(tmp_path / "nilearn_data"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
    assert not any(tmp_path.iterdir())  # nothing fetched or cached


# --- torso -------------------------------------------------------------------------------------------------


def test_torso_geometry_and_shape_not_multiple_of_32(torso_with_lesion):
    d = torso_with_lesion
    assert d["ct"].shape == d["pet"].shape == d["pet_nac"].shape == d["label"].shape == (72, 56, 96)
    assert any(n % 32 for n in d["ct"].shape)
    assert d["label"].dtype == np.uint8 and set(np.unique(d["label"])) == {0, 1}
    np.testing.assert_allclose(np.diag(d["affine"]), [5.0, 5.0, 5.0, 1.0])


def test_ct_and_pet_values(torso_with_lesion):
    d, tissues = torso_with_lesion, torso_with_lesion["tissues"]
    lung, bone, liver = tissues["lung"] > 0.9, tissues["bone"] > 0.9, tissues["liver"] > 0.9
    assert lung.sum() > 20 and bone.sum() > 20 and liver.sum() > 20
    assert np.median(d["ct"][lung]) < -500
    assert np.median(d["ct"][bone]) > 300
    assert np.median(d["ct"][tissues["depth_mm"] == 0]) < -900  # air outside the body
    lesion = d["label"] > 0
    assert d["pet"][lesion].mean() > d["pet"][liver].mean() > d["pet"][lung].mean()
    assert d["pet"].min() >= 0


def test_nac_is_darker_than_ac_deep_in_the_body(torso_with_lesion):
    d, depth = torso_with_lesion, torso_with_lesion["tissues"]["depth_mm"]
    deep, shallow = depth > 80, (depth > 0) & (depth < 15)
    ratio_deep = d["pet_nac"][deep].mean() / d["pet"][deep].mean()
    ratio_shallow = d["pet_nac"][shallow].mean() / d["pet"][shallow].mean()
    assert ratio_deep < 0.5 and ratio_deep < ratio_shallow


def test_attenuation_factor_of_water_slab_matches_beer_lambert():
    # a 40-voxel water slab (0 HU) at 5 mm: factor = exp(-0.096 /cm x depth), depth to the nearest face
    body = np.zeros((8, 8, 60), bool)
    body[:, :, 10:50] = True
    hu = np.where(body, 0.0, -1000.0)
    factor = attenuation_factor(hu, body, 5.0)
    for k, depth_vox in ((10, 1), (20, 11), (29, 20)):
        assert factor[4, 4, k] == pytest.approx(math.exp(-0.096 * depth_vox * 0.5), rel=1e-3)
    assert factor[4, 4, 0] == 1.0


def test_torso_individuals_studies_and_kinds():
    a, b = generate_torso(11), generate_torso(12)
    assert not np.array_equal(a["ct"], b["ct"])
    again = generate_torso(11)
    assert all(np.array_equal(a[k], again[k]) for k in ("ct", "pet", "label"))
    nac = generate_torso(11, "nac")
    assert np.array_equal(nac["ct"], a["ct"]) and np.array_equal(nac["pet"], a["pet"])  # nac only adds
    follow_up = generate_torso(11, study=1)
    assert not np.array_equal(follow_up["ct"], a["ct"])
    with pytest.raises(InputError):
        generate_torso(0, kind="mri")


def test_some_studies_are_negative_and_some_have_lesions():
    counts = [int(generate_torso(s, spacing=10.0)["label"].sum()) for s in range(8)]
    assert any(c == 0 for c in counts) and any(c > 0 for c in counts)


def test_smooth_field_is_smooth_standardised_and_reproducible():
    field = smooth_field(np.random.default_rng(0), (20, 24, 28), nodes=4)
    assert field.shape == (20, 24, 28)
    assert field.std() == pytest.approx(1.0, rel=1e-3) and abs(field.mean()) < 1e-4
    neighbour_corr = np.corrcoef(field[:-1].ravel(), field[1:].ravel())[0, 1]
    assert neighbour_corr > 0.9
    assert np.array_equal(field, smooth_field(np.random.default_rng(0), (20, 24, 28), nodes=4))


def test_figure_from_arrays_and_from_folder(tmp_path, demo_nac):
    from p2gmed.data.synthetic.figure import plot_individual

    arrays = {"t1n": np.random.default_rng(0).random((12, 14, 10)).astype(np.float32),
              "label": np.zeros((12, 14, 10), np.uint8)}
    arrays["label"][3:6, 4:8, 2:5] = 3
    for out in (plot_individual(arrays, tmp_path / "a.png"), plot_individual(demo_nac / "NAC_000", tmp_path / "b.png")):
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(InputError):
        plot_individual(tmp_path, tmp_path / "c.png")  # a folder without modality files


def test_the_enhancing_rim_encloses_the_necrosis():
    """The necrosis follows the core's outline, so the enhancing rim is never erased: almost no voxel next to
    the necrosis is edema or background (with independent outlines, up to half of them were, seed 8)."""
    from scipy import ndimage

    from p2gmed.data.synthetic.brain import generate_brain

    for seed in range(12):
        label = generate_brain(seed)["label"]
        necrosis = label == 1
        if not necrosis.any():
            continue
        shell = ndimage.binary_dilation(necrosis) & ~necrosis
        outside_rim = (shell & ((label == 2) | (label == 0))).sum() / shell.sum()
        assert outside_rim <= 0.05, (seed, outside_rim)
        assert (label == 3).sum() > 0, seed
