"""benchmarks/real_transfer.py and real_data.py: resampling, correlations and tissue ratios against
independent numpy references on synthetic arrays; the clear error without spm-runtime; and, where spm-runtime
is installed, the real MNI averages themselves and one end-to-end run of the check."""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import real_data  # noqa: E402
import real_transfer  # noqa: E402


def _numpy_ranks(x: np.ndarray) -> np.ndarray:
    ranks = np.empty(len(x))
    ranks[np.argsort(x)] = np.arange(len(x))
    return ranks


def test_correlations_match_numpy_references():
    rng = np.random.default_rng(0)
    a = rng.normal(size=500)
    b = np.exp(a) + 0.3 * rng.normal(size=500)  # monotone but non-linear relation plus noise: no ties
    assert real_transfer.pearson(a, b) == pytest.approx(np.corrcoef(a, b)[0, 1], abs=1e-12)
    assert real_transfer.spearman(a, b) == pytest.approx(np.corrcoef(_numpy_ranks(a), _numpy_ranks(b))[0, 1],
                                                         abs=1e-12)
    assert real_transfer.spearman(a, np.exp(a)) == pytest.approx(1.0)  # ranks ignore a monotone map
    assert real_transfer.pearson(a, np.exp(a)) < 0.9


def test_tissue_ratios_and_contrasts_of_a_piecewise_constant_image():
    labels = np.zeros((6, 6, 6), int)
    labels[:2], labels[2:4], labels[4:] = 1, 2, 3  # GM, WM, CSF slabs
    image = np.choose(labels, [0.0, 3.0, 2.0, 5.0])
    tissues = {"gm": labels == 1, "wm": labels == 2, "csf": labels == 3}
    mask = np.ones_like(labels, bool)
    assert real_transfer.tissue_ratios(image, tissues, mask) == pytest.approx({"gm/wm": 1.5, "csf/wm": 2.5})
    sd = image.std()
    assert real_transfer.tissue_contrasts(image, tissues, mask) == pytest.approx(
        {"(gm-wm)/sd": 1.0 / sd, "(csf-wm)/sd": 3.0 / sd})
    half = mask.copy()
    half[:, :, 3:] = False
    image[:, :, 3:] = 100.0  # outside the mask: must not count
    assert real_transfer.tissue_ratios(image, tissues, half) == pytest.approx({"gm/wm": 1.5, "csf/wm": 2.5})


def test_moment_matching_and_the_polynomial_oracle():
    rng = np.random.default_rng(1)
    x, ref = rng.normal(3.0, 2.0, 400), rng.normal(-1.0, 0.5, 400)
    matched = real_transfer.match_moments(x, ref)
    assert matched.mean() == pytest.approx(ref.mean()) and matched.std() == pytest.approx(ref.std())
    assert np.corrcoef(matched, x)[0, 1] == pytest.approx(1.0)
    t1 = rng.uniform(0.0, 1.0, 400)
    cubic = 2.0 - 3.0 * t1 + 0.5 * t1**3
    assert np.allclose(real_transfer.oracle_polynomial(t1, cubic), cubic, atol=1e-9)
    noisy = cubic + 0.1 * rng.normal(size=400)
    fit = real_transfer.oracle_polynomial(t1, noisy)  # least squares includes the line: never below |r| of T1
    assert np.corrcoef(fit, noisy)[0, 1] >= abs(np.corrcoef(t1, noisy)[0, 1])


def test_compare_against_references():
    rng = np.random.default_rng(2)
    reference = rng.uniform(1.0, 2.0, (5, 5, 5))
    candidate = 10.0 - 4.0 * reference  # a perfect but inverted and rescaled T2
    tissues = {k: rng.uniform(size=reference.shape) > 0.5 for k in ("gm", "wm", "csf")}
    mask = np.ones(reference.shape, bool)
    row = real_transfer.compare(-candidate, reference, tissues, mask)
    assert row["pearson"] == pytest.approx(1.0) and row["spearman"] == pytest.approx(1.0)
    assert row["gm/wm"] == pytest.approx(real_transfer.tissue_ratios(reference, tissues, mask)["gm/wm"])
    assert real_transfer.compare(candidate, reference, tissues, mask)["pearson"] == pytest.approx(-1.0)


def test_resample_by_affines():
    rng = np.random.default_rng(3)
    volume = rng.normal(size=(4, 5, 6)).astype(np.float32)
    ras = np.diag([2.0, 2.0, 2.0, 1.0])
    las = ras.copy()
    las[0, 0], las[0, 3] = -2.0, 6.0  # x flipped, same world box
    flipped = real_data.resample(volume, ras, volume.shape, las, order=1)
    assert np.allclose(flipped, volume[::-1], atol=1e-5)
    half = ras.copy()
    half[0, 3] = 1.0  # target voxels half-way between source voxels along x
    between = real_data.resample(volume, ras, (3, 5, 6), half, order=1)
    assert np.allclose(between, (volume[:-1] + volume[1:]) / 2, atol=1e-5)
    four = np.stack([volume, 2 * volume], axis=-1)
    assert np.allclose(real_data.resample(four, ras, volume.shape, las)[..., 1], 2 * volume[::-1], atol=1e-5)
    outside = ras.copy()
    outside[:3, 3] = 100.0
    assert not real_data.resample(volume, ras, volume.shape, outside).any()  # 0 outside the source


def _hide_spm(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "spm_runtime" else find_spec(name, *a))


def test_missing_spm_runtime_is_a_clear_error(monkeypatch, capsys, tmp_path):
    _hide_spm(monkeypatch)
    with pytest.raises(real_data.RealDataMissing, match="pip install --no-deps spm-runtime==25.1.2.post4"):
        real_data.load_real(with_nilearn=False)
    out = tmp_path / "out.json"
    assert real_transfer.main(["--model", str(tmp_path / "none.pt"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "pip install --no-deps spm-runtime==25.1.2.post4" in err and err.count("\n") == 1
    assert not out.exists()


# --- the real averages (spm-runtime installed) -------------------------------------------------------------


@pytest.fixture(scope="module")
def real():
    pytest.importorskip("spm_runtime")
    return real_data.load_real(with_nilearn=False)


def test_real_averages_load_on_the_mni_grid(real):
    expected = np.array([[-2.0, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]])
    assert real.shape == (91, 109, 91) and np.allclose(real.affine, expected)
    for volume in (real.t1, real.t2, real.pd):
        assert volume.shape == real.shape and 0.0 <= volume.min() and volume.max() <= 1.0
    assert 1.2e6 < real.mask.sum() * 8 < 2.2e6  # intracranial volume in mm^3 (about 1.5 litres)
    assert all(2000 < v.sum() < real.mask.sum() / 2 for v in real.tissues.values())
    assert not (real.tissues["gm"] & real.tissues["wm"]).any()
    for item in real.inputs.values():
        assert item.t1.shape == real.shape and not item.t1[~item.mask].any()


def test_real_t1_and_t2_are_anticorrelated_and_t2_has_real_contrast(real):
    m = real.mask
    assert np.corrcoef(real.t1[m], real.t2[m])[0, 1] < -0.4  # a property of real T1 and T2 of one anatomy
    t1 = real_transfer.tissue_ratios(real.t1, real.tissues, m)
    t2 = real_transfer.tissue_ratios(real.t2, real.tissues, m)
    assert t1["gm/wm"] < 1 and t1["csf/wm"] < 1 < t2["gm/wm"] < t2["csf/wm"]


def test_check_end_to_end_with_an_untrained_model(real, untrained_pretrain_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(real_data, "load_real", lambda with_nilearn=True: real)
    monkeypatch.setattr(real_transfer, "load_real", lambda: real)
    one_brain = functools.partial(real_transfer.in_distribution, subjects=1)
    monkeypatch.setattr(real_transfer, "in_distribution", one_brain)
    out = tmp_path / "transfer.json"
    assert real_transfer.main(["--model", str(untrained_pretrain_checkpoint), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["inputs"]) == {*real.inputs, real_transfer.SIMULATED}
    for result in report["inputs"].values():
        rows = result["t2"]
        assert result["pass"] == (rows["model T2"]["pearson"] > rows["inverted T1"]["pearson"])
        assert rows["real T2"]["pearson"] == pytest.approx(1.0)
        assert rows["oracle poly3(T1)"]["pearson"] >= rows["inverted T1"]["pearson"] - 1e-9
    simulated = report["in_distribution"]
    assert len(simulated["subjects"]) == 1
    assert simulated["subjects"][0]["inverted T1"] > 0.3  # simulated T1 and T2 of one brain
    calibrated = report["simulator_calibration"]
    assert calibrated["t2"]["pearson"] > calibrated["t2"]["inverted T1 pearson"]  # real contrast
