"""keep_largest_component against scipy's connected-component labelling."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from p2gmed.inference.postprocess import keep_largest_component


def test_keeps_the_largest_lesion_with_all_its_labels_and_drops_far_blobs():
    seg = np.zeros((20, 20, 20), np.uint8)
    seg[2:8, 2:8, 2:8] = 2  # edema
    seg[4:6, 4:6, 4:6] = 3  # enhancing core inside it: the same lesion
    seg[8, 8, 8] = 1  # touches the edema corner diagonally: 26-connected, kept
    seg[15:17, 15:17, 15:17] = 2  # a separate blob far away
    seg[0, 19, 0] = 3
    out = keep_largest_component(seg)
    components, n = ndimage.label(seg > 0, structure=np.ones((3, 3, 3)))
    sizes = ndimage.sum(np.ones_like(seg), components, range(1, n + 1))
    largest = components == 1 + int(np.argmax(sizes))
    assert n == 3 and out.dtype == seg.dtype
    np.testing.assert_array_equal(out, np.where(largest, seg, 0))
    assert out[8, 8, 8] == 1 and out[5, 5, 5] == 3 and out[15, 15, 15] == 0


def test_empty_and_single_lesion_maps_are_unchanged():
    empty = np.zeros((5, 5, 5), np.uint8)
    np.testing.assert_array_equal(keep_largest_component(empty), empty)
    one = empty.copy()
    one[1:3, 1:3, 1:3] = 2
    np.testing.assert_array_equal(keep_largest_component(one), one)
