"""The Python API (`p2gmed.load(...).predict(...)`), prediction at the training spacing, and the README example.

Stand-in models with hand-known outputs (from test_predict) check the API against the file-writing path
voxel for voxel; real tiny checkpoints check loading, the recorded training spacing and the README example.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from test_predict import LPS, MRI, SHAPE, EchoSynthesis, StandIn, ThresholdSegmenter, brain_case, stand_in

import p2gmed
from p2gmed.config import config_to_dict, load_config
from p2gmed.errors import InputError
from p2gmed.inference.api import P2GModel
from p2gmed.inference.models import LoadedModel
from p2gmed.inference.cases import predict_case
from p2gmed.inference.predict import PredictOptions

ROOT = Path(__file__).parents[1]


def models():
    return [stand_in(EchoSynthesis(), "synthesis", path="syn.pt"),
            stand_in(ThresholdSegmenter(), "segmentation", labels="brats2023", path="seg.pt")]


def test_public_api_is_named_in_all():
    assert {"load", "P2GModel", "__version__"} <= set(p2gmed.__all__)
    for name in p2gmed.__all__:
        assert getattr(p2gmed, name) is not None
    from p2gmed import load  # noqa: F401 - importable by name, resolved on first use


def test_predict_accepts_paths_images_and_arrays_and_matches_the_written_files(tmp_path):
    inputs = brain_case(tmp_path)
    sidecar = predict_case(models(), {"t1n": inputs["t1n"], "t2f": inputs["t2f"]}, tmp_path / "files", "sub01")
    written = {k: nib.load(str(tmp_path / "files" / v["file"])).get_fdata() for k, v in sidecar["outputs"].items()}
    model = P2GModel(models(), torch.device("cpu"))
    t2f = nib.load(str(inputs["t2f"]))
    before = sorted(tmp_path.rglob("*"))
    for given in (
        {"t1n": inputs["t1n"], "t2f": str(inputs["t2f"])},  # Path and str
        {"t1": nib.load(str(inputs["t1n"])), "flair": t2f},  # nibabel images, old spellings
        {"t1n": (nib.load(str(inputs["t1n"])).get_fdata(), LPS), "t2f": (np.asarray(t2f.dataobj), t2f.affine)},
    ):
        out = model.predict(given)
        assert sorted(out) == sorted([*MRI, "seg"])
        for key, img in out.items():
            assert isinstance(img, nib.Nifti1Image) and img.shape == SHAPE
            np.testing.assert_allclose(img.affine, LPS, atol=1e-5)
            np.testing.assert_allclose(img.get_fdata(), written[key], rtol=1e-5, atol=1e-4)
        assert model.last_info["sources"] == {"t1n": "given", "t1c": "synthesized", "t2w": "synthesized",
                                              "t2f": "given", "seg": "segmented"}
    assert out["seg"].get_data_dtype() == np.uint8
    assert sorted(tmp_path.rglob("*")) == before  # the API writes no file


def test_predict_options_per_call_and_errors(tmp_path):
    inputs = brain_case(tmp_path)
    model = P2GModel([stand_in(EchoSynthesis(), "pretrain")], torch.device("cpu"))
    out = model.predict({"t2w": inputs["t2w"]}, reconstruct_given=True)
    assert model.last_info["sources"]["t2w"] == "reconstructed"
    np.testing.assert_allclose(out["t2w"].get_fdata(), nib.load(str(inputs["t2w"])).get_fdata(), rtol=1e-4, atol=1e-2)
    with pytest.raises(InputError, match="t3"):
        model.predict({"t3": inputs["t2w"]})
    with pytest.raises(InputError, match="affine"):
        model.predict({"t1n": (np.ones((4, 4, 4)), np.eye(3))})
    with pytest.raises(InputError, match="shape"):
        model.predict({"t1n": inputs["t1n"], "t2w": (np.ones((5, 5, 5)), LPS)})
    with pytest.raises(InputError, match="list"):
        model.predict({"t1n": [1, 2, 3]})
    with pytest.raises(InputError, match="unknown prediction option.*mirror"):
        model.predict({"t1n": inputs["t1n"]}, mirror=True)


def test_ensemble_of_one_kind_is_the_mean_of_its_members(tmp_path):
    class Scaled(EchoSynthesis):
        def __init__(self, factor):
            super().__init__()
            self.factor = factor

        def forward_subset(self, image, available):
            return super().forward_subset(image, available) * self.factor

    inputs = {"t1n": brain_case(tmp_path)["t1n"]}
    single = P2GModel([stand_in(Scaled(1.0), "synthesis")], torch.device("cpu")).predict(inputs)
    pair = P2GModel([stand_in(Scaled(0.5), "synthesis", path="a.pt"), stand_in(Scaled(1.5), "synthesis", path="b.pt")],
                    torch.device("cpu")).predict(inputs)
    np.testing.assert_allclose(pair["t2w"].get_fdata(), single["t2w"].get_fdata(), rtol=1e-5, atol=1e-3)
    other = stand_in(Scaled(1.0), "synthesis", path="c.pt")
    other.cfg.data.mri_norm = "volume"
    with pytest.raises(InputError, match="normalise intensities differently"):
        P2GModel([stand_in(Scaled(1.0), "synthesis", path="a.pt"), other], torch.device("cpu"))


def test_mirroring_tta_averages_the_flipped_predictions(tmp_path):
    class LeftRight(StandIn):
        """Output = the input plus a ramp along the first spatial axis: mirroring averages the ramp to a constant."""

        def forward_subset(self, image, available):
            ramp = torch.linspace(-1, 1, image.shape[2]).view(1, 1, -1, 1, 1)
            return image + ramp

    inputs = {"t2w": brain_case(tmp_path, shape=(32, 32, 64))["t2w"]}
    model = P2GModel([stand_in(LeftRight(), "synthesis", roi=(32, 32, 64))], torch.device("cpu"))
    plain = model.predict(inputs, reconstruct_given=True)["t2w"].get_fdata()
    mirrored = model.predict(inputs, reconstruct_given=True, tta=True)["t2w"].get_fdata()
    source = nib.load(str(inputs["t2w"])).get_fdata()
    brain = source != 0
    assert np.abs(plain - source)[brain].max() > 1.0  # the ramp shows without mirroring
    np.testing.assert_allclose(mirrored[brain], source[brain], rtol=1e-4, atol=1e-2)  # and cancels with it


def _with_spacing(module, task, spacing, labels=None, path="model.pt"):
    """A stand-in whose checkpoint records the spacing it was trained at (data.spacing unset, as by default)."""
    model = stand_in(module, task, labels=labels, path=path)
    ckpt = {"config": config_to_dict(model.cfg), "task": task, "architecture": "p2g", "out_channels": 4,
            "modalities": list(MRI), "labels": labels, "versions": {}, "spacing": list(spacing)}
    return LoadedModel.from_checkpoint_dict(module, ckpt, path)


def test_a_1mm_input_through_a_3mm_model_is_predicted_at_3mm_and_returned_at_1mm(tmp_path):
    shape = (60, 54, 48)
    one_mm = np.diag([-1.0, -1.0, 1.0, 1.0])
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    brain = (grid**2).sum(0) < 0.8
    blob = ((grid - np.array([0.35, -0.3, 0.2])[:, None, None, None]) ** 2).sum(0) < 0.08
    t1c = (np.where(brain, 100.0, 0.0) + np.where(blob, 400.0, 0.0)).astype(np.float32)
    nib.save(nib.Nifti1Image(t1c, one_mm), str(tmp_path / "t1c.nii.gz"))
    seg_model = _with_spacing(ThresholdSegmenter(), "segmentation", (3.0, 3.0, 3.0), labels="brats2018")
    assert seg_model.spacing == (3.0, 3.0, 3.0)
    sidecar = predict_case([seg_model], {"t1c": tmp_path / "t1c.nii.gz"}, tmp_path / "out", "c")
    working = sidecar["models"][0]["working_grid"]
    assert working["resampled"] and working["spacing"] == [3.0, 3.0, 3.0]
    assert working["shape"] == [21, 19, 17] and sidecar["models"][0]["training_spacing"] == [3.0, 3.0, 3.0]
    seg = nib.load(str(tmp_path / "out" / "c_seg.nii.gz"))
    assert seg.shape == shape
    np.testing.assert_allclose(seg.affine, one_mm)
    found = np.asarray(seg.dataobj) == 4
    assert 2 * (found & blob).sum() / (found.sum() + blob.sum()) > 0.8  # the blob comes back where it was
    off = predict_case([seg_model], {"t1c": tmp_path / "t1c.nii.gz"}, tmp_path / "native", "c",
                       PredictOptions(resample=False))
    assert not off["models"][0]["working_grid"]["resampled"] and off["resampling"] == "off (native grid)"


# ------------------------------------------------------------------------------------------------ real checkpoints


@pytest.fixture(scope="module")
def trained(demo_brain, tmp_path_factory):
    """One real pre-training step on the built-in 3 mm brains (two modalities): a real training checkpoint."""
    from p2gmed.cli import main

    run = tmp_path_factory.mktemp("api") / "pre"
    rc = main(["pretrain", "--data", str(demo_brain), "--out", str(run),
               "--config", str(ROOT / "configs/tiny-cpu.yaml"), "--max-steps", "1", "--set", "data.modalities=[t1n,t2w]", "--device", "cpu"])
    assert rc == 0
    return run / "checkpoints" / "last.pt"


def test_training_records_its_spacing_and_load_predicts_a_1mm_case_at_it(trained, demo_brain, tmp_path):
    ckpt = torch.load(trained, weights_only=True)
    assert ckpt["spacing"] == [3.0, 3.0, 3.0]  # the built-in brains are 3 mm; data.spacing is unset
    case = next(p for p in sorted(demo_brain.iterdir()) if p.is_dir())
    t1n = nib.load(str(next(case.glob("*-t1n.nii.gz"))))
    crop = np.asarray(t1n.dataobj, dtype=np.float32)[10:30, 10:30, 10:30]
    fine = np.repeat(np.repeat(np.repeat(crop, 3, 0), 3, 1), 3, 2)  # the same anatomy on a 1 mm grid
    affine = t1n.affine @ np.diag([1 / 3, 1 / 3, 1 / 3, 1])
    model = p2gmed.load(trained, device="cpu")
    out = model.predict({"t1n": (fine, affine)})
    assert sorted(out) == ["t1n", "t2w"] and out["t2w"].shape == fine.shape
    np.testing.assert_allclose(out["t2w"].affine, affine, atol=1e-5)
    assert model.last_info["working_grids"][0]["resampled"]
    assert model.last_info["working_grids"][0]["shape"] == [21, 21, 21]  # 60 voxels of 1 mm: 59 / 3 + 1
    assert np.isfinite(out["t2w"].get_fdata()).all()


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- tested by tests/test_api.py -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README.md lost its tested Python API example"
    return match.group(1)


def test_readme_python_example_runs(tmp_path, monkeypatch):
    from p2gmed.models.baselines import build_architecture
    from p2gmed.train.checkpoint import save_checkpoint

    cfg = load_config(ROOT / "configs" / "tiny-cpu.yaml")
    for task, labels in (("synthesis", None), ("segmentation", "brats2023")):
        save_checkpoint(tmp_path / f"runs/{task[:3]}/checkpoints/best.pt", model=build_architecture(cfg, "p2g", 4),
                        step=1, config=config_to_dict(cfg), task=task, architecture="p2g", out_channels=4,
                        modalities=list(MRI), labels=labels)
    (tmp_path / "case").mkdir()
    paths = brain_case(tmp_path / "case", shape=(33, 29, 40))
    os.rename(paths["t1n"], tmp_path / "case/t1.nii.gz")
    os.rename(paths["t2f"], tmp_path / "case/flair.nii.gz")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_readme_example(), "README.md", "exec"), namespace)  # noqa: S102 - our own README
    out = namespace["out"]
    assert sorted(out) == ["seg", "t1c", "t1n", "t2f", "t2w"]
    saved = nib.load(str(tmp_path / "t2w.nii.gz"))
    assert saved.shape == (33, 29, 40)
    np.testing.assert_allclose(saved.affine, LPS, atol=1e-5)
    assert json.dumps(namespace["model"].last_info["sources"])  # JSON-ready provenance


def test_export_p2g_is_small_complete_and_predicts_the_same(trained, demo_brain, tmp_path, capsys):
    from p2gmed.cli import main

    out = tmp_path / "shared" / "model.pt"
    assert main(["export", "--model", str(trained), "--format", "p2g", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "MiB" in printed and "model card" in printed
    blob = torch.load(out, weights_only=True)
    full = torch.load(trained, weights_only=True)
    for key in ("optimizer", "scheduler", "scaler", "rng"):
        assert key not in blob
    assert blob["format"] == "p2g-inference/1" and blob["spacing"] == [3.0, 3.0, 3.0]
    assert blob["modalities"] == ["t1n", "t2w"] and blob["config"] == full["config"]
    assert all(torch.equal(blob["model"][k], full["model"][k]) for k in full["model"])
    card = blob["model_card"]
    assert card["steps"] == 1 and card["training_spacing_mm"] == [3.0, 3.0, 3.0] and card["roi_size"] == [32, 32, 64]
    assert "p2gmed model card" in (tmp_path / "shared" / "model.pt.md").read_text()
    # AdamW's two moments per weight are gone: the shared file is well under half the training checkpoint
    assert out.stat().st_size < 0.5 * trained.stat().st_size

    case = next(p for p in sorted(demo_brain.iterdir()) if p.is_dir())
    inputs = {"t1n": next(case.glob("*-t1n.nii.gz"))}
    a = p2gmed.load(out, device="cpu").predict(inputs)["t2w"].get_fdata()
    b = p2gmed.load(trained, device="cpu").predict(inputs)["t2w"].get_fdata()
    np.testing.assert_array_equal(a, b)
    assert main(["predict", "--model", str(out), "--input", f"t1n={inputs['t1n']}", "--out", str(tmp_path / "pred"),
                 "--device", "cpu", "--no-progress"]) == 0
    assert (tmp_path / "pred" / f"{case.name}_t2w.nii.gz").is_file()


def test_export_refuses_junk_and_overwriting_the_input(trained, tmp_path, capsys):
    from p2gmed.cli import main

    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"nothing")
    assert main(["export", "--model", str(junk), "--format", "p2g", "--out", str(tmp_path / "x.pt")]) == 2
    assert main(["export", "--model", str(trained), "--format", "p2g", "--out", str(trained)]) == 2
    assert "Traceback" not in capsys.readouterr().err and not (tmp_path / "x.pt").exists()


def test_cli_batch_part_continue_naming(trained, demo_brain, tmp_path, capsys):
    from p2gmed.cli import main

    base = ["predict", "--model", str(trained), "--case-dir", str(demo_brain), "--out", str(tmp_path / "pred"),
            "--naming", "brats", "--device", "cpu", "--no-progress"]
    cases = sorted(p.name for p in demo_brain.iterdir() if p.is_dir())
    assert main([*base, "--part", "1/2"]) == 0
    assert "predicted 2 case(s) (part 1/2)" in capsys.readouterr().out
    sidecars = lambda: sorted(p.name for p in (tmp_path / "pred").glob("[!.]*.json"))  # noqa: E731 - not the record
    assert sidecars() == [f"{c}.json" for c in cases[::2]]
    assert (tmp_path / "pred" / f"{cases[0]}-t2w.nii.gz").is_file()
    assert main([*base, "--continue"]) == 0
    printed = capsys.readouterr().out
    assert "predicted 2 case(s)" in printed and "2 already complete, skipped" in printed
    assert sidecars() == [f"{c}.json" for c in cases]
    assert main([*base, "--part", "3/2"]) == 2
