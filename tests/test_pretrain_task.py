"""One pre-training step (Algorithm 1): gradients, switched-off terms, rotations, masking, reproducibility."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import p2gmed.train.pretrain_task as pretrain_task
from p2gmed.config import Config
from p2gmed.errors import DataError, InputError
from p2gmed.losses import ContrastiveLoss, DecompositionLoss, InvarianceLoss, RotationLoss
from p2gmed.models import build_model
from p2gmed.models.rotation import rotate
from p2gmed.models.weights import FRESH_PARTS
from p2gmed.train.engine import mean_terms
from p2gmed.train.pretrain_task import PretrainTask, cuboid_noise_augment

TERMS = {"contrast", "equivariance", "invariance", "decomposition"}


def tiny_config(modalities=("t1n", "t2w"), roi=(32, 32, 64), **loss) -> Config:
    cfg = Config()
    cfg.data.modalities = modalities
    cfg.data.roi_size = roi
    cfg.model.feature_size = 12
    cfg.model.depths = (1, 1, 1, 1)
    cfg.model.num_heads = (1, 2, 4, 8)
    cfg.model.window_size = 4
    cfg.model.projection_dim = 16
    for key, value in loss.items():
        setattr(cfg.loss, key, value)
    return cfg.validate()


def make_batch(n=2, m=2, roi=(32, 32, 64), seed=0, available=None):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(n, m, *roi, generator=g)
    return {
        "image": image,
        "available": torch.ones(n, m, dtype=torch.bool) if available is None else available,
        "foreground": torch.rand(n, 1, *roi, generator=g) > 0.3,
        "subject": [f"s{i // 2}" for i in range(n)],
    }


def make_task(cfg, seed=0):
    torch.manual_seed(seed)
    return PretrainTask(build_model(cfg, len(cfg.data.modalities)), cfg)


def run_step(task, batch, generator, passes=None):
    """What the engine does with a step's losses: a backward per yielded dict, then each term's mean."""
    records = []
    for terms in task.run_step(batch, generator):
        terms["loss"].backward()
        records.append({name: float(value.detach()) for name, value in terms.items()})
    if passes is not None:
        passes.append(len(records))
    return mean_terms(records, task.terms)


def test_every_parameter_gets_a_gradient_with_all_terms():
    cfg = tiny_config()
    task = make_task(cfg)
    calls = []
    generator = torch.Generator().manual_seed(1)
    result = run_step(task, make_batch(), generator, passes=calls)
    assert set(result) == TERMS | {"loss"}
    assert all(torch.isfinite(torch.tensor(v)) for v in result.values())
    assert result["contrast"] > 0 and result["invariance"] > 0
    assert calls == [2]  # one loss (one backward) per modality
    params = task.model.named_parameters()
    missing = [name for name, p in params if p.grad is None or not p.grad.abs().sum() > 0]
    # the learned subset weighting combines several modalities' encodings: tuning only (pre-training decodes
    # each modality alone, Algorithm 1), so it alone is left untouched
    assert missing and all(name.startswith(FRESH_PARTS) for name in missing)
    assert task.model.prior.prior.grad is not None


def _spy_forward(monkeypatch, cls):
    calls = []
    original = cls.forward

    def spy(self, *args, **kwargs):
        calls.append(args)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, "forward", spy)
    return calls


def _record(log: list, value):
    log.append(value)
    return value


@pytest.mark.parametrize(
    ("term", "cls"),
    [
        ("contrast", ContrastiveLoss),
        ("equivariance", RotationLoss),
        ("invariance", InvarianceLoss),
        ("decomposition", DecompositionLoss),
    ],
)
def test_zero_weight_term_is_not_computed(monkeypatch, term, cls):
    # the decoder (the slow part) is off except when decomposition is the term under test's complement
    weights = {name: 1.0 for name in TERMS}
    weights[term] = 0.0
    if term != "decomposition":
        weights["decomposition"] = 0.0
    cfg = tiny_config(**weights)
    task = make_task(cfg)
    loss_calls = _spy_forward(monkeypatch, cls)
    encode_calls, decode_calls = [], []
    encode, decode = task.model.encode, task.model.decode
    monkeypatch.setattr(task.model, "encode", lambda x: encode_calls.append(x.shape) or encode(x))
    monkeypatch.setattr(task.model, "decode", lambda *a: decode_calls.append(1) or decode(*a))
    result = run_step(task, make_batch(), torch.Generator().manual_seed(0))
    assert loss_calls == []
    assert term not in result
    assert set(result) == {n for n, w in weights.items() if w > 0} | {"loss"}
    views = 0 if term == "contrast" else 2  # augmented views are encoded only for the contrastive term
    assert len(encode_calls) == 2 * (1 + views)
    assert decode_calls == ([] if weights["decomposition"] == 0 else [1, 1])


def test_input_is_rotated_by_the_drawn_k_and_the_head_is_trained_on_k(monkeypatch):
    cfg = tiny_config(contrast=0.0, invariance=0.0, decomposition=0.0)
    task = make_task(cfg)
    batch = make_batch(n=4)
    drawn, inputs = [], []
    sample = pretrain_task.sample_rotations
    monkeypatch.setattr(pretrain_task, "sample_rotations", lambda n, g: _record(drawn, sample(n, g)))
    encode = task.model.encode
    monkeypatch.setattr(task.model, "encode", lambda x: inputs.append(x.detach()) or encode(x))
    loss_calls = _spy_forward(monkeypatch, RotationLoss)
    run_step(task, batch, torch.Generator().manual_seed(2))
    assert len(drawn) == len(inputs) == len(loss_calls) == 2
    assert [c[1].tolist() for c in loss_calls] == [k.tolist() for k in drawn]
    assert any(len(set(k.tolist())) > 1 for k in drawn)  # the draw is per sample
    matched = []
    for k, x in zip(drawn, inputs):
        for modality in range(2):
            repeated = batch["image"][:, modality : modality + 1].expand(-1, 2, -1, -1, -1)
            expected = torch.stack([torch.rot90(repeated[b], int(k[b]), dims=(1, 2)) for b in range(4)])
            if torch.equal(x, expected):
                matched.append(modality)
    assert sorted(matched) == [0, 1]  # each modality once, each rotated by its own draw


class IdentityLike(nn.Module):
    """Stand-in network whose decoder returns its (rotated) input: perfect when all modalities are equal."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.in_channels = 2

    def encode(self, x):
        return x.mean(dim=(2, 3, 4), keepdim=True), [x]

    def fuse(self, z):
        return z

    def decode(self, fused, skips):
        return skips[0] * self.scale


def test_task_unrotates_the_decoded_volume_before_comparing(monkeypatch):
    cfg = tiny_config(contrast=0.0, equivariance=0.0, invariance=0.0)
    task = PretrainTask(IdentityLike(), cfg)
    volume = torch.randn(2, 1, 32, 32, 64)
    batch = make_batch()
    batch["image"] = volume.repeat(1, 2, 1, 1, 1)  # both modalities identical: the identity is perfect
    monkeypatch.setattr(pretrain_task, "sample_rotations", lambda n, g: torch.ones(n, dtype=torch.long))
    result = run_step(task, batch, torch.Generator().manual_seed(0))
    assert result["decomposition"] == pytest.approx(0.0, abs=1e-12)
    # the check can fail: compared without un-rotating, the same output is far from the target
    rotated = rotate(batch["image"], torch.ones(2, dtype=torch.long))
    assert DecompositionLoss()(rotated, batch["image"], batch["available"], batch["foreground"]) > 0.5


def test_missing_modalities_are_masked_out_and_absent_modalities_skipped(monkeypatch):
    cfg = tiny_config(modalities=("t1n", "t1c", "t2w"), contrast=0.0, decomposition=0.0)
    task = make_task(cfg)
    available = torch.tensor([[True, False, False], [True, True, False], [True, True, False]])
    batch = make_batch(n=3, m=3, available=available)
    batch["image"][0, 1] = float("nan")  # a missing modality's channel must never be read
    encoded = []
    encode = task.model.encode
    monkeypatch.setattr(task.model, "encode", lambda x: encoded.append(x.shape[0]) or encode(x))
    result = run_step(task, batch, torch.Generator().manual_seed(0))
    assert sorted(encoded) == [2, 3]  # modality 1 on its 2 crops, modality 0 on all 3, modality 2 skipped
    assert all(torch.isfinite(torch.tensor(v)) for v in result.values())
    none = make_batch(n=2, m=3, available=torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(DataError, match="s0"):
        run_step(task, none, torch.Generator().manual_seed(0))


def test_same_generator_seed_gives_same_step_losses():
    cfg = tiny_config(decomposition=0.0)  # the decoder is deterministic and slow; the draws are what matters
    batch = make_batch()
    first_task, second_task = make_task(cfg, seed=5), make_task(cfg, seed=5)
    torch.manual_seed(1)  # different global RNG states: every draw must come from the step's generator
    first = run_step(first_task, batch, torch.Generator().manual_seed(9))
    torch.manual_seed(2)
    second = run_step(second_task, batch, torch.Generator().manual_seed(9))
    assert first == pytest.approx(second, rel=1e-5)


def test_task_losses_follow_the_config():
    task = make_task(tiny_config(contrast=0.0, equivariance=2.0, temperature=0.2, background_weight=0.1))
    assert task.weights == {"equivariance": 2.0, "invariance": 1.0, "decomposition": 1.0}
    assert task.terms == ("equivariance", "invariance", "decomposition", "loss")
    assert task.contrast.temperature == 0.2 and task.decomposition.background_weight == 0.1


def test_contrast_needs_two_subvolumes():
    cfg = tiny_config()
    cfg.data.crops_per_subject = 1
    with pytest.raises(InputError, match="crops_per_subject"):
        PretrainTask(build_model(cfg, 2), cfg)
    cfg.loss.contrast = 0.0
    PretrainTask(build_model(cfg, 2), cfg)


def test_cuboid_noise_augment_is_reproducible_and_leaves_input_alone():
    x = torch.zeros(2, 1, 16, 16, 16)
    a = cuboid_noise_augment(x, torch.Generator().manual_seed(0))
    b = cuboid_noise_augment(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and torch.equal(x, torch.zeros_like(x))
    assert a.min() >= 0 and a.max() <= 1  # noise is min-max scaled to [0, 1]
    changed = (a != 0).float().mean()
    assert 0 < changed <= 0.6  # at most 30% per pass (+ one block of overshoot), two passes


def test_without_rotations_the_inputs_are_the_stored_crops(monkeypatch):
    """`loss.rotate_inputs: false` (the ablations without equivariance): phi is the identity, so the
    decomposition of Eq. 6 is no hidden equivariance constraint."""
    cfg = tiny_config(contrast=0.0, equivariance=0.0, invariance=0.0, rotate_inputs=False)
    task = PretrainTask(IdentityLike(), cfg)
    batch = make_batch(n=4)
    inputs = []
    encode = task.model.encode
    monkeypatch.setattr(task.model, "encode", lambda x: inputs.append(x.detach()) or encode(x))
    list(task.run_step(batch, torch.Generator().manual_seed(2)))
    stored = [batch["image"][:, m : m + 1].expand(-1, 2, -1, -1, -1) for m in range(2)]
    assert len(inputs) == 2 and all(any(torch.equal(x, s) for s in stored) for x in inputs)


def test_equivariance_needs_rotated_inputs():
    with pytest.raises(InputError, match="rotate_inputs"):
        tiny_config(equivariance=1.0, rotate_inputs=False)
