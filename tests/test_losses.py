"""The four pre-training loss terms and their weighted combination, against hand-worked references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from p2gmed.losses import (
    ContrastiveLoss,
    DecompositionLoss,
    InvarianceLoss,
    RotationLoss,
    RunningAnchor,
    weighted_total,
)


# -- contrastive (Eq. 2) --------------------------------------------------------------------------------
def nt_xent_numpy(a: np.ndarray, b: np.ndarray, t: float) -> float:
    """NT-Xent written out term by term: 2N anchors, one positive each, the rest negatives."""
    views = np.concatenate([a, b])
    views = views / np.linalg.norm(views, axis=1, keepdims=True)
    n = len(a)
    total = 0.0
    for i in range(2 * n):
        partner = (i + n) % (2 * n)
        denominator = sum(math.exp(views[i] @ views[j] / t) for j in range(2 * n) if j != i)
        total += -math.log(math.exp(views[i] @ views[partner] / t) / denominator)
    return total / (2 * n)


@pytest.mark.parametrize("n", [2, 3, 5])
@pytest.mark.parametrize("temperature", [0.1, 0.5, 2.0])
def test_contrastive_matches_hand_worked_nt_xent(n, temperature):
    rng = np.random.default_rng(n)
    a, b = rng.normal(size=(2, n, 5))
    loss = ContrastiveLoss(temperature=temperature)(torch.tensor(a), torch.tensor(b))
    assert float(loss) == pytest.approx(nt_xent_numpy(a, b, temperature), rel=1e-5)


def test_contrastive_closed_form():
    # views of sub-volume 1 along e1, of sub-volume 2 along e2 (scaled: normalisation must remove it):
    # every anchor has similarity 1 to its positive and 0 to the two other-sub-volume views
    a = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 0.5]])
    t = 0.25
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2.0))
    assert float(ContrastiveLoss(t)(a, b)) == pytest.approx(expected, rel=1e-6)


def test_contrastive_symmetric_both_views_get_gradients_and_nonzero_at_two_crops():
    a = torch.randn(2, 8, requires_grad=True)
    b = torch.randn(2, 8, requires_grad=True)
    loss = ContrastiveLoss(0.5)(a, b)
    assert loss.item() > 0
    assert loss.item() == pytest.approx(ContrastiveLoss(0.5)(b, a).item(), rel=1e-6)
    loss.backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0


def test_contrastive_errors():
    with pytest.raises(ValueError, match="at least 2 sub-volumes"):
        ContrastiveLoss()(torch.randn(1, 4), torch.randn(1, 4))
    with pytest.raises(ValueError):
        ContrastiveLoss()(torch.randn(2, 4), torch.randn(3, 4))
    with pytest.raises(ValueError):
        ContrastiveLoss(temperature=0.0)


def test_contrastive_gather_is_identity_in_one_process():
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    assert torch.equal(ContrastiveLoss(gather=True)(a, b), ContrastiveLoss(gather=False)(a, b))


# -- equivariance (Eq. 5) -------------------------------------------------------------------------------
def test_rotation_loss_values():
    assert float(RotationLoss()(torch.zeros(3, 4), torch.tensor([0, 1, 3]))) == pytest.approx(math.log(4))
    logits = torch.tensor([[0.0, math.log(3.0), 0.0, 0.0]])  # p(class 1) = 3/6
    assert float(RotationLoss()(logits, torch.tensor([1]))) == pytest.approx(math.log(2))
    with pytest.raises(ValueError):
        RotationLoss()(torch.zeros(2, 3), torch.tensor([0, 1]))


# -- invariance (Eq. 3) ---------------------------------------------------------------------------------
def test_invariance_zero_when_equal_hand_value_and_detached_anchor():
    x = torch.randn(2, 3, 1, 1, 2, requires_grad=True)
    assert InvarianceLoss()(x, x.detach().clone()).item() == 0.0
    anchor = torch.zeros(2, 3, 1, 1, 2, requires_grad=True)
    fused = torch.full((2, 3, 1, 1, 2), 2.0, requires_grad=True)
    loss = InvarianceLoss()(fused, anchor)
    assert loss.item() == pytest.approx(4.0)
    loss.backward()
    assert anchor.grad is None and fused.grad is not None
    with pytest.raises(ValueError):
        InvarianceLoss()(torch.zeros(1, 2), torch.zeros(2, 2))


def test_invariance_zero_when_all_modalities_give_the_same_representation():
    same = torch.randn(2, 4, 1, 1, 1)
    anchor = RunningAnchor(2, "mean")
    rows = torch.arange(2)
    anchor.update(same, rows)
    for _ in range(3):
        assert float(InvarianceLoss()(same, anchor.get(rows))) == 0.0
        anchor.update(same, rows)


@pytest.mark.parametrize(("mode", "expected"), [("mean", 7 / 3), ("halving", 2.75)])
def test_running_anchor_mean_vs_halving(mode, expected):
    anchor = RunningAnchor(1, mode)
    rows = torch.tensor([0])
    assert not anchor.seen(rows).any()
    for value in (1.0, 2.0, 4.0):  # mean: 7/3; halving: ((1 + 2)/2 + 4)/2
        anchor.update(torch.full((1, 1, 1, 1, 1), value), rows)
    assert anchor.seen(rows).all()
    assert float(anchor.get(rows)) == pytest.approx(expected)


def test_running_anchor_counts_each_crop_separately():
    anchor = RunningAnchor(3, "mean")
    anchor.update(torch.tensor([1.0, 10.0]).view(2, 1, 1, 1, 1), torch.tensor([0, 2]))
    anchor.update(torch.tensor([3.0, 5.0]).view(2, 1, 1, 1, 1), torch.tensor([1, 2]))
    assert anchor.seen(torch.arange(3)).tolist() == [True, True, True]
    assert anchor.get(torch.arange(3)).flatten().tolist() == pytest.approx([1.0, 3.0, 7.5])


# -- decomposition (Eq. 6) ------------------------------------------------------------------------------
def _decomposition_case():
    g = torch.Generator().manual_seed(0)
    target = torch.randn(2, 3, 4, 4, 2, generator=g)
    prediction = torch.randn(2, 3, 4, 4, 2, generator=g)
    available = torch.tensor([[True, False, True], [True, True, True]])
    foreground = torch.rand(2, 1, 4, 4, 2, generator=g) > 0.4
    return prediction, target, available, foreground


def test_decomposition_zero_for_perfect_reconstruction():
    _, target, available, foreground = _decomposition_case()
    assert float(DecompositionLoss()(target.clone(), target, available, foreground)) == 0.0


def test_decomposition_ignores_missing_modalities_and_background():
    prediction, target, available, foreground = _decomposition_case()
    loss = DecompositionLoss()(prediction, target, available, foreground)
    changed_pred, changed_target = prediction.clone(), target.clone()
    changed_target[0, 1] = float("nan")  # crop 0 lacks modality 1
    changed_pred[0, 1] = 50.0
    background = (~foreground).expand_as(prediction)
    changed_pred[background] = 123.0
    changed_target[background & ~torch.isnan(changed_target)] = -7.0
    assert float(DecompositionLoss()(changed_pred, changed_target, available, foreground)) == pytest.approx(
        float(loss), rel=1e-6
    )


def test_decomposition_hand_value_with_background_weight():
    prediction = torch.zeros(1, 2, 1, 1, 2)
    target = torch.tensor([1.0, 2.0, 3.0, 100.0]).view(1, 2, 1, 1, 2)
    available = torch.tensor([[True, False]])
    foreground = torch.tensor([True, False]).view(1, 1, 1, 1, 2)
    # available channel 0: fg voxel error 1 (weight 1), bg voxel error 4 (weight 0.5): (1 + 2) / 1.5
    value = DecompositionLoss(background_weight=0.5)(prediction, target, available, foreground)
    assert float(value) == pytest.approx(2.0)
    assert float(DecompositionLoss()(prediction, target, available, foreground)) == pytest.approx(1.0)


def test_decomposition_shape_error():
    prediction, target, available, foreground = _decomposition_case()
    with pytest.raises(ValueError):
        DecompositionLoss()(prediction, target, available[:, :2], foreground)


# -- combination (Eq. 7, Eq. 8) ------------------------------------------------------------------------------
def test_weighted_total_hand_worked_and_every_term_needs_a_weight():
    terms = {"a": torch.tensor(2.0, requires_grad=True), "b": torch.tensor(3.0, dtype=torch.float16)}
    total = weighted_total(terms, {"a": 0.5, "b": 2.0, "unused": 100.0})
    assert float(total.detach()) == pytest.approx(0.5 * 2.0 + 2.0 * 3.0) and total.dtype == torch.float32
    total.backward()
    assert float(terms["a"].grad) == 0.5
    assert float(weighted_total({}, {"a": 1.0})) == 0.0
    with pytest.raises(KeyError):
        weighted_total({"c": torch.tensor(1.0)}, {"a": 1.0})


# --- the optional SSIM term of synthesis tuning (losses/structural.py) ---------------------------------------------


def _monai_reference(prediction, target, available):
    """MONAI's dense-kernel SSIMLoss on the same per-(crop, modality) [0, 1] mapping: an independent value."""
    from monai.losses import SSIMLoss

    keep = available.flatten()
    pred, ref = prediction.flatten(0, 1)[keep], target.flatten(0, 1)[keep]
    low = ref.flatten(1).amin(1).view(-1, 1, 1, 1)
    span = ref.flatten(1).amax(1).view(-1, 1, 1, 1) - low
    loss = SSIMLoss(spatial_dims=3, data_range=1.0, reduction="none")
    return loss(((pred - low) / span).unsqueeze(1), ((ref - low) / span).unsqueeze(1)).mean()


def test_separable_ssim_term_equals_monai_and_ignores_missing_modalities():
    from p2gmed.losses import StructuralSimilarityLoss

    gen = torch.Generator().manual_seed(3)
    target = torch.randn(2, 4, 16, 20, 24, generator=gen).cumsum(-1)  # smooth-ish structure
    prediction = target + 0.5 * torch.randn(target.shape, generator=gen)
    available = torch.tensor([[True, True, False, True], [False, True, True, True]])
    ours = StructuralSimilarityLoss()(prediction, target, available)
    torch.testing.assert_close(ours, _monai_reference(prediction, target, available), rtol=1e-4, atol=1e-5)
    poisoned = target.clone()
    poisoned[0, 2] = float("nan")  # a missing channel may hold anything
    poisoned_pred = prediction.clone()
    poisoned_pred[1, 0] = float("inf")
    torch.testing.assert_close(StructuralSimilarityLoss()(poisoned_pred, poisoned, available), ours)
    assert 0.0 < float(ours) < 1.0


def test_ssim_term_is_zero_for_a_perfect_prediction_and_grows_with_blur():
    from p2gmed.losses import StructuralSimilarityLoss

    gen = torch.Generator().manual_seed(4)
    target = torch.rand(1, 2, 16, 16, 16, generator=gen)
    available = torch.ones(1, 2, dtype=torch.bool)
    loss = StructuralSimilarityLoss()
    assert float(loss(target, target, available)) == pytest.approx(0.0, abs=1e-6)
    blurred = torch.nn.functional.avg_pool3d(target[0], 3, stride=1, padding=1, count_include_pad=False)[None]
    more = torch.nn.functional.avg_pool3d(blurred[0], 5, stride=1, padding=2, count_include_pad=False)[None]
    assert 0.0 < float(loss(blurred, target, available)) < float(loss(more, target, available))


def test_ssim_term_reaches_the_prediction_and_skips_constant_targets():
    from p2gmed.losses import StructuralSimilarityLoss

    target = torch.zeros(1, 2, 12, 12, 12)
    target[0, 1, 4:8] = 1.0
    prediction = torch.rand(1, 2, 12, 12, 12, requires_grad=True)
    available = torch.ones(1, 2, dtype=torch.bool)
    loss = StructuralSimilarityLoss()(prediction, target, available)
    loss.backward()
    assert prediction.grad[0, 0].abs().sum() == 0  # the constant target channel carries no structure
    assert prediction.grad[0, 1].abs().sum() > 0
    nothing = StructuralSimilarityLoss()(prediction, torch.zeros_like(target), available)
    assert float(nothing.detach()) == 0.0 and nothing.requires_grad
    with pytest.raises(ValueError, match="at least 11"):
        StructuralSimilarityLoss()(prediction[..., :8], target[..., :8], available)
