"""Every subset of a case in one pass: `predict_subsets`, `predict_case_subsets` and `p2g predict --subsets` give
what one prediction per subset gives, write the same folders and files, and refuse bad requests."""

from __future__ import annotations

import itertools
import json

import nibabel as nib
import numpy as np
import pytest
from test_predict import MRI, brain_case, checkpoints, p2g  # noqa: F401  (checkpoints is a fixture)

from p2gmed.inference.geometry import load_case
from p2gmed.inference.models import load_models
from p2gmed.inference.predict import PredictOptions, predict_subsets, predict_volumes

ALL = [s for size in range(1, 5) for s in itertools.combinations(MRI, size)]


def assert_same_prediction(one, alone):
    assert one.sources == alone.sources and one.units == alone.units and one.grids == alone.grids
    assert one.images.keys() == alone.images.keys()
    for key, image in alone.images.items():
        np.testing.assert_array_equal(one.images[key].affine, image.affine)
        np.testing.assert_allclose(np.asanyarray(one.images[key].dataobj), np.asanyarray(image.dataobj),
                                   rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kinds,subsets,options", [
    (("synthesis", "segmentation"), ALL, PredictOptions()),
    # an ensemble of two synthesis-capable models, mirrored, reconstructing the given modalities
    (("synthesis", "pretrain", "segmentation"), [("t2f",), ("t1n", "t2w"), MRI],
     PredictOptions(tta=True, reconstruct_given=True, overlap=0.25)),
])
def test_predict_subsets_equals_one_prediction_per_subset(tmp_path, checkpoints, kinds, subsets, options):
    models = load_models([checkpoints[k] for k in kinds])
    arrays, geometry = load_case(brain_case(tmp_path, shape=(33, 29, 61)))
    together = predict_subsets(models, arrays, geometry, subsets, options)
    assert len(together) == len(subsets)
    for subset, one in zip(subsets, together, strict=True):
        alone = predict_volumes(models, {m: arrays[m] for m in subset}, geometry, options)
        assert_same_prediction(one, alone)
        synthesized = {k for k, v in one.sources.items() if v == "synthesized"}
        assert synthesized == set(MRI) - set(subset)  # what counts as given follows the subset
        assert "seg" in one.images


def outputs(folder):
    """{file name: array or sidecar without its runtime} of one prediction folder (p2g's record aside: a
    one-pass run keeps it in the folder above)."""
    found = {}
    for path in sorted(p for p in folder.iterdir() if p.name != ".p2g-outputs.json"):
        if path.name.endswith(".json"):
            found[path.name] = {k: v for k, v in json.loads(path.read_text()).items() if k != "runtime"}
        else:
            image = nib.load(str(path))
            found[path.name] = (np.asanyarray(image.dataobj), image.affine, image.get_data_dtype())
    return found


def test_cli_subsets_write_what_one_call_per_subset_writes(tmp_path, checkpoints, capsys):
    inputs = brain_case(tmp_path, shape=(33, 29, 61))
    models = ["--model", checkpoints["synthesis"], "--model", checkpoints["segmentation"]]
    given = [f"t1={inputs['t1n']}", f"flair={inputs['t2f']}"]
    assert p2g(*models, "--input", *given, "--out", tmp_path / "one-pass", "--subsets", "all") == 0
    folders = sorted(p.name for p in (tmp_path / "one-pass").iterdir() if p.is_dir())
    assert folders == ["from-t1n", "from-t1n+t2f", "from-t2f"]
    for folder, subset in (("from-t1n", ["t1n"]), ("from-t2f", ["t2f"]), ("from-t1n+t2f", ["t1n", "t2f"])):
        separate = tmp_path / "separate" / folder
        assert p2g(*models, "--input", *[g for g in given if g.split("=")[1] in {str(inputs[m]) for m in subset}],
                   "--out", separate, "--case", "sub01") == 0
        one, alone = outputs(tmp_path / "one-pass" / folder), outputs(separate)
        assert one.keys() == alone.keys() == {f"sub01_{m}.nii.gz" for m in (*MRI, "seg")} | {"sub01.json"}
        assert one["sub01.json"] == alone["sub01.json"]
        for name in one.keys() - {"sub01.json"}:
            np.testing.assert_allclose(one[name][0], alone[name][0], rtol=1e-4, atol=1e-4)
            np.testing.assert_array_equal(one[name][1], alone[name][1])
            assert one[name][2] == alone[name][2]
    printed = capsys.readouterr().out
    assert "one-pass/from-t1n+t2f" in printed and printed.count("sub01:") == 6


def test_cli_subsets_rerun_refuses_and_user_files_stay(tmp_path, checkpoints, capsys):
    inputs = brain_case(tmp_path, shape=(9, 8, 7))
    argv = ["--model", checkpoints["synthesis"], "--input", f"t1n={inputs['t1n']}", f"t2w={inputs['t2w']}",
            "--out", tmp_path / "pred", "--subsets", "t2w", "t1n+t2w"]
    assert p2g(*argv) == 0
    record = json.loads((tmp_path / "pred" / ".p2g-outputs.json").read_text())
    assert "from-t1n+t2w/sub01_t1c.nii.gz" in record["files"] and "from-t2w/sub01.json" in record["files"]
    capsys.readouterr()
    assert p2g(*argv) == 2
    assert "from an earlier p2g run" in capsys.readouterr().err
    notes = tmp_path / "pred" / "from-t2w" / "notes.txt"  # the user's own files beside p2g's: never touched
    notes.write_text("mine")
    assert p2g(*argv, "--force") == 0
    assert notes.read_text() == "mine"
    mine = tmp_path / "pred" / "from-t1n" / "sub01_t2w.nii.gz"  # where a new subset would write
    mine.parent.mkdir()
    mine.write_bytes(b"the user's own")
    capsys.readouterr()
    assert p2g(*argv, "t1n", "--force") == 2
    assert "was not written by p2g" in capsys.readouterr().err and mine.read_bytes() == b"the user's own"
    assert sorted(p.name for p in mine.parent.iterdir()) == ["sub01_t2w.nii.gz"]


@pytest.mark.parametrize("spec,says", [
    (["t1n+t1c"], "t1c, which is not among the --input modalities"),
    (["t3"], "--subsets t3"),
    (["t1n+"], "empty modality name"),
    (["t1n+t2f", "flair+t1"], "twice"),
    (["all", "t1n"], "give it alone"),
])
def test_cli_bad_subsets_exit_2_and_write_nothing(tmp_path, checkpoints, capsys, spec, says):
    inputs = brain_case(tmp_path, shape=(9, 8, 7))
    rc = p2g("--model", checkpoints["synthesis"], "--input", f"t1n={inputs['t1n']}", f"t2f={inputs['t2f']}",
             "--out", tmp_path / "pred", "--subsets", *spec)
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("p2g predict: error:") and says in err and "Traceback" not in err
    assert not (tmp_path / "pred").exists()


def test_cli_subsets_refuse_case_dir(tmp_path, checkpoints, capsys):
    (tmp_path / "data").mkdir()
    rc = p2g("--model", checkpoints["synthesis"], "--case-dir", tmp_path / "data", "--out", tmp_path / "pred",
             "--subsets", "all")
    err = capsys.readouterr().err
    assert rc == 2 and "does not apply to --case-dir" in err
    assert not (tmp_path / "pred").exists()


def test_demo_plan_predicts_each_subject_once_into_the_same_subset_folders(tmp_path, checkpoints, demo_brain):
    from p2gmed.cli import main
    from p2gmed.data.read import read_dataset
    from p2gmed.report.demo import demo_settings
    from p2gmed.report.planning import predict_commands, subset_name

    subsets = demo_settings(True).subsets  # the quick demo: the four single modalities and all four
    subject = read_dataset(demo_brain)[0]
    out = tmp_path / "predictions"
    (argv,) = predict_commands([checkpoints["synthesis"], checkpoints["segmentation"]], [subject], subsets, MRI, out)
    assert main([*argv, "--device", "cpu", "--no-progress"]) == 0
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert folders == sorted(subset_name(s, MRI) for s in subsets) and len(folders) == 5
    for folder in folders:
        names = {p.name for p in (out / folder).iterdir()}
        assert names == {f"{subject.subject_id}_{m}.nii.gz" for m in (*MRI, "seg")} | {f"{subject.subject_id}.json"}
    csv = tmp_path / "synthesis.csv"
    assert main(["evaluate", "synthesis", "--pred", str(out), "--ref", str(demo_brain), "--out", str(csv),
                 "--convention", "unit", "--allow-missing"]) == 0
    import csv as csvlib

    sources = {row["source"] for row in csvlib.DictReader(csv.open())}
    assert sources == set(folders)  # p2g evaluate reads every subset folder
