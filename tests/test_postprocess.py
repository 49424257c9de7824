"""Lesion filters (`inference.lesions`): largest against MONAI's connected components, core on hand-worked maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms.utils import get_largest_connected_component_mask

from p2gmed.config import config_from_checkpoint, config_from_dict, config_to_dict, Config
from p2gmed.errors import InputError
from p2gmed.inference.postprocess import filter_lesions, keep_component_with_core, keep_largest_component


def _tumour_and_blobs() -> np.ndarray:
    seg = np.zeros((20, 20, 20), np.uint8)
    seg[2:8, 2:8, 2:8] = 2  # edema
    seg[4:6, 4:6, 4:6] = 3  # enhancing core inside it: the same lesion
    seg[8, 8, 8] = 1  # touches the edema corner diagonally: 26-connected, kept
    seg[15:17, 15:17, 15:17] = 2  # a separate blob far away
    seg[0, 19, 0] = 3
    return seg


def test_largest_keeps_the_lesion_monai_finds_with_all_its_labels():
    seg = _tumour_and_blobs()
    out = keep_largest_component(seg)
    largest = get_largest_connected_component_mask(torch.from_numpy(seg > 0), connectivity=3).numpy()
    assert out.dtype == seg.dtype
    np.testing.assert_array_equal(out, np.where(largest, seg, 0))
    assert out[8, 8, 8] == 1 and out[5, 5, 5] == 3 and out[15, 15, 15] == 0 and out[0, 19, 0] == 0


def test_core_keeps_a_small_tumour_and_drops_a_larger_edema_only_blob():
    seg = np.zeros((24, 24, 24), np.uint8)
    seg[1:11, 1:11, 1:11] = 2  # 1000 voxels of "edema" in bright white matter: no core
    seg[15:19, 15:19, 15:19] = 2  # the real tumour, 64 voxels ...
    seg[16:18, 16:18, 16:18] = 3  # ... with an enhancing core
    seg[19, 19, 19] = 1  # necrosis touching it diagonally: same lesion
    seg[0, 23, 23] = 3  # a lone enhancing voxel elsewhere: less core than the tumour
    out = keep_component_with_core(seg, (1, 3))
    expected = np.zeros_like(seg)
    expected[15:20, 15:20, 15:20] = seg[15:20, 15:20, 15:20]
    np.testing.assert_array_equal(out, expected)
    # the largest-lesion filter keeps the wrong one on the same map
    assert keep_largest_component(seg)[5, 5, 5] == 2 and keep_largest_component(seg)[16, 16, 16] == 0
    # through the named filter; a map without any core label falls back to the largest lesion
    np.testing.assert_array_equal(filter_lesions(seg, "core", "brats2023"), expected)
    no_core = np.where(seg == 2, 2, 0).astype(np.uint8)
    np.testing.assert_array_equal(filter_lesions(no_core, "core", "brats2018"), keep_largest_component(no_core))


def test_core_ties_go_to_the_larger_lesion_and_single_lesions_are_unchanged():
    seg = np.zeros((20, 20, 20), np.uint8)
    seg[1:4, 1:4, 1:4] = 2
    seg[2, 2, 2] = 3
    seg[10:16, 10:16, 10:16] = 2
    seg[12, 12, 12] = 3  # one core voxel each: the larger lesion wins
    out = keep_component_with_core(seg, (1, 3))
    assert out[12, 12, 12] == 3 and out[2, 2, 2] == 0
    empty = np.zeros((5, 5, 5), np.uint8)
    one = empty.copy()
    one[1:3, 1:3, 1:3] = 2
    for name in ("all", "largest", "core"):
        np.testing.assert_array_equal(filter_lesions(empty, name, "brats2023"), empty)
        np.testing.assert_array_equal(filter_lesions(one, name, "brats2023"), one)
    np.testing.assert_array_equal(filter_lesions(seg, "all", "brats2023"), seg)


def test_core_is_refused_for_labels_without_a_core_and_unknown_names_are_refused():
    seg = np.zeros((4, 4, 4), np.uint8)
    with pytest.raises(InputError, match="autopet"):
        filter_lesions(seg, "core", "autopet")
    np.testing.assert_array_equal(filter_lesions(seg, "largest", "autopet"), seg)
    with pytest.raises(InputError, match="inference.lesions"):
        filter_lesions(seg, "biggest", "brats2023")
    with pytest.raises(InputError, match="inference.lesions"):
        config_from_dict({"inference": {"lesions": "biggest"}})


def test_the_old_keep_largest_component_key_still_reads():
    for old, new in ((True, "largest"), (False, "all")):
        data = config_to_dict(Config())
        del data["inference"]["lesions"]
        data["inference"]["keep_largest_component"] = old
        assert config_from_checkpoint(data).inference.lesions == new
        assert config_from_dict(data).inference.lesions == new
    with pytest.raises(InputError, match="set only inference.lesions"):
        config_from_dict({"inference": {"keep_largest_component": True, "lesions": "core"}})
