"""Segmentation loss and label mapping against hand-worked values (mmFormer's criterions.py formulas)."""

from __future__ import annotations

import math

import pytest
import torch

from p2gmed.data.layouts import classes_to_labels, labels_to_classes, num_classes, region_masks
from p2gmed.errors import InputError
from p2gmed.losses.objective import weighted_total
from p2gmed.losses.segmentation import mmformer_dice, weighted_cross_entropy


def _two_voxels():
    """Voxel a: logits (0, ln 3), p = (1/4, 3/4), label 1; voxel b: logits (0, 0), p = (1/2, 1/2), label 0."""
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]]).reshape(1, 2, 1, 1, 2)
    target = torch.tensor([1, 0]).reshape(1, 1, 1, 1, 2)
    return logits, target


def test_weighted_ce_hand_worked():
    logits, target = _two_voxels()
    # each class holds half the voxels -> weight 1 - 1/2 = 1/2 for both; mean over the two voxels
    expected = (-0.5 * math.log(0.75) - 0.5 * math.log(0.5)) / 2
    assert weighted_cross_entropy(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_weighted_ce_unbalanced_weights_and_clamp():
    # three voxels, two of class 0 (weight 1/3) and one of class 1 (weight 2/3); the class-1 voxel is
    # predicted with p ~ 2e-9, clamped to 0.005 before the log
    logits = torch.tensor([[0.0, 0.0, 20.0], [0.0, math.log(3.0), 0.0]]).reshape(1, 2, 1, 1, 3)
    target = torch.tensor([0, 0, 1]).reshape(1, 1, 1, 1, 3)
    expected = (-(1 / 3) * math.log(0.5) - (1 / 3) * math.log(0.25) - (2 / 3) * math.log(0.005)) / 3
    assert weighted_cross_entropy(logits, target).item() == pytest.approx(expected, rel=1e-5)


def test_weighted_ce_weights_are_per_sample():
    # sample 0 is all background (weight 1 - 1 = 0 -> no loss), sample 1 half/half (weights 1/2)
    logits = torch.zeros(2, 2, 1, 1, 2)
    target = torch.tensor([[0, 0], [0, 1]]).reshape(2, 1, 1, 1, 2)
    expected = (0 + 0 + 2 * (-0.5 * math.log(0.5))) / 4
    assert weighted_cross_entropy(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_dice_hand_worked_and_total():
    logits, target = _two_voxels()
    # class 0: intersection 0.5 (voxel b), sum p0 = 0.75, sum y0 = 1 -> 1 / 1.75
    # class 1: intersection 0.75 (voxel a), sum p1 = 1.25, sum y1 = 1 -> 1.5 / 2.25
    dice = 1 - (1 / 1.75 + 1.5 / 2.25) / 2
    ce = (-0.5 * math.log(0.75) - 0.5 * math.log(0.5)) / 2
    terms = {"dice": mmformer_dice()(logits, target), "ce": weighted_cross_entropy(logits, target)}
    assert terms["dice"].item() == pytest.approx(dice, rel=1e-5)
    assert terms["ce"].item() == pytest.approx(ce, rel=1e-6)
    assert weighted_total(terms, {"dice": 2.0, "ce": 0.5}).item() == pytest.approx(
        2.0 * dice + 0.5 * ce, rel=1e-5
    )


def test_loss_falls_for_a_better_prediction_and_has_gradients():
    target = torch.randint(0, 4, (2, 1, 4, 4, 4))
    good = torch.nn.functional.one_hot(target[:, 0], 4).movedim(-1, 1).float() * 6.0
    bad = torch.zeros_like(good, requires_grad=True)
    dice = mmformer_dice()

    def loss(logits, target):
        return dice(logits, target) + weighted_cross_entropy(logits, target)

    assert loss(good, target) < loss(bad, target)
    loss(bad, target).backward()
    assert bad.grad is not None and bad.grad.abs().sum() > 0


def test_label_mapping_per_convention():
    brats18 = torch.tensor([0, 1, 2, 4])
    assert labels_to_classes(brats18, "brats2018").tolist() == [0, 1, 2, 3]
    assert classes_to_labels(torch.tensor([0, 1, 2, 3]), "brats2018").tolist() == [0, 1, 2, 4]
    assert labels_to_classes(torch.tensor([0, 3, 1]), "brats2023").tolist() == [0, 3, 1]
    assert labels_to_classes(torch.tensor([1, 0]), "autopet").tolist() == [1, 0]
    assert (num_classes("brats2023"), num_classes("brats2018"), num_classes("autopet")) == (4, 4, 2)


def test_illegal_label_value_is_an_input_error():
    with pytest.raises(InputError, match=r"\[3\]"):
        labels_to_classes(torch.tensor([0, 3, 4]), "brats2018")
    with pytest.raises(InputError, match="convention"):
        num_classes("brats1999")


def test_regions():
    label = torch.tensor([0, 1, 2, 3])
    regions = region_masks(label, "brats2023")
    assert regions["wt"].tolist() == [False, True, True, True]
    assert regions["tc"].tolist() == [False, True, False, True]
    assert regions["et"].tolist() == [False, False, False, True]


def test_uniform_ce_is_torch_cross_entropy_where_nothing_is_clamped():
    # no probability below the clamp: the uniform weighting is plain cross-entropy (nnU-Net's CE term)
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 3, 3, 5) * 0.5
    target = torch.randint(0, 4, (2, 1, 3, 3, 5))
    expected = torch.nn.functional.cross_entropy(logits, target[:, 0])
    assert weighted_cross_entropy(logits, target, "uniform").item() == pytest.approx(expected.item(), rel=1e-5)
    # an all-background sample, which the mmFormer weighting ignores (weight 0), counts under the uniform one
    background = torch.zeros(1, 1, 3, 3, 5, dtype=torch.long)
    assert weighted_cross_entropy(logits[:1], background).item() == 0.0
    assert weighted_cross_entropy(logits[:1], background, "uniform").item() > 0.1
    with pytest.raises(ValueError, match="weighting"):
        weighted_cross_entropy(logits, target, "balanced")
