"""`p2g predict`: native geometry, every subset, intensities, sidecar, untouched inputs and error paths.

Most tests use stand-in models whose outputs are known by hand (an "echo" synthesis model and a threshold
segmenter), so that every output voxel can be checked against an independent numpy computation; the CLI tests use
real tiny P2GNet checkpoints.
"""

from __future__ import annotations

import hashlib
import itertools
import json

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from p2gmed.config import Config, config_to_dict
from p2gmed.data.layouts import brats_file
from p2gmed.errors import InputError
from p2gmed.inference.models import LoadedModel
from p2gmed.inference.cases import predict_case
from p2gmed.inference.naming import case_name_from_inputs
from p2gmed.inference.predict import PredictOptions

MRI = ("t1n", "t1c", "t2w", "t2f")
# LPS, anisotropic spacing, non-zero origin
LPS = np.array([[-1.2, 0, 0, 40.0], [0, -0.9, 0, 30.0], [0, 0, 2.5, -20.0], [0, 0, 0, 1]])
SHAPE = (37, 23, 41)  # odd, not multiples of 32; one axis smaller than the ROI (padded and cropped back)


class StandIn(nn.Module):
    """A model known by its `forward_subset`; `forward_subsets` (what inference calls) runs it per subset."""

    def forward_subsets(self, image: torch.Tensor, subsets: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.forward_subset(image, row) for row in subsets], 1)


class EchoSynthesis(StandIn):
    """Output m = input m where available, else the mean of the available (normalised) inputs."""

    def forward_subset(self, image: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
        mean = image[:, available].mean(1, keepdim=True)
        return torch.where(available[None, :, None, None, None], image, mean.expand_as(image))


class ThresholdSegmenter(StandIn):
    """Class 3 (ET) where the mean of the available normalised inputs exceeds 1, else class 0 (K = 4)."""

    def forward_subset(self, image: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
        mean = image[:, available].mean(1, keepdim=True)
        low = torch.full_like(mean, -10.0)
        return torch.cat([torch.zeros_like(mean), low, low, 10 * (mean - 1)], 1)


def stand_in(module, task, modalities=MRI, labels=None, spacing=None, roi=(32, 32, 64), path="model.pt"):
    cfg = Config()
    cfg.data.modalities = tuple(modalities)
    cfg.data.roi_size = roi
    cfg.data.spacing = spacing
    out = 4 if task == "segmentation" else len(modalities)
    ckpt = {"config": config_to_dict(cfg), "task": task, "architecture": "p2g", "out_channels": out,
            "modalities": list(modalities), "labels": labels, "versions": {"p2gmed": "test"}}
    return LoadedModel.from_checkpoint_dict(module, ckpt, path)


def brain_case(folder, modalities=MRI, shape=SHAPE, affine=LPS, seed=0):
    """Positive intensities inside an ellipsoid, 0 outside (skull-stripped), a different scale per modality."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    brain = (grid**2).sum(0) < 0.8
    paths = {}
    for i, m in enumerate(modalities):
        data = np.where(brain, rng.uniform(50, 150, shape) * (i + 1), 0).astype(np.float32)
        paths[m] = folder / f"sub01_{m}.nii.gz"
        nib.save(nib.Nifti1Image(data, affine), str(paths[m]))
    return paths


def load(path):
    img = nib.load(str(path))
    return img.get_fdata(dtype=np.float32), img


def digest(paths):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def expected_synthesis(given):
    """Independent numpy version of the documented rule: mean z-score on the pooled scale, 0 outside the scans."""
    zs, means, stds = [], [], []
    for data in given:
        values = data[data != 0]
        means.append(values.mean(dtype=np.float64))
        stds.append(values.std(dtype=np.float64))
        zs.append(np.where(data != 0, (data - means[-1]) / stds[-1], 0))
    out = np.mean(zs, 0) * np.mean(stds) + np.mean(means)
    return np.where(np.logical_or.reduce([d != 0 for d in given]), out, 0)


# ------------------------------------------------------------------------------------------------ synthesis


def test_every_subset_gives_every_modality_in_native_geometry(tmp_path):
    inputs = brain_case(tmp_path)
    before = digest(inputs.values())
    model = stand_in(EchoSynthesis(), "synthesis")
    for size in range(1, 5):
        for subset in itertools.combinations(MRI, size):
            out = tmp_path / ("from-" + "+".join(subset))
            sidecar = predict_case([model], {m: inputs[m] for m in subset}, out, "sub01")
            assert sidecar["given"] == list(subset)
            assert sidecar["synthesized"] == [m for m in MRI if m not in subset]
            assert json.loads((out / "sub01.json").read_text()) == sidecar
            given = [load(inputs[m])[0] for m in subset]
            for m in MRI:
                data, img = load(out / f"sub01_{m}.nii.gz")
                assert data.shape == SHAPE
                np.testing.assert_allclose(img.affine, LPS, atol=1e-5)
                if m in subset:  # copied through byte for byte
                    assert (out / f"sub01_{m}.nii.gz").read_bytes() == inputs[m].read_bytes()
                    assert sidecar["outputs"][m]["source"] == "given"
                else:
                    assert sidecar["outputs"][m]["source"] == "synthesized"
                    np.testing.assert_allclose(data, expected_synthesis(given), rtol=1e-4, atol=1e-2)
    assert digest(inputs.values()) == before  # inputs untouched


def test_nothing_to_synthesize_skips_the_model(tmp_path):
    class Exploding(StandIn):
        def forward_subset(self, image, available):
            raise AssertionError("the synthesis model should not run when every modality is given")

    inputs = brain_case(tmp_path)
    sidecar = predict_case([stand_in(Exploding(), "synthesis")], inputs, tmp_path / "out", "c")
    assert sidecar["synthesized"] == [] and all(v["source"] == "given" for v in sidecar["outputs"].values())


def test_reconstruct_given_returns_the_input_intensities(tmp_path):
    inputs = brain_case(tmp_path)
    model = stand_in(EchoSynthesis(), "pretrain")  # a pre-training checkpoint also synthesizes
    opts = PredictOptions(reconstruct_given=True, overlap=0.5, mode="gaussian")
    sidecar = predict_case([model], {"t1c": inputs["t1c"]}, tmp_path / "out", "c1", opts)
    assert sidecar["outputs"]["t1c"]["source"] == "reconstructed"
    assert sidecar["given_outputs"] == "reconstructed by the model"
    data, _ = load(tmp_path / "out" / "c1_t1c.nii.gz")
    np.testing.assert_allclose(data, load(inputs["t1c"])[0], rtol=1e-4, atol=1e-2)


def test_resampling_to_training_spacing_comes_back_to_native_grid(tmp_path):
    inputs = brain_case(tmp_path, shape=(30, 27, 13))
    model = stand_in(EchoSynthesis(), "synthesis", spacing=(1.0, 1.0, 1.0))
    opts = PredictOptions(reconstruct_given=True)
    sidecar = predict_case([model], {"t2w": inputs["t2w"]}, tmp_path / "out", "c1", opts)
    assert sidecar["models"][0]["working_grid"]["resampled"]
    assert sidecar["models"][0]["working_grid"]["spacing"] == [1.0, 1.0, 1.0]
    assert sidecar["geometry"]["orientation"] == "LPS" and sidecar["geometry"]["shape"] == [30, 27, 13]
    data, img = load(tmp_path / "out" / "c1_t2w.nii.gz")
    assert data.shape == (30, 27, 13)
    np.testing.assert_allclose(img.affine, LPS, atol=1e-5)
    source = load(inputs["t2w"])[0]
    inner = (slice(3, -3),) * 3  # interpolation blurs the random texture; compare in the interior, loosely
    assert np.corrcoef(data[inner].ravel(), source[inner].ravel())[0, 1] > 0.5


def test_ct_round_trip_keeps_hu_and_synthesized_pet_is_in_suv(tmp_path):
    rng = np.random.default_rng(1)
    ct = rng.uniform(-1500, 2500, (21, 19, 35)).astype(np.float32)
    nib.save(nib.Nifti1Image(ct, LPS), str(tmp_path / "ct.nii.gz"))
    model = stand_in(EchoSynthesis(), "synthesis", modalities=("ct", "pet"))
    predict_case([model], {"CTres": tmp_path / "ct.nii.gz"}, tmp_path / "out", "p1",
                 PredictOptions(reconstruct_given=True))
    hu, _ = load(tmp_path / "out" / "p1_ct.nii.gz")
    np.testing.assert_allclose(hu, np.clip(ct, -1000, 1000), atol=0.05)  # HU kept inside the window
    suv, _ = load(tmp_path / "out" / "p1_pet.nii.gz")
    np.testing.assert_allclose(suv, np.clip(ct, -1000, 1000) / 1000 * 10.0, atol=1e-3)  # window -> [-1,1] x scale


def test_segmentation_labels_follow_the_model_convention(tmp_path):
    inputs = brain_case(tmp_path)
    for labels, et in (("brats2018", 4), ("brats2023", 3)):
        seg_model = stand_in(ThresholdSegmenter(), "segmentation", labels=labels, path=f"seg-{labels}.pt")
        out = tmp_path / labels
        sidecar = predict_case([stand_in(EchoSynthesis(), "synthesis"), seg_model],
                               {"t1n": inputs["t1n"], "t2f": inputs["t2f"]}, out, "s1")
        seg, img = load(out / "s1_seg.nii.gz")
        assert img.get_data_dtype() == np.uint8 and seg.shape == SHAPE
        np.testing.assert_allclose(img.affine, LPS, atol=1e-5)
        t1n, t2f = load(inputs["t1n"])[0], load(inputs["t2f"])[0]
        z = [np.where(d != 0, (d - d[d != 0].mean()) / d[d != 0].std(), 0) for d in (t1n, t2f)]
        expected = np.where(np.mean(z, 0) > 1, et, 0)
        assert (seg == expected).mean() > 0.999  # float ties at the threshold aside
        assert sidecar["outputs"]["seg"] == {"file": "s1_seg.nii.gz", "source": "segmented", "labels": labels}
        assert sorted(sidecar["outputs"]) == sorted([*MRI, "seg"])


def test_segmentation_on_a_resampled_grid_comes_back_to_the_native_grid(tmp_path):
    # a bright off-centre blob in a brain: any flip or shift of the round trip would move the segmented blob
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in SHAPE], indexing="ij"))
    brain = (grid**2).sum(0) < 0.8
    blob = ((grid - np.array([0.4, -0.3, 0.2])[:, None, None, None]) ** 2).sum(0) < 0.1
    t1c = np.where(brain, 100.0, 0.0) + np.where(blob, 400.0, 0.0)
    nib.save(nib.Nifti1Image(t1c.astype(np.float32), LPS), str(tmp_path / "t1c.nii.gz"))
    seg_model = stand_in(ThresholdSegmenter(), "segmentation", labels="brats2018", spacing=(1.0, 1.0, 1.0))
    predict_case([seg_model], {"t1c": tmp_path / "t1c.nii.gz"}, tmp_path / "out", "s1")
    seg, img = load(tmp_path / "out" / "s1_seg.nii.gz")
    assert seg.shape == SHAPE and img.get_data_dtype() == np.uint8
    np.testing.assert_allclose(img.affine, LPS, atol=1e-5)
    assert set(np.unique(seg)) == {0, 4}
    dice = 2 * ((seg == 4) & blob).sum() / ((seg == 4).sum() + blob.sum())
    assert dice > 0.9


def test_segmentation_model_alone_writes_given_modalities_and_seg(tmp_path):
    inputs = brain_case(tmp_path)
    seg_model = stand_in(ThresholdSegmenter(), "segmentation", labels="brats2023")
    sidecar = predict_case([seg_model], {"t2w": inputs["t2w"]}, tmp_path / "out", "s1")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["s1.json", "s1_seg.nii.gz", "s1_t2w.nii.gz"]
    assert sidecar["synthesized"] == []


class CoreSegmenter(StandIn):
    """Edema (class 2) where the mean normalised input exceeds 1, enhancing tumour (class 3) where it exceeds 3."""

    def forward_subset(self, image: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
        mean = image[:, available].mean(1, keepdim=True)
        low = torch.full_like(mean, -10.0)
        return torch.cat([torch.zeros_like(mean), low, 10 * (mean - 1), 20 * (mean - 2)], 1)  # 3 wins above 3


def test_lesion_filters_keep_the_documented_lesion(tmp_path):
    from scipy import ndimage

    # a large bright blob without core (bias-bright white matter) and a smaller tumour with a brighter core
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij")).astype(np.float32)
    def ball(centre, radius):
        return ((grid - np.array(centre, np.float32)[:, None, None, None]) ** 2).sum(0) <= radius**2
    brain = ball((18, 11, 20), 17)
    wm_blob, tumour, core = ball((10, 11, 12), 5), ball((26, 11, 30), 3.5), ball((26, 11, 30), 1.5)
    t2f = np.where(brain, 100.0, 0.0) + 100.0 * wm_blob + 100.0 * tumour + 1000.0 * core
    nib.save(nib.Nifti1Image(t2f.astype(np.float32), LPS), str(tmp_path / "t2f.nii.gz"))
    model = stand_in(CoreSegmenter(), "segmentation", labels="brats2023")
    segs = {}
    for name in ("all", "largest", "core"):
        sidecar = predict_case([model], {"t2f": tmp_path / "t2f.nii.gz"}, tmp_path / name, "s1",
                               PredictOptions(lesions=name))
        assert sidecar["models"][0]["inference"]["lesions"] == name
        segs[name] = load(tmp_path / name / "s1_seg.nii.gz")[0]
    assert ndimage.label(segs["all"] > 0, structure=np.ones((3, 3, 3)))[1] == 2
    assert segs["all"][wm_blob].min() == 2 and (segs["all"][core] == 3).all()
    # largest keeps the (larger) core-less blob; core keeps the tumour with its labels
    np.testing.assert_array_equal(segs["largest"], np.where(wm_blob, segs["all"], 0))
    np.testing.assert_array_equal(segs["core"], np.where(wm_blob, 0, segs["all"]))


def test_case_name_from_inputs():
    assert case_name_from_inputs({"t1n": "/d/BraTS-GLI-00002-000-t1n.nii.gz"}) == "BraTS-GLI-00002-000"
    assert case_name_from_inputs({"t2f": "sub01_flair.nii"}) == "sub01"
    assert case_name_from_inputs({"t1n": "t1.nii.gz"}) == "case"
    assert case_name_from_inputs({"ct": "scan.nii.gz"}) == "scan"


# ------------------------------------------------------------------------------------------------ errors


def _bad_request(tmp_path, problem):
    inputs = brain_case(tmp_path)
    out = tmp_path / "out"
    if problem == "unknown modality":
        return {"t3": inputs["t1n"]}, out, "c"
    if problem == "modality the model does not know":
        return {"t1n": inputs["t1n"], "ct": inputs["t2w"]}, out, "c"
    if problem == "overwrites an input":
        return {"t1n": inputs["t1n"]}, tmp_path, "sub01"  # would write tmp_path/sub01_t1n.nii.gz
    if problem == "shape mismatch":
        nib.save(nib.Nifti1Image(np.ones((5, 5, 5), np.float32), LPS), str(tmp_path / "small.nii.gz"))
        return {"t1n": inputs["t1n"], "t2w": tmp_path / "small.nii.gz"}, out, "c"
    if problem == "nan":
        data, img = load(inputs["t2w"])
        data[3, 3, 3] = np.nan
        nib.save(nib.Nifti1Image(data, img.affine), str(tmp_path / "nan.nii.gz"))
        return {"t1n": inputs["t1n"], "t2w": tmp_path / "nan.nii.gz"}, out, "c"
    if problem == "unreadable":
        (tmp_path / "junk.nii.gz").write_bytes(b"\x1f\x8b broken")
        return {"t1n": tmp_path / "junk.nii.gz"}, out, "c"
    raise AssertionError(problem)


@pytest.mark.parametrize(
    "problem",
    ["unknown modality", "modality the model does not know", "overwrites an input", "shape mismatch", "nan",
     "unreadable"],
)
def test_bad_input_raises_input_error_and_writes_nothing(tmp_path, problem):
    inputs, out, case = _bad_request(tmp_path, problem)
    files_before = sorted(tmp_path.rglob("*"))
    hashes = digest([p for p in files_before if p.is_file()])
    with pytest.raises(InputError) as err:
        predict_case([stand_in(EchoSynthesis(), "synthesis")], inputs, out, case)
    assert str(err.value).strip()
    assert sorted(tmp_path.rglob("*")) == files_before  # nothing written, no temp file left
    assert digest(list(hashes)) == hashes


def test_model_combinations_are_checked():
    syn = stand_in(EchoSynthesis(), "synthesis", path="a.pt")
    other = stand_in(EchoSynthesis(), "pretrain", modalities=("t1n", "t2w"), path="b.pt")
    with pytest.raises(InputError, match="a.pt and b.pt .* different modalities"):  # an ensemble must agree
        predict_case([syn, other], {"t1n": "x.nii.gz"}, "out", "c")
    with pytest.raises(InputError, match="given twice"):
        predict_case([syn, stand_in(EchoSynthesis(), "synthesis", path="a.pt")], {"t1n": "x.nii.gz"}, "out", "c")
    with pytest.raises(InputError, match="label convention"):
        stand_in(ThresholdSegmenter(), "segmentation", labels=None)
    with pytest.raises(InputError, match="cannot run"):
        stand_in(EchoSynthesis(), "classification")


# ------------------------------------------------------------------------------------------------ CLI, real models


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Untrained tiny P2GNet checkpoints (tiny-cpu preset): synthesis, pre-training and segmentation."""
    from pathlib import Path

    from p2gmed.config import load_config
    from p2gmed.models.baselines import build_architecture
    from p2gmed.train.checkpoint import save_checkpoint

    cfg = load_config(Path(__file__).parents[1] / "configs" / "tiny-cpu.yaml")
    folder = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    paths = {}
    for task, out, labels in (("synthesis", 4, None), ("pretrain", 4, None), ("segmentation", 4, "brats2023")):
        paths[task] = folder / f"{task}.pt"
        save_checkpoint(paths[task], model=build_architecture(cfg, "p2g", out), step=1, config=config_to_dict(cfg),
                        task=task, architecture="p2g", out_channels=out, modalities=list(MRI), labels=labels)
    petct = load_config(Path(__file__).parents[1] / "configs" / "tiny-cpu.yaml", ["data.modalities=[ct,pet]"])
    paths["autopet"] = folder / "autopet.pt"
    save_checkpoint(paths["autopet"], model=build_architecture(petct, "p2g", 2), step=1,
                    config=config_to_dict(petct), task="segmentation", architecture="p2g", out_channels=2,
                    modalities=["ct", "pet"], labels="autopet")
    paths["junk"] = folder / "junk.pt"
    paths["junk"].write_bytes(b"not a checkpoint")
    return paths


def p2g(*args):
    from p2gmed.cli import main

    return main(["predict", *map(str, args), "--device", "cpu", "--no-progress"])


def test_cli_synthesis_and_segmentation_from_two_modalities(tmp_path, checkpoints, capsys):
    inputs = brain_case(tmp_path, shape=(33, 29, 61))  # ROI is (32, 32, 64): padded on two axes, two windows
    before = digest(inputs.values())
    rc = p2g("--model", checkpoints["synthesis"], "--model", checkpoints["segmentation"], "--input",
             f"t1={inputs['t1n']}", f"flair={inputs['t2f']}", "--out", tmp_path / "pred")
    assert rc == 0
    sidecar = json.loads((tmp_path / "pred" / "sub01.json").read_text())
    assert sidecar["given"] == ["t1n", "t2f"] and sidecar["synthesized"] == ["t1c", "t2w"]
    assert [m["task"] for m in sidecar["models"]] == ["synthesis", "segmentation"]
    for name in [*MRI, "seg"]:
        data, img = load(tmp_path / "pred" / f"sub01_{name}.nii.gz")
        assert data.shape == (33, 29, 61) and np.isfinite(data).all()
        np.testing.assert_allclose(img.affine, LPS, atol=1e-5)
    seg_img = nib.load(str(tmp_path / "pred" / "sub01_seg.nii.gz"))
    assert seg_img.get_data_dtype() == np.uint8 and set(np.unique(seg_img.dataobj)) <= {0, 1, 2, 3}
    assert digest(inputs.values()) == before
    assert "sub01:" in capsys.readouterr().out


def test_cli_batch_over_a_dataset_folder(tmp_path, checkpoints, capsys):
    root = tmp_path / "data"
    for i, case in enumerate(("BraTS-GLI-00001-000", "BraTS-GLI-00002-000")):
        (root / case).mkdir(parents=True)
        for m, path in brain_case(tmp_path, shape=(30, 31, 60), seed=i).items():
            path.rename(root / case / brats_file(case, "brats23", m))
    rc = p2g("--model", checkpoints["pretrain"], "--case-dir", root, "--out", tmp_path / "pred")
    assert rc == 0
    for case in ("BraTS-GLI-00001-000", "BraTS-GLI-00002-000"):
        sidecar = json.loads((tmp_path / "pred" / f"{case}.json").read_text())
        assert sidecar["given"] == list(MRI) and sidecar["models"][0]["task"] == "pretrain"
    assert "predicted 2 case(s)" in capsys.readouterr().out


def test_cli_lesion_filter_is_recorded_and_refused_without_a_core(tmp_path, checkpoints, capsys):
    inputs = brain_case(tmp_path, shape=(33, 29, 61))
    rc = p2g("--model", checkpoints["segmentation"], "--input", f"t1n={inputs['t1n']}", "--out", tmp_path / "core",
             "--lesions", "core")
    assert rc == 0
    sidecar = json.loads((tmp_path / "core" / "sub01.json").read_text())
    assert sidecar["models"][0]["inference"]["lesions"] == "core"
    capsys.readouterr()
    (tmp_path / "petct").mkdir()
    petct = brain_case(tmp_path / "petct", modalities=("ct", "pet"))
    rc = p2g("--model", checkpoints["autopet"], "--input", f"ct={petct['ct']}", f"pet={petct['pet']}",
             "--out", tmp_path / "pet", "--lesions", "core")
    err = capsys.readouterr().err
    assert rc == 2 and "autopet" in err and "Traceback" not in err
    assert not (tmp_path / "pet").exists()


@pytest.mark.parametrize("problem", ["unknown modality", "malformed", "junk checkpoint", "two segmenters",
                                     "geometry mismatch", "missing file"])
def test_cli_bad_input_exits_2_with_one_sentence_and_writes_nothing(tmp_path, checkpoints, capsys, problem):
    inputs = brain_case(tmp_path, shape=(9, 8, 7))
    models = ["--model", checkpoints["synthesis"]]
    given = [f"t1n={inputs['t1n']}"]
    if problem == "unknown modality":
        given.append(f"t3={inputs['t2w']}")
    elif problem == "malformed":
        given.append(str(inputs["t2w"]))
    elif problem == "junk checkpoint":
        models = ["--model", checkpoints["junk"]]
    elif problem == "two segmenters":
        models = ["--model", checkpoints["segmentation"], "--model", checkpoints["segmentation"]]
    elif problem == "geometry mismatch":
        other = tmp_path / "other.nii.gz"
        nib.save(nib.Nifti1Image(np.ones((9, 8, 7), np.float32), np.diag([1.0, 1.0, 1.0, 1.0])), str(other))
        given.append(f"t2w={other}")
    elif problem == "missing file":
        given.append(f"t2w={tmp_path / 'nowhere.nii.gz'}")
    rc = p2g(*models, "--input", *given, "--out", tmp_path / "pred")
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("p2g predict: error:") and "Traceback" not in err
    assert not (tmp_path / "pred").exists()
    if problem == "geometry mismatch":
        assert str(inputs["t1n"]) in err and "other.nii.gz" in err


# ------------------------------------------------------------------------------------------------ sliding window


def test_sliding_window_sees_only_roi_windows_and_returns_the_volume_size():
    from p2gmed.inference.sliding import sliding_predict

    seen = []

    def predictor(x):  # (b, M, *roi) -> (b, 2, *roi): the input and its double
        seen.append(tuple(x.shape[2:]))
        return torch.cat([x[:, :1], 2 * x[:, :1]], 1)

    image = torch.rand(1, 1, 21, 70, 33)  # smaller than the ROI on two axes, larger on one
    out = sliding_predict(predictor, image, (32, 32, 32), overlap=0.25, sw_batch_size=3, stitch="cpu")
    assert out.shape == (1, 2, 21, 70, 33) and out.device.type == "cpu"
    assert set(seen) == {(32, 32, 32)}
    torch.testing.assert_close(out[0, 0], image[0, 0], atol=1e-5, rtol=1e-5)  # blending identical values
    torch.testing.assert_close(out[0, 1], 2 * image[0, 0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kwargs", [{"overlap": 1.0}, {"overlap": -0.1}, {"sw_batch_size": 0}, {"stitch": "gpu"}])
def test_sliding_window_rejects_bad_settings(kwargs):
    from p2gmed.inference.sliding import sliding_predict

    with pytest.raises(InputError):
        sliding_predict(lambda x: x, torch.zeros(1, 1, 8, 8, 8), (32, 32, 32), **kwargs)


class EverywhereSegmenter(StandIn):
    """Class 2 (edema) in every voxel, inside the patient or not."""

    def forward_subset(self, image: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
        b, _, *size = image.shape
        logits = torch.zeros(b, 4, *size)
        logits[:, 2] = 10.0
        return logits


def test_nothing_is_segmented_outside_the_patient(tmp_path):
    inputs = brain_case(tmp_path)
    seg_model = stand_in(EverywhereSegmenter(), "segmentation", labels="brats2023")
    predict_case([seg_model], {"t1n": inputs["t1n"], "t2w": inputs["t2w"]}, tmp_path / "out", "s1")
    seg = load(tmp_path / "out" / "s1_seg.nii.gz")[0]
    brain = load(inputs["t1n"])[0] != 0
    assert (seg[brain] == 2).all() and (seg[~brain] == 0).all() and (~brain).any()


def test_ct_body_bounds_the_segmentation_and_keeps_the_lungs(tmp_path):
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in SHAPE], indexing="ij"))
    body = (grid[:2] ** 2).sum(0) < 0.7
    lung = ((grid[:2] - np.array([0.3, 0.0])[:, None, None, None]) ** 2).sum(0) < 0.05
    ct = np.where(body, 40.0, -1000.0) + np.where(lung, -860.0, 0.0)  # lungs at -820 HU, inside the body
    nib.save(nib.Nifti1Image(ct.astype(np.float32), LPS), str(tmp_path / "ct.nii.gz"))
    seg_model = stand_in(EverywhereSegmenter(), "segmentation", modalities=("ct", "pet"), labels="brats2023")
    predict_case([seg_model], {"ct": tmp_path / "ct.nii.gz"}, tmp_path / "out", "s1")
    seg = load(tmp_path / "out" / "s1_seg.nii.gz")[0]
    assert (seg[body] == 2).all() and (seg[~body] == 0).all()
