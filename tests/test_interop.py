"""Files of the field's tools: nnU-Net and BraTS-submission names in and out, nnU-Net channels named by the user,
and batch prediction that continues and splits into parts."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
from test_predict import LPS, MRI, EchoSynthesis, ThresholdSegmenter, brain_case, stand_in

from p2gmed.cli import main
from p2gmed.data.layouts import brats_file
from p2gmed.data.manifests import parse_channels
from p2gmed.data.read import read_dataset
from p2gmed.errors import DataError, InputError
from p2gmed.inference.batch import parse_part, predict_folder, shard
from p2gmed.inference.naming import NAMINGS, output_name, split_name
from p2gmed.inference.cases import predict_case
from p2gmed.inference.predict import PredictOptions


@pytest.mark.parametrize("naming", NAMINGS)
@pytest.mark.parametrize("case", ["BraTS-GLI-00002-000", "sub_01", "PETCT_0af7ffe12a_study-1"])
def test_every_naming_is_read_back_as_written(naming, case):
    for what in (*MRI, "ct", "pet", "pet_nac", "seg"):
        assert split_name(output_name(case, what, naming)) == (case, what)


def test_names_of_the_field():
    assert output_name("BraTS-GLI-00002-000", "seg", "brats") == "BraTS-GLI-00002-000.nii.gz"
    assert output_name("BraTS-GLI-00002-000", "t2f", "brats") == "BraTS-GLI-00002-000-t2f.nii.gz"
    assert output_name("liver_7", "seg", "nnunet") == "liver_7.nii.gz"
    assert output_name("c", "seg") == "c_seg.nii.gz"
    assert split_name("c1.nii") == ("c1", "seg") and split_name("notes.txt") == ("", "")
    with pytest.raises(InputError, match="naming"):
        output_name("c", "seg", "monai")


def _models():
    return [stand_in(EchoSynthesis(), "synthesis", path="syn.pt"),
            stand_in(ThresholdSegmenter(), "segmentation", labels="brats2023", path="seg.pt")]


def _brats_dataset(root, cases, shape=(20, 18, 22)):
    for i, case in enumerate(cases):
        (root / case).mkdir(parents=True)
        for m, path in brain_case(root, shape=shape, seed=i).items():
            path.rename(root / case / brats_file(case, "brats23", m))
        seg = np.zeros(shape, np.uint8)
        seg[8:12, 8:12, 8:12] = 3
        nib.save(nib.Nifti1Image(seg, LPS), str(root / case / brats_file(case, "brats23", "seg")))
    return root


@pytest.mark.parametrize("naming", ["nnunet", "brats"])
def test_evaluate_reads_predictions_named_by_nnunet_and_brats(tmp_path, naming):
    cases = ("BraTS-GLI-00001-000", "BraTS-GLI-00002-000")
    data = _brats_dataset(tmp_path / "data", cases)
    pred = tmp_path / "pred"
    summary = predict_folder(_models(), data, pred, PredictOptions(naming=naming), progress=False)
    assert summary["done"] == list(cases)
    sep = "-" if naming == "brats" else "_"
    assert (pred / f"{cases[0]}.nii.gz").is_file() and (pred / f"{cases[0]}{sep}t2w.nii.gz").is_file()
    assert not list(pred.glob("*_seg.nii.gz"))
    for task in ("brats", "synthesis"):
        out = tmp_path / f"{task}.csv"
        assert main(["evaluate", task, "--pred", str(pred), "--ref", str(data), "--out", str(out)]) == 0
        rows = list(csv.DictReader(out.open()))
        assert {r["case"] for r in rows} == set(cases)
    # the same predictions named by p2g give the same numbers
    predict_folder(_models(), data, tmp_path / "own", progress=False)
    main(["evaluate", "brats", "--pred", str(tmp_path / "own"), "--ref", str(data), "--out", str(tmp_path / "own.csv")])
    assert list(csv.DictReader((tmp_path / "own.csv").open())) == list(csv.DictReader((tmp_path / "brats.csv").open()))


def _nnunet_autopet(root, channel_names):
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    for case in ("PETCT_a_s1", "PETCT_b_s1"):
        ct = rng.uniform(-1000, 500, (12, 10, 14)).astype(np.float32)
        nib.save(nib.Nifti1Image(ct, np.eye(4)), str(root / "imagesTr" / f"{case}_0000.nii.gz"))
        nib.save(nib.Nifti1Image(np.abs(ct) / 200, np.eye(4)), str(root / "imagesTr" / f"{case}_0001.nii.gz"))
        label = nib.Nifti1Image(np.zeros((12, 10, 14), np.uint8), np.eye(4))
        nib.save(label, str(root / "labelsTr" / f"{case}.nii.gz"))
    meta = {"channel_names": channel_names, "labels": {"background": 0, "lesion": 1}, "numTraining": 2,
            "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_nnunet_channels_named_alike_are_read_with_channels(tmp_path, capsys):
    root = _nnunet_autopet(tmp_path / "Dataset221_AutoPETII_2023", {"0": "CT", "1": "CT"})  # as AutoPET-II ships
    with pytest.raises(DataError, match="--channels 0=ct,1=pet"):
        read_dataset(root)
    subjects = read_dataset(root, channels={0: "ct", 1: "pet"})
    assert [sorted(s.images) for s in subjects] == [["ct", "pet"], ["ct", "pet"]]
    assert subjects[0].images["pet"].name == "PETCT_a_s1_0001.nii.gz" and subjects[0].labels == "autopet"
    assert main(["data", "check", str(root)]) == 2
    assert "--channels" in capsys.readouterr().err
    assert main(["data", "check", str(root), "--channels", "0=CTres,1=SUV"]) == 0
    assert parse_channels("0=ct, 1=pet") == {0: "ct", 1: "pet"}
    for bad in ("0=ct,0=pet", "0=ct,1=ct", "ct", "0=", "0=bone"):
        with pytest.raises(InputError):
            parse_channels(bad)
    with pytest.raises(InputError, match="nnU-Net"):
        read_dataset(_brats_dataset(tmp_path / "b", ["BraTS-GLI-00001-000"]), channels={0: "t1n"})


def test_continue_skips_complete_cases_and_redoes_incomplete_ones(tmp_path):
    cases = ("BraTS-GLI-00001-000", "BraTS-GLI-00002-000", "BraTS-GLI-00003-000")
    data = _brats_dataset(tmp_path / "data", cases)
    pred = tmp_path / "pred"
    assert predict_folder(_models(), data, pred, progress=False)["done"] == list(cases)
    stamps = {p.name: p.stat().st_mtime_ns for p in pred.iterdir()}
    (pred / f"{cases[1]}_t2w.nii.gz").unlink()  # as if killed before this output was renamed into place
    summary = predict_folder(_models(), data, pred, progress=False, skip_complete=True)
    assert summary["done"] == [cases[1]] and summary["skipped"] == [cases[0], cases[2]]
    assert (pred / f"{cases[1]}_t2w.nii.gz").is_file()
    assert (pred / f"{cases[0]}.json").stat().st_mtime_ns == stamps[f"{cases[0]}.json"]
    # other prediction settings: the outputs would differ, so nothing counts as complete
    for changed in (PredictOptions(lesions="largest"), PredictOptions(overlap=0.5), PredictOptions(tta=True)):
        summary = predict_folder(_models(), data, pred, changed, progress=False, skip_complete=True)
        assert summary["skipped"] == [] and summary["done"] == list(cases)
        assert predict_folder(_models(), data, pred, changed, progress=False, skip_complete=True)["done"] == []
    other = [stand_in(EchoSynthesis(), "synthesis", path="other.pt")]  # another model: nothing is complete
    assert predict_folder(other, data, pred, progress=False, skip_complete=True)["skipped"] == []


def test_parts_cover_every_case_once(tmp_path):
    items = [f"c{i}" for i in range(7)]
    parts = [shard(items, (i, 3)) for i in (1, 2, 3)]
    assert sorted(sum(parts, [])) == items and parts[0] == ["c0", "c3", "c6"]
    assert parse_part("2/4") == (2, 4)
    for bad in ("0/4", "5/4", "1", "a/b", "-1/2"):
        with pytest.raises(InputError, match="--part"):
            parse_part(bad)
    data = _brats_dataset(tmp_path / "data", ("BraTS-GLI-00001-000", "BraTS-GLI-00002-000", "BraTS-GLI-00003-000"))
    done = [predict_folder(_models(), data, tmp_path / "pred", progress=False, part=(i, 2))["done"] for i in (1, 2)]
    assert done == [["BraTS-GLI-00001-000", "BraTS-GLI-00003-000"], ["BraTS-GLI-00002-000"]]


def test_predict_cli_rejects_batch_flags_with_input_files(tmp_path, capsys):
    inputs = brain_case(tmp_path, shape=(9, 8, 7))
    rc = main(["predict", "--model", "x.pt", "--input", f"t1n={inputs['t1n']}", "--out", str(tmp_path / "o"),
               "--continue", "--device", "cpu"])
    assert rc == 2 and "--continue applies to --case-dir" in capsys.readouterr().err


def test_predict_case_with_brats_naming_writes_submission_names(tmp_path):
    inputs = brain_case(tmp_path)
    sidecar = predict_case(_models(), {"t1n": inputs["t1n"]}, tmp_path / "out", "BraTS-GLI-00009-000",
                           PredictOptions(naming="brats"))
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == sorted(["BraTS-GLI-00009-000.json", "BraTS-GLI-00009-000.nii.gz",
                            *[f"BraTS-GLI-00009-000-{m}.nii.gz" for m in MRI]])
    assert sidecar["outputs"]["seg"]["file"] == "BraTS-GLI-00009-000.nii.gz"


def test_modalities_come_from_the_data_set_when_the_config_names_none(demo_petct, tmp_path):
    from argparse import Namespace
    from pathlib import Path

    from p2gmed.cli.run_args import run_config

    tiny = Path(__file__).parents[1] / "configs" / "tiny-cpu.yaml"

    def args(*overrides):
        return Namespace(config=tiny, overrides=list(overrides), data=demo_petct, device=None, max_steps=None,
                         channels=None)

    assert run_config(args()).data.modalities == ("ct", "pet")  # AutoPET folder, MRI default
    assert run_config(args("data.modalities=[pet]")).data.modalities == ("pet",)  # a named choice wins
    run = tmp_path / "run"
    assert main(["pretrain", "--data", str(demo_petct), "--out", str(run), "--config", str(tiny),
                 "--max-steps", "1", "--device", "cpu"]) == 0
    assert "- ct\n  - pet\n" in (run / "config.yaml").read_text()


def test_training_reads_an_autopet_ii_nnunet_folder_with_channels(tmp_path, capsys):
    """AutoPET-II's dataset.json names both channels CT: training needs --channels as data check and predict do."""
    from pathlib import Path

    root = _nnunet_autopet(tmp_path / "Dataset221_AutoPETII_2023", {"0": "CT", "1": "CT"})
    tiny = str(Path(__file__).parents[1] / "configs" / "tiny-cpu.yaml")
    common = ["--data", str(root), "--config", tiny, "--max-steps", "1", "--device", "cpu",
              "--set", "data.val_fraction=0", "--set", "train.val_every=0"]
    assert main(["pretrain", "--out", str(tmp_path / "refused"), *common]) == 2
    assert "--channels 0=ct,1=pet" in capsys.readouterr().err
    run = tmp_path / "run"
    assert main(["pretrain", "--out", str(run), *common, "--channels", "0=ct,1=pet"]) == 0
    saved = (run / "config.yaml").read_text()
    assert "- ct\n  - pet\n" in saved and "channels: 0=ct,1=pet" in saved
