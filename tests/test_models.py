"""P2GNet, the prior block, the heads and the rotations phi (tiny: F=12, ROI (32, 32, 64), depths 1)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from p2gmed.config import Config
from p2gmed.models import build_model
from p2gmed.models.heads import ProjectionHead, RotationHead
from p2gmed.models.prior import PriorRetrieval, largest_divisor_at_most, prior_from_config
from p2gmed.models.rotation import rotate, sample_rotations, unrotate


def tiny_config(**model) -> Config:
    cfg = Config()
    cfg.data.roi_size = (32, 32, 64)
    cfg.model.feature_size = 12
    cfg.model.depths = (1, 1, 1, 1)
    cfg.model.num_heads = (1, 2, 4, 8)
    cfg.model.window_size = 4
    cfg.model.projection_dim = 16
    for key, value in model.items():
        setattr(cfg.model, key, value)
    return cfg.validate()


# -- rotations ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_unrotate_inverts_rotate(k):
    x = torch.randn(2, 3, 8, 8, 5)
    ks = torch.full((2,), k)
    assert torch.equal(unrotate(rotate(x, ks), ks), x)


def test_rotate_is_rot90_in_dims_2_3_per_sample():
    x = torch.randn(4, 2, 6, 6, 3)
    ks = torch.tensor([0, 1, 2, 3])
    out = rotate(x, ks)
    for b in range(4):
        assert torch.equal(out[b : b + 1], torch.rot90(x[b : b + 1], int(ks[b]), dims=(2, 3)))
    # a quarter turn is not the identity on a generic volume, four of them are
    assert not torch.equal(out[1], x[1])
    assert torch.equal(rotate(out, ks * 3), x)


def test_rotate_rejects_odd_turns_of_non_square_planes_and_bad_k():
    with pytest.raises(ValueError):
        rotate(torch.randn(1, 1, 4, 6, 2), torch.tensor([1]))
    with pytest.raises(ValueError):
        rotate(torch.randn(2, 1, 4, 4, 2), torch.tensor([1]))
    assert rotate(torch.randn(1, 1, 4, 6, 2), torch.tensor([2])).shape == (1, 1, 4, 6, 2)


def test_sample_rotations_reproducible_and_in_range():
    a = sample_rotations(500, torch.Generator().manual_seed(3))
    b = sample_rotations(500, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert set(a.tolist()) == {0, 1, 2, 3}


# -- prior ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("n", "limit", "expected"), [(27, 3, 3), (2, 3, 2), (8, 3, 2), (1, 3, 1), (12, 5, 4)]
)
def test_largest_divisor_at_most(n, limit, expected):
    assert largest_divisor_at_most(n, limit) == expected


@pytest.mark.parametrize(
    ("roi", "feature_size", "shape"),
    [((96, 96, 96), 48, (1, 768, 3, 3, 3)), ((64, 64, 64), 48, (1, 768, 2, 2, 2))],
)
def test_prior_shape_follows_roi_and_feature_size(roi, feature_size, shape):
    cfg = Config()
    cfg.data.roi_size = roi
    cfg.model.feature_size = feature_size
    block = prior_from_config(cfg.validate())
    assert tuple(block.prior.shape) == shape
    assert block.retrieval.attention.embed_dim == shape[2] * shape[3] * shape[4]


def test_tiny_model_prior_shape_and_forward():
    model = build_model(tiny_config(), out_channels=4)
    assert tuple(model.prior.prior.shape) == (1, 192, 1, 1, 2)
    assert model.prior.retrieval.num_heads == 2  # prior_heads 3 reduced to a divisor of d*h*w = 2
    x = torch.randn(1, 4, 32, 32, 64)
    z, skips = model.encode(x)
    assert z.shape == (1, 192, 1, 1, 2)
    assert [s.shape[1] for s in skips] == [4, 12, 24, 48, 96]
    assert model(x).shape == (1, 4, 32, 32, 64)


def test_attention_uses_channels_as_tokens():
    """Attention is equivariant to permuting its query tokens: permuting z's channels permutes z'."""
    torch.manual_seed(0)
    block = PriorRetrieval(6, (2, 2, 1), num_heads=2)
    z = torch.randn(2, 6, 2, 2, 1)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    assert torch.allclose(block(z[:, perm]), block(z)[:, perm], atol=1e-6)
    with pytest.raises(ValueError):
        block(torch.randn(2, 6, 2, 2, 2))


def test_no_prior_has_no_prior_parameters_and_matches_stock_swinunetr():
    model = build_model(tiny_config(use_prior=False), out_channels=3).eval()
    assert model.prior is None
    assert not any(isinstance(mod, nn.MultiheadAttention) for mod in model.modules())
    assert not any("prior" in name for name, _ in model.named_parameters())
    x = torch.randn(1, 4, 32, 32, 64)
    z, _ = model.encode(x)
    assert model.fuse(z) is z
    with torch.no_grad():
        assert torch.allclose(model(x), model.backbone(x), atol=1e-5)


def test_code_fusion_concatenates_z_twice_after_two_convs():
    model = build_model(tiny_config(fusion="code"), out_channels=4)
    assert model.prior.fuse.in_channels == 3 * 192
    assert sum(isinstance(mod, nn.Conv3d) for mod in model.prior.transfer.modules()) == 2
    assert build_model(tiny_config(), 4).prior.fuse.in_channels == 2 * 192
    z = torch.randn(2, 192, 1, 1, 2)
    assert model.fuse(z).shape == z.shape


def test_heads_read_z_or_fused_per_placement():
    z, fused_a, fused_b = torch.randn(3, 2, 192, 1, 1, 2)
    paper = build_model(tiny_config(), 4)
    rot_a, proj_a = paper.heads(z, fused_a)
    rot_b, proj_b = paper.heads(z, fused_b)
    assert rot_a.shape == (2, 4) and proj_a.shape == (2, 16)
    assert torch.equal(rot_a, rot_b) and torch.equal(proj_a, proj_b)
    code = build_model(tiny_config(head_placement="code"), 4)
    assert not torch.equal(code.heads(z, fused_a)[0], code.heads(z, fused_b)[0])


def test_heads_pool_globally_so_any_bottleneck_works():
    head, proj = RotationHead(8), ProjectionHead(8, 5)
    for size in [(1, 1, 1), (3, 3, 3), (2, 4, 1)]:
        assert head(torch.randn(2, 8, *size)).shape == (2, 4)
        assert proj(torch.randn(2, 8, *size)).shape == (2, 5)
    constant = torch.ones(1, 8, 2, 2, 2)
    assert torch.allclose(head(constant), head(torch.ones(1, 8, 1, 1, 1)))


def test_forward_subset():
    torch.manual_seed(0)
    model = build_model(tiny_config(), out_channels=4).eval()
    image = torch.randn(1, 4, 32, 32, 64)
    with torch.no_grad():
        single = model.forward_subset(image, torch.tensor([False, False, True, False]))
        assert torch.allclose(single, model(image[:, 2:3].repeat(1, 4, 1, 1, 1)), atol=1e-5)
        pair = torch.tensor([True, False, True, False])
        changed = image.clone()
        changed[:, [1, 3]] = 100.0  # unavailable channels must not matter
        out = model.forward_subset(image, pair)
        assert torch.allclose(out, model.forward_subset(changed, pair), atol=1e-5)
        assert not torch.allclose(out, single, atol=1e-3)
        # by hand: encode t1n and t2w alone, average X' and every skip feature (the learned weighting starts
        # as the mean), the input skip holds t1n and t2w in their channels and their mean in the others
        (z0, skips0), (z2, skips2) = (model.encode(image[:, i : i + 1].repeat(1, 4, 1, 1, 1)) for i in (0, 2))
        mean_skips = [(a + b) / 2 for a, b in zip(skips0, skips2, strict=True)]
        half = (image[:, 0] + image[:, 2]) / 2
        mean_skips[0] = torch.stack([image[:, 0], half, image[:, 2], half], dim=1)
        by_hand = model.decode((model.fuse(z0) + model.fuse(z2)) / 2, mean_skips)
        torch.testing.assert_close(out, by_hand, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError):
        model.forward_subset(image, torch.zeros(4, dtype=torch.bool))
    with pytest.raises(ValueError):
        model.encode(torch.randn(1, 3, 32, 32, 64))


def test_one_voxel_bottleneck_is_refused():
    from p2gmed.errors import InputError

    cfg = tiny_config()
    cfg.data.roi_size = (32, 32, 32)
    with pytest.raises(InputError, match="roi_size"):
        build_model(cfg, 4)
