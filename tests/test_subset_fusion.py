"""Combining several modalities' encodings (models/subset_fusion.py): the mean, the learned weighting, the
input skip, and that tuning trains what prediction computes for every choice."""

import pytest
import torch
from test_models import tiny_config

from p2gmed.models.baselines import build_baseline
from p2gmed.models.network import build_model, stack_modalities
from p2gmed.models.subset_fusion import SubsetFusion, filled_input, masked_mean
from p2gmed.train import finetune
from p2gmed.train.finetune import SynthesisTask


def test_masked_mean_by_hand():
    stack = torch.tensor([[[1.0], [3.0], [100.0]], [[2.0], [4.0], [6.0]]]).view(2, 3, 1, 1)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    assert masked_mean(stack, mask).flatten().tolist() == [2.0, 4.0]


def test_filled_input_keeps_present_channels_and_fills_the_rest_with_their_mean():
    image = torch.arange(4.0).view(1, 4, 1, 1, 1).expand(1, 4, 2, 2, 2).clone()
    filled = filled_input(image, torch.tensor([[True, False, True, False]]))
    assert filled[0, :, 0, 0, 0].tolist() == [0.0, 1.0, 2.0, 1.0]  # channels 1 and 3 <- mean(0, 2)
    single = filled_input(image, torch.tensor([[False, False, False, True]]))
    assert torch.equal(single, image[:, 3:4].expand_as(image))  # one modality: the repeated input


def test_attention_starts_as_the_mean_and_ignores_absent_modalities():
    torch.manual_seed(0)
    fusion = SubsetFusion([3, 5], skips="attention")
    image = torch.randn(2, 4, 4, 4, 4)
    skips = [torch.randn(2, 4, 3, 2, 2, 2), torch.randn(2, 4, 5, 1, 1, 1)]
    mask = torch.tensor([[True, False, True, True], [False, True, False, False]])
    mean = SubsetFusion([3, 5], skips="mean")(image, mask, skips)
    for a, b in zip(fusion(image, mask, skips), mean, strict=True):
        torch.testing.assert_close(a, b)  # zero-initialised scores: equal weights
    for conv in fusion.scores:
        torch.nn.init.normal_(conv.weight)
    trained = fusion(image, mask, skips)
    assert not torch.allclose(trained[1][0], mean[1][0])
    changed = [s.clone() for s in skips]
    for s in changed:
        s[0, 1] = 1e3  # an absent modality's features
        s[1, [0, 2, 3]] = -1e3
    for a, b in zip(fusion(image, mask, changed), trained, strict=True):
        torch.testing.assert_close(a, b)
    # a single modality passes unchanged whatever the scores
    torch.testing.assert_close(trained[1][1], skips[0][1, 1])


@pytest.mark.parametrize("skips,input_skip", [("attention", "mean"), ("mean", "channels"), ("attention", "channels")])
def test_tuning_trains_what_forward_subset_predicts(skips, input_skip, monkeypatch):
    cfg = tiny_config(subset_skips=skips, input_skip=input_skip)
    torch.manual_seed(0)
    model = build_model(cfg, 4)
    if model.subset_fusion.scores is not None:
        for conv in model.subset_fusion.scores:
            torch.nn.init.normal_(conv.weight, std=0.5)
    task = SynthesisTask(model, cfg, "p2g")
    predictions = []
    original = task.task_terms
    monkeypatch.setattr(task, "task_terms", lambda p, b, r: predictions.append((p.detach(), r)) or original(p, b, r))
    subset = torch.tensor([[True, False, True, True], [False, True, True, False]])
    monkeypatch.setattr(finetune, "draw_subsets", lambda *_: subset)
    torch.manual_seed(1)
    batch = {"image": torch.randn(2, 4, 32, 32, 64), "available": torch.ones(2, 4, dtype=torch.bool),
             "foreground": torch.ones(2, 1, 32, 32, 64, dtype=torch.bool), "subject": ["a", "b"]}
    for terms in task.run_step(batch, torch.Generator().manual_seed(0)):
        terms["loss"].backward()
    ((prediction, rows),) = predictions
    assert rows.tolist() == [0, 1]
    if model.subset_fusion.scores is not None:
        assert model.subset_fusion.scores[0].weight.grad is not None  # the weighting is trained
    with torch.no_grad():
        for row in (0, 1):
            predicted = model.forward_subset(batch["image"][row : row + 1], subset[row])
            torch.testing.assert_close(prediction[row : row + 1], predicted, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------- every subset in one pass


def all_subsets(m: int = 4) -> torch.Tensor:
    """(2^m - 1, m) bool: every non-empty subset of m modalities."""
    return torch.tensor([[bool(k >> i & 1) for i in range(m)] for k in range(1, 2**m)])


def reference_subset(model, image, available):
    """One subset predicted step by step from the stages (encode each given modality, mean X', fuse skips)."""
    fused, stages = [], [[None] * 4 for _ in range(4)]
    for m in available.nonzero().flatten().tolist():
        z, skips = model.encode(image[:, m : m + 1].expand(-1, 4, -1, -1, -1))
        fused.append(model.fuse(z))
        for stage, feature in zip(stages, skips[1:], strict=True):
            stage[m] = feature
    mask = available.expand(image.shape[0], -1)
    skips = model.subset_fusion(image, mask, [stack_modalities(s) for s in stages])
    return model.decode(torch.stack(fused).mean(0), skips)


@pytest.mark.parametrize("skips", ["mean", "attention"])
def test_forward_subsets_equals_each_subset_alone_and_encodes_each_modality_once(skips, monkeypatch):
    torch.manual_seed(0)
    model = build_model(tiny_config(subset_skips=skips), 4).eval()
    if model.subset_fusion.scores is not None:  # a trained weighting, not the mean it starts as
        for conv in model.subset_fusion.scores:
            torch.nn.init.normal_(conv.weight, std=0.5)
    image = torch.randn(2, 4, 32, 32, 64)
    subsets = all_subsets()
    calls = []
    encode = model.encode
    monkeypatch.setattr(model, "encode", lambda x: calls.append(x) or encode(x))
    with torch.no_grad():
        together = model.forward_subsets(image, subsets)
        assert together.shape == (2, 15, 4, 32, 32, 64)
        assert len(calls) == 4  # one encoding per modality, not one per (subset, modality): 32
        for k, row in enumerate(subsets):
            expected = reference_subset(model, image, row)
            torch.testing.assert_close(together[:, k], expected, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(model.forward_subset(image, row), expected, rtol=1e-4, atol=1e-5)
        calls.clear()
        model.forward_subsets(image, subsets[[1, 2]])  # {t1c} and {t1n, t1c}: t2w and t2f are not encoded
        assert len(calls) == 2


def test_baseline_forward_subsets_is_one_masked_forward_per_subset():
    torch.manual_seed(0)
    model = build_baseline(tiny_config(), "swinunetr", 3).eval()
    image = torch.randn(1, 4, 32, 32, 64)
    subsets = all_subsets()
    with torch.no_grad():
        together = model.forward_subsets(image, subsets)
        assert together.shape == (1, 15, 3, 32, 32, 64)
        for k, row in enumerate(subsets):
            masked = image * row.view(1, 4, 1, 1, 1)
            torch.testing.assert_close(together[:, k], model.backbone(masked), rtol=1e-4, atol=1e-5)


def test_forward_subsets_refuses_an_empty_subset_and_wrong_shapes():
    model = build_model(tiny_config(), 4)
    image = torch.zeros(1, 4, 32, 32, 64)
    with pytest.raises(ValueError, match="every subset"):
        model.forward_subsets(image, torch.tensor([[True, False, False, False], [False] * 4]))
    with pytest.raises(ValueError, match="subsets"):
        model.forward_subsets(image, torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="at least one"):
        model.forward_subset(image, torch.zeros(4, dtype=torch.bool))
