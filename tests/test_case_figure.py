"""`p2g figure`: one PNG per case with the given, synthesized and reference modalities and segmentation overlays."""

from __future__ import annotations

import json

import matplotlib.image
import nibabel as nib
import numpy as np
import pytest

from p2gmed.cli import main
from p2gmed.errors import InputError
from p2gmed.report.case_figure import case_figure, lesion_centre

SHAPE = (24, 20, 16)
LPS = np.diag([-2.0, -2.0, 2.0, 1.0])


def test_lesion_centre_is_the_largest_lesion_of_the_first_nonempty_segmentation():
    seg = np.zeros(SHAPE, np.uint8)
    seg[2:4, 2:4, 2:4] = 1  # small
    seg[10:16, 8:12, 4:10] = 3  # large: centre (12.5, 9.5, 6.5) -> rounded
    assert lesion_centre(None, np.zeros(SHAPE), seg) == (12, 10, 6)
    image = np.zeros(SHAPE)
    image[4:8, 4:6, 2:4] = 1
    assert lesion_centre(np.zeros(SHAPE), fallback=image) == (5, 4, 2)
    with pytest.raises(InputError):
        lesion_centre(np.zeros(SHAPE))


def test_case_figure_rows_and_shape_check():
    rng = np.random.default_rng(0)
    vol = rng.uniform(1, 2, SHAPE)
    seg = np.zeros(SHAPE, np.uint8)
    seg[5:9, 5:9, 5:9] = 2
    fig = case_figure([("t1n given", vol), ("t2w synthesized", vol)], [("seg predicted", seg)], {"t2w": vol})
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert labels == ["t1n given", "t2w synthesized", "t2w reference", "seg predicted"]  # the given one has none
    assert len(fig.axes) == 4 * 3
    with pytest.raises(InputError, match="shape"):
        case_figure([("t1n given", vol)], [("seg", np.zeros((3, 3, 3)))])


def _write(path, data, affine=LPS):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))


def test_cli_writes_one_png_per_case_with_reference_rows(tmp_path, capsys):
    rng = np.random.default_rng(1)
    seg = np.zeros(SHAPE, np.uint8)
    seg[8:14, 6:12, 5:11] = 1
    for case in ("c1", "c2"):
        _write(tmp_path / "pred" / f"{case}_ct.nii.gz", rng.uniform(-100, 100, SHAPE).astype(np.float32))
        _write(tmp_path / "pred" / f"{case}_pet.nii.gz", rng.uniform(0, 5, SHAPE).astype(np.float32))
        _write(tmp_path / "pred" / f"{case}.nii.gz", seg)  # nnU-Net naming
        (tmp_path / "pred" / f"{case}.json").write_text(json.dumps(
            {"outputs": {"ct": {"source": "given"}, "pet": {"source": "synthesized"}, "seg": {"source": "segmented"}}}))
        _write(tmp_path / "ref" / f"{case}_pet.nii.gz", rng.uniform(0, 5, SHAPE).astype(np.float32))
        _write(tmp_path / "ref" / f"{case}_seg.nii.gz", seg)
    assert main(["figure", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"),
                 "--out", str(tmp_path / "fig")]) == 0
    assert "wrote 2 figure(s)" in capsys.readouterr().out
    png = matplotlib.image.imread(str(tmp_path / "fig" / "c1.png"))
    assert png.ndim == 3 and png.shape[0] > png.shape[1]  # 5 rows (ct, pet, pet reference, 2 segs) x 3 views
    assert main(["figure", "--pred", str(tmp_path / "pred"), "--out", str(tmp_path / "one"), "--case", "c2"]) == 0
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["c2.png"]
    assert main(["figure", "--pred", str(tmp_path / "pred"), "--out", str(tmp_path / "x"), "--case", "c9"]) == 2
    assert "c9" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_log_case_figure_writes_a_tensorboard_image(tmp_path):
    from torch.utils.tensorboard import SummaryWriter
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from p2gmed.report.case_figure import log_case_figure

    vol = np.random.default_rng(0).uniform(1, 2, SHAPE)
    with SummaryWriter(str(tmp_path)) as writer:
        log_case_figure(writer, "validation/case", 7, [("t1n given", vol), ("t2w synthesized", vol)],
                        references={"t2w": vol})
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    (image,) = events.Images("validation/case")
    assert image.step == 7 and image.height > 0 and image.width > 0  # 3 rows x 3 views
