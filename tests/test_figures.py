"""Paper-style figures: files are written atomically, slices are the right ones, bad input is refused."""

from __future__ import annotations

import numpy as np
import pytest

from p2gmed.errors import InputError
from p2gmed.report.figures import (
    centre_index,
    orthogonal_slices,
    plot_segmentation_overlay,
    plot_synthesis_case,
)

SHAPE = (20, 24, 16)


def _volume(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vol = np.zeros(SHAPE, np.float32)
    vol[3:17, 4:20, 2:14] = 50 + 10 * rng.random((14, 16, 12))
    return vol


def test_orthogonal_slices_pick_the_index():
    vol = np.arange(np.prod(SHAPE)).reshape(SHAPE)
    sag, cor, axi = orthogonal_slices(vol, (2, 3, 4))
    assert sag.shape == (16, 24) and cor.shape == (16, 20) and axi.shape == (24, 20)
    assert sag[5, 7] == vol[2, 7, 5] and cor[5, 7] == vol[7, 3, 5] and axi[6, 7] == vol[7, 6, 4]


def test_centre_index_of_bounding_box():
    vol = np.zeros(SHAPE)
    vol[2:9, 4:7, 10:13] = 1
    assert centre_index(vol) == (5, 5, 11)
    assert centre_index(np.zeros(SHAPE)) == (10, 12, 8)


def _png_shape(path):
    from matplotlib.image import imread

    return imread(path).shape


def test_plot_synthesis_case_writes_png(tmp_path):
    gt = {"t1n": _volume(0), "t2f": _volume(1)}
    pred = {m: v + 1.0 for m, v in gt.items()}
    out = plot_synthesis_case(gt, pred, tmp_path / "figs" / "case.png", title="case")
    height, width, _ = _png_shape(out)
    assert width > 2 * height  # nine panels per row, two rows
    assert [p.name for p in (tmp_path / "figs").iterdir()] == ["case.png"]  # no temporary left behind


def test_plot_segmentation_overlay_writes_png(tmp_path):
    seg = np.zeros(SHAPE, np.uint8)
    seg[6:12, 8:14, 5:10] = 2
    seg[8:10, 10:12, 6:8] = 3
    out = plot_segmentation_overlay(_volume(2), seg, np.roll(seg, 2, axis=0), tmp_path / "seg.png")
    assert _png_shape(out)[0] > 100


def test_figures_refuse_mismatched_volumes(tmp_path):
    with pytest.raises(InputError, match="shape"):
        plot_synthesis_case({"t1n": _volume(0)}, {"t1n": _volume(0)[:-1]}, tmp_path / "a.png")
    with pytest.raises(InputError, match="at least one modality"):
        plot_synthesis_case({"t1n": _volume(0)}, {"t2w": _volume(0)}, tmp_path / "a.png")
    with pytest.raises(InputError, match="shape"):
        plot_segmentation_overlay(_volume(0), np.zeros(SHAPE), np.zeros((2, 2, 2)), tmp_path / "b.png")
    assert not any(tmp_path.iterdir())


def test_legend_names_labels_and_falls_back_to_integer_values():
    from p2gmed.data.layouts import LABEL_NAMES
    from p2gmed.report.figures import legend_entries

    # label volumes read from NIfTI are floats: 3.0 must read "ET", an unnamed 5.0 "label 5", never "label 5.0"
    assert legend_entries([1.0, 2.0, 3.0, 5.0], LABEL_NAMES["brats2023"]) == [
        "NCR (necrosis)", "ED (edema)", "ET (enhancing)", "label 5"]
    assert legend_entries([4.0], LABEL_NAMES["brats2018"]) == ["ET (enhancing)"]
    assert legend_entries([1.0, 2.0]) == ["label 1", "label 2"]
