"""Malformed inputs never give a traceback: a table of broken NIfTI headers, datalists and checkpoints fed to
`p2g data check`, `p2g predict` and the loaders; each gives exit 2 (or a clean pass) and one sentence naming the
file (docs/reliability.md)."""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from p2gmed.cli import main
from p2gmed.errors import InputError

SHAPE = (10, 9, 8)
MRI = ("t1n", "t1c", "t2w", "t2f")


def _header_bytes(data=None, affine=None) -> bytearray:
    data = np.random.default_rng(0).uniform(1, 2, SHAPE).astype(np.float32) if data is None else data
    return bytearray(nib.Nifti1Image(data, np.eye(4) if affine is None else affine).to_bytes())


def _patched(offset: int, fmt: str, *values) -> bytes:
    raw = _header_bytes()
    struct.pack_into("<" + fmt, raw, offset, *values)
    return bytes(raw)


#: name -> bytes of a broken .nii (written gzipped unless the name says "plain")
BROKEN_NIFTI = {
    "empty file": lambda: b"",
    "truncated header": lambda: bytes(_header_bytes()[:200]),
    "truncated data": lambda: bytes(_header_bytes()[:400]),
    "not a nifti": lambda: b"hello, I am a text file" * 30,
    "bad sizeof_hdr": lambda: _patched(0, "i", 123),
    "negative dimension": lambda: _patched(42, "h", -5),
    "zero dimensions": lambda: _patched(40, "h", 0),
    "dim0 too large": lambda: _patched(40, "h", 9),
    "four dimensions": lambda: bytes(_header_bytes(np.ones((*SHAPE, 2), np.float32))),
    "two dimensions": lambda: bytes(_header_bytes(np.ones(SHAPE[:2], np.float32))),
    "unknown datatype": lambda: _patched(70, "h", 1234),
    "complex data": lambda: bytes(_header_bytes(np.ones(SHAPE, np.complex64))),
    "rgb data": lambda: _patched(70, "hh", 128, 24),
    "vox_offset past the end": lambda: _patched(108, "f", 1e6),
    "zero pixdim": lambda: _patched(80, "fff", 0.0, 0.0, 0.0),
    "nan pixdim": lambda: _patched(80, "f", float("nan")),
    "singular affine": lambda: _patched(252, "hh", 0, 1) [:280] + struct.pack("<12f", *[0.0] * 12)
    + _patched(252, "hh", 0, 1)[328:],
    "nan affine": lambda: _patched(280, "f", float("nan")),
    "nan scale slope": lambda: _patched(112, "ff", float("nan"), 0.0),
    "nan values": lambda: bytes(_header_bytes(np.full(SHAPE, np.nan, np.float32))),
    "infinite values": lambda: bytes(_header_bytes(np.full(SHAPE, np.inf, np.float32))),
    "garbage gzip": lambda: b"\x1f\x8b" + b"\x00" * 100,
}


#: headers nibabel repairs or reads as intended: these may pass, but never with a traceback
READABLE = {"bad sizeof_hdr", "zero pixdim", "nan pixdim", "nan scale slope"}


def _write_broken(path: Path, name: str) -> None:
    raw = BROKEN_NIFTI[name]()
    if name == "garbage gzip":
        path.write_bytes(raw)
    else:
        path.write_bytes(gzip.compress(raw))


def _no_traceback(rc: int, err: str) -> None:
    assert rc in (0, 2), err
    assert "Traceback" not in err
    if rc == 2:
        assert err.startswith("p2g ") and "error:" in err


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from p2gmed.data.synthetic import make_demo

    root = tmp_path_factory.mktemp("clean") / "brats"
    make_demo(root, kind="brain", subjects=2, layout="brats23", seed=0, spacing=12.0)
    return root


@pytest.fixture(scope="module")
def model(untrained_pretrain_checkpoint):
    return untrained_pretrain_checkpoint


@pytest.mark.parametrize("broken", sorted(BROKEN_NIFTI))
def test_broken_nifti_headers_give_one_sentence_everywhere(broken, dataset, model, tmp_path, capsys):
    from p2gmed.data.check import check_dataset
    from p2gmed.data.read import read_dataset
    from p2gmed.inference.geometry import load_case

    root = tmp_path / "data"
    shutil.copytree(dataset, root)
    case = sorted(p for p in root.iterdir() if p.is_dir())[0]
    for path in case.glob("*.nii.gz"):  # the case on the grid of the broken file's header
        label = path.name.endswith("-seg.nii.gz")
        data = np.zeros(SHAPE, np.uint8) if label else np.random.default_rng(1).uniform(1, 2, SHAPE).astype(np.float32)
        nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    bad = next(case.glob("*-t2w.nii.gz"))
    _write_broken(bad, broken)

    rc = main(["data", "check", str(root)])
    err = capsys.readouterr().err
    _no_traceback(rc, err)
    assert rc == (0 if broken in READABLE else 2), err
    assert rc == 0 or bad.name in err, f"{broken}: data check did not name the file: {err}"

    rc = main(["predict", "--model", str(model), "--input", f"t2w={bad}", "--out", str(tmp_path / "pred"),
               "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    _no_traceback(rc, err)
    assert rc == (0 if broken in READABLE else 2), err
    assert rc == 0 or (bad.name in err and err.count("\n") == 1 and not (tmp_path / "pred").exists())

    subjects = read_dataset(root)  # finding files never reads them
    try:
        load_case(subjects[0].images)
        check_dataset(root)
    except InputError as exc:
        assert bad.name in str(exc)


def _datalist(tmp_path: Path, content) -> Path:
    path = tmp_path / "datalist.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


#: name -> datalist JSON (a string is written verbatim)
BROKEN_DATALISTS = {
    "not json": "{training: [",
    "top-level list": ["a.nii.gz"],
    "top-level number": 5,
    "training is a string": {"training": "a.nii.gz"},
    "entry is a string": {"training": ["case1_t1n.nii.gz"]},
    "entry is null": {"training": [None]},
    "entry is a number": {"training": [3]},
    "path is a number": {"training": [{"t1n": 5}]},
    "path is null": {"training": [{"t1n": None, "label": "x.nii.gz"}]},
    "path is a list": {"training": [{"t1n": ["a", "b"]}]},
    "path is empty": {"training": [{"t1n": ""}]},
    "label is a number": {"training": [{"t1n": "a.nii.gz", "label": 7}]},
    "image list without names": {"training": [{"image": ["a.nii.gz", "b.nii.gz"]}]},
    "image list with wrong names": {"modality": {"0": "banana"}, "training": [{"image": ["a.nii.gz"]}]},
    "image list with gappy indices": {"modality": {"0": "T1", "5": "FLAIR"}, "training": [{"image": ["a", "b"]}]},
    "modality is a list": {"modality": ["T1"], "training": [{"image": ["a.nii.gz"]}]},
    "labels is a list": {"labels": [1, 2], "training": [{"t1n": "a.nii.gz"}]},
    "unknown modality key only": {"training": [{"t9": "a.nii.gz"}]},
    "missing file": {"training": [{"t1n": "nowhere.nii.gz"}]},
    "not utf-8": "\udcff",
}


@pytest.mark.parametrize("broken", sorted(BROKEN_DATALISTS))
def test_broken_datalists_give_one_sentence(broken, tmp_path, model, capsys):
    from p2gmed.data.read import read_dataset

    content = BROKEN_DATALISTS[broken]
    if broken == "not utf-8":
        path = tmp_path / "datalist.json"
        path.write_bytes(b'{"training": [{"t1n": "caf\xe9.nii.gz"}]}')
    else:
        path = _datalist(tmp_path, content)
    rc = main(["data", "check", str(path)])
    err = capsys.readouterr().err
    _no_traceback(rc, err)
    assert rc == 2 and "datalist" in err
    rc = main(["predict", "--model", str(model), "--case-dir", str(path.parent), "--layout", "decathlon",
               "--out", str(tmp_path / "pred"), "--device", "cpu", "--no-progress"])
    _no_traceback(rc, capsys.readouterr().err)
    assert rc == 2
    try:  # the loader: an InputError naming the datalist, or subjects whose files are checked when loaded
        read_dataset(path, "decathlon")
    except InputError as exc:
        assert "datalist" in str(exc)


# ----------------------------------------------------------------------------------------- checkpoints


def _checkpoint_variant(good: Path, tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind.replace(' ', '-')}.pt"
    if kind == "nifti image":
        path = tmp_path / "t1.nii.gz"
        nib.save(nib.Nifti1Image(np.ones(SHAPE, np.float32), np.eye(4)), str(path))
    elif kind == "nifti renamed .pt":
        nib.save(nib.Nifti1Image(np.ones(SHAPE, np.float32), np.eye(4)), str(tmp_path / "x.nii"))
        shutil.move(tmp_path / "x.nii", path)
    elif kind == "pickled objects":
        torch.save({"args": argparse.Namespace(lr=1)}, path)
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[:5000])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "folder":
        path.mkdir()
    else:
        ckpt = torch.load(good, weights_only=True)
        if kind == "tensors of other shapes":
            key = next(k for k, v in ckpt["model"].items() if v.ndim >= 2)
            ckpt["model"][key] = torch.zeros(3, 3)
        elif kind == "unknown config key":
            ckpt["config"]["train"]["bogus"] = 1
        elif kind == "config not a mapping":
            ckpt["config"] = "tiny"
        elif kind == "unknown architecture":
            ckpt["architecture"] = "resnet"
        elif kind == "missing keys":
            del ckpt["model"]
        torch.save(ckpt, path)
    return path


@pytest.mark.parametrize("kind", ["nifti image", "nifti renamed .pt", "pickled objects", "truncated", "empty",
                                  "folder", "tensors of other shapes", "unknown config key", "config not a mapping",
                                  "unknown architecture", "missing keys"])
def test_broken_checkpoints_are_named_in_one_sentence(kind, model, dataset, tmp_path, capsys):
    bad = _checkpoint_variant(model, tmp_path, kind)
    case = sorted(p for p in dataset.iterdir() if p.is_dir())[0]
    rc = main(["predict", "--model", str(bad), "--case-dir", str(case), "--out", str(tmp_path / "pred"),
               "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    _no_traceback(rc, err)
    assert rc == 2 and str(bad) in err and err.count("\n") == 1, err
    assert not (tmp_path / "pred").exists()
    if kind in ("nifti image", "nifti renamed .pt"):
        assert "NIfTI image, not a p2gmed checkpoint" in err
    if kind == "pickled objects":
        assert "argparse.Namespace" in err and "for safety" in err


def test_all_zero_input_image_is_predicted_with_a_warning(model, tmp_path, caplog):
    zero = tmp_path / "sub_t1n.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.float32), np.eye(4)), str(zero))
    with caplog.at_level("WARNING"):
        rc = main(["predict", "--model", str(model), "--input", f"t1n={zero}", "--out", str(tmp_path / "pred"),
                   "--device", "cpu", "--no-progress"])
    assert rc == 0
    assert any("all zero" in r.getMessage() and str(zero) in r.getMessage() for r in caplog.records)


def test_export_never_overwrites_a_file_it_did_not_write(model, tmp_path, capsys):
    mine = tmp_path / "weights.pt"
    mine.write_text("the user's own file")
    rc = main(["export", "--model", str(model), "--format", "monai-swinunetr", "--out", str(mine)])
    assert rc == 2 and "not written by p2g" in capsys.readouterr().err and mine.read_text() == "the user's own file"
    out = tmp_path / "swin.pt"
    assert main(["export", "--model", str(model), "--format", "monai-swinunetr", "--out", str(out)]) == 0
    assert main(["export", "--model", str(model), "--format", "monai-swinunetr", "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["export", "--model", str(model), "--format", "monai-swinunetr", "--out", str(out), "--force"]) == 0
    assert main(["export", "--model", str(model), "--format", "monai-swinunetr", "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


@pytest.mark.parametrize(("content", "expected"), [
    ("extends: 5\n", "'extends' must name another YAML file, got 5"),
    ("extends: [a.yaml]\n", "'extends' must name another YAML file"),
    (b"train:\n  lr: 1.0e-4  # caf\xe9\n", "is not UTF-8 text"),
    (None, "is a folder; give a YAML file"),
])
def test_broken_config_files_are_one_sentence(content, expected, dataset, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    if content is None:
        config = tmp_path
    elif isinstance(content, bytes):
        config.write_bytes(content)
    else:
        config.write_text(content)
    rc = main(["pretrain", "--data", str(dataset), "--out", str(tmp_path / "run"), "--config", str(config)])
    err = capsys.readouterr().err
    assert rc == 2 and expected in err and str(config) in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
