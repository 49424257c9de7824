"""Nothing a user owns is lost: every writing command refuses foreign, input-data and earlier-output folders
(exit 2, one sentence, nothing written) and replaces or removes only the files p2g recorded (docs/reliability.md)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from p2gmed.cli import main
from p2gmed.outputs import MANIFEST, OutputFolder, remove_orphan_temporaries

MRI = ("t1n", "t1c", "t2w", "t2f")


@pytest.fixture(scope="module")
def model(untrained_pretrain_checkpoint):
    return untrained_pretrain_checkpoint


def brats21_case(root: Path, case: str = "BraTS2021_00001", shape=(12, 10, 9)) -> Path:
    """A BraTS 2021 case folder with its ground-truth segmentation."""
    folder = root / case
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("t1", "t1ce", "t2", "flair"):
        data = rng.uniform(10, 100, shape).astype(np.float32)
        nib.save(nib.Nifti1Image(data, np.eye(4)), str(folder / f"{case}_{name}.nii.gz"))
    seg = np.zeros(shape, np.uint8)
    seg[3:6, 3:6, 3:6] = 4
    nib.save(nib.Nifti1Image(seg, np.eye(4)), str(folder / f"{case}_seg.nii.gz"))
    return folder


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def p2g(capsys, *args) -> tuple[int, str]:
    rc = main([str(a) for a in args])
    return rc, capsys.readouterr().err


def predict(capsys, model, *args):
    return p2g(capsys, "predict", "--model", model, "--device", "cpu", "--no-progress", *args)


# --------------------------------------------------------------------------------------------- predict


@pytest.mark.parametrize("where", ["the case folder", "inside the case folder", "the data set", "inside the data set"])
def test_predict_never_writes_into_its_input_data(tmp_path, model, capsys, where):
    data = tmp_path / "brats21"
    case = brats21_case(data)
    before = digest(data)
    out = {"the case folder": case, "inside the case folder": case / "pred", "the data set": data,
           "inside the data set": data / "predictions"}[where]
    rc, err = predict(capsys, model, "--case-dir", case if "case" in where else data, "--out", out)
    assert rc == 2 and "input data folder" in err and "Traceback" not in err and err.count("\n") == 1
    assert digest(data) == before and not (case / "pred").exists()


def test_predict_refuses_the_folder_of_its_input_files_and_an_existing_file(tmp_path, model, capsys):
    case = brats21_case(tmp_path)
    before = digest(case)
    rc, err = predict(capsys, model, "--input", f"t1={case / 'BraTS2021_00001_t1.nii.gz'}", "--out", case)
    assert rc == 2 and "folder of the input file" in err
    (tmp_path / "out.txt").write_text("mine")
    rc, err = predict(capsys, model, "--case-dir", case, "--out", tmp_path / "out.txt")
    assert rc == 2 and "is an existing file" in err and (tmp_path / "out.txt").read_text() == "mine"
    assert digest(case) == before


def test_predict_keeps_foreign_files_and_replaces_its_own_only_with_force(tmp_path, model, capsys):
    case = brats21_case(tmp_path / "data")
    foreign = tmp_path / "theirs"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    rc, err = predict(capsys, model, "--case-dir", case, "--out", foreign)
    assert rc == 2 and "not written by p2g" in err and sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]

    out = tmp_path / "pred"
    assert predict(capsys, model, "--case-dir", case, "--out", out)[0] == 0
    first = digest(out)
    assert "BraTS2021_00001_t2f.nii.gz" in OutputFolder(out).files()
    (out / "my-notes.txt").write_text("mine")
    rc, err = predict(capsys, model, "--case-dir", case, "--out", out)
    assert rc == 2 and "--force" in err and "earlier p2g run" in err
    assert {k: v for k, v in digest(out).items() if k != "my-notes.txt"} == first
    assert predict(capsys, model, "--case-dir", case, "--out", out, "--force")[0] == 0
    assert (out / "my-notes.txt").read_text() == "mine"


def test_failed_predict_leaves_no_folder_behind(tmp_path, model, capsys):
    bad = tmp_path / "t1.nii.gz"
    bad.write_bytes(b"not a nifti")
    rc, err = predict(capsys, model, "--input", f"t1={bad}", "--out", tmp_path / "pred")
    assert rc == 2 and "Traceback" not in err and not (tmp_path / "pred").exists()


# --------------------------------------------------------------------------------------------- demo, reproduce


@pytest.mark.parametrize("command", [["demo", "--quick"], ["reproduce", "table1", "--data", "{data}"]])
def test_demo_and_reproduce_refuse_a_folder_p2g_did_not_write(tmp_path, capsys, command):
    out = tmp_path / "results"
    out.mkdir()
    (out / "data").mkdir()
    (out / "data" / "patient.nii.gz").write_bytes(b"precious")
    (out / "split.json").write_text("{}")
    before = digest(out)
    argv = [a.format(data=tmp_path) for a in command]
    rc, err = p2g(capsys, *argv, "--out", out)
    assert rc == 2 and "not written by p2g" in err and "Traceback" not in err
    assert digest(out) == before


def test_redoing_a_step_removes_only_recorded_files(tmp_path):
    folder = OutputFolder.claim(tmp_path / "out")
    with folder.writing(["a/x.nii.gz", "b.csv"]):
        (tmp_path / "out" / "a").mkdir()
        (tmp_path / "out" / "a" / "x.nii.gz").write_text("p2g")
        (tmp_path / "out" / "b.csv").write_text("p2g")
    (tmp_path / "out" / "a" / "mine.txt").write_text("user")
    (tmp_path / "out" / "a" / ".x.nii.gz.abcd1234.nii.gz").write_text("orphan temp of a killed write")
    removed = folder.remove_recorded()
    assert sorted(p.name for p in removed) == [".x.nii.gz.abcd1234.nii.gz", "b.csv", "x.nii.gz"]
    assert (tmp_path / "out" / "a" / "mine.txt").read_text() == "user" and folder.files() == []
    assert (tmp_path / "out" / MANIFEST).is_file()  # the folder stays p2g's: it may write there again
    (tmp_path / "out" / "a" / "mine.txt").unlink()
    (tmp_path / "out" / "a").rmdir()
    folder.remove_recorded()  # nothing left of anyone: the record and the folder go
    assert not (tmp_path / "out").exists()


def test_a_failed_write_into_subfolders_leaves_only_what_was_there(tmp_path):
    folder = OutputFolder.claim(tmp_path / "out")
    with folder.writing(["from-b/c.nii.gz"]):
        (tmp_path / "out" / "from-b").mkdir()
        (tmp_path / "out" / "from-b" / "c.nii.gz").write_text("p2g")
    with pytest.raises(RuntimeError), folder.writing(["from-a/c.nii.gz", "from-b/e.nii.gz", "from-c/d/c.json"]):
        (tmp_path / "out" / "from-a").mkdir()
        (tmp_path / "out" / "from-c" / "d").mkdir(parents=True)  # created, nothing written: removed again
        raise RuntimeError("disk full")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [MANIFEST, "from-b"]
    assert folder.files() == ["from-b/c.nii.gz"]
    with pytest.raises(RuntimeError), OutputFolder.claim(tmp_path / "new").writing(["from-a/c.nii.gz"]):
        (tmp_path / "new" / "from-a").mkdir()
        raise RuntimeError("killed")
    assert not (tmp_path / "new").exists()


def test_orphan_temporaries_match_only_atomic_write_names(tmp_path):
    for name in (".last.pt.k2j4h5g6.pt", ".last.pt.toolong123.pt", "last.pt", ".last.pt.notes", ".best.pt.abcdefgh.pt"):
        (tmp_path / name).write_text("x")
    assert [p.name for p in remove_orphan_temporaries(tmp_path, ["last.pt"])] == [".last.pt.k2j4h5g6.pt"]
    assert len(list(tmp_path.iterdir())) == 4


@pytest.mark.parametrize("command", [
    ["pretrain", "--data", "{data}", "--config", "{config}"],
    ["finetune", "--task", "synthesis", "--data", "{data}", "--config", "{config}"],
    ["predict", "--model", "{model}", "--case-dir", "{data}"],
    ["data", "make-demo"],
    ["demo", "--quick"],
    ["reproduce", "table1", "--data", "{data}"],
    ["evaluate", "synthesis", "--pred", "{data}", "--ref", "{data}"],
    ["export", "--model", "{model}", "--format", "monai-swinunetr"],
])
def test_out_that_is_an_existing_file_of_the_user_is_one_sentence_and_untouched(command, tmp_path, model, capsys):
    data = brats21_case(tmp_path / "data")
    target = tmp_path / ("mine.csv" if command[0] == "evaluate" else "mine.pt" if command[0] == "export" else "mine")
    target.write_text("the user's own file")
    config = Path(__file__).parents[1] / "configs" / "tiny-cpu.yaml"
    argv = [a.format(data=data, model=model, config=config) for a in command]
    rc, err = p2g(capsys, *argv, "--out", target)
    assert rc == 2 and "Traceback" not in err and str(target) in err and err.count("\n") == 1, err
    assert target.read_text() == "the user's own file"
