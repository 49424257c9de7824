"""Weight loading, its key report, Tang et al. weights, export to stock MONAI and checkpoint -> model."""

from __future__ import annotations

import json

import pytest
import torch
from monai.networks.nets import SwinUNETR

from p2gmed.config import config_to_dict
from p2gmed.errors import InputError
from p2gmed.models.baselines import build_baseline, swinunetr_kwargs
from p2gmed.models.network import build_model
from p2gmed.models.swinvit_weights import init_from_swinvit
from p2gmed.models.weights import (
    export_monai_swinunetr,
    init_from_checkpoint,
    load_weights,
    model_from_checkpoint,
)
from p2gmed.train.checkpoint import save_checkpoint

SWIN = "backbone.swinViT."
OUT = "backbone.out."


def _randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Give every parameter distinct random values, so equal tensors can only come from a copy."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    return model


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _save(path, model, cfg, *, task="pretrain", architecture="p2g", out_channels=4, modalities=None):
    save_checkpoint(
        path,
        model=model,
        step=3,
        config=config_to_dict(cfg),
        task=task,
        architecture=architecture,
        out_channels=out_channels,
        modalities=modalities or list(cfg.data.modalities),
    )
    return path


@pytest.fixture
def pretrained(tiny_cfg, tmp_path):
    model = _randomise(build_model(tiny_cfg, 4), seed=1)
    return model, _save(tmp_path / "pre.pt", model, tiny_cfg)


def test_full_init_copies_everything_and_reinitialises_the_other_out_layer(tiny_cfg, pretrained):
    source, path = pretrained
    target = build_model(tiny_cfg, 3)  # e.g. 3 classes: the out layer has another shape
    before = _snapshot(target)
    report = init_from_checkpoint(target, path, modalities=tiny_cfg.data.modalities)
    after, src = target.state_dict(), source.state_dict()
    assert sorted(report.reinitialised) == [f"{OUT}conv.conv.bias", f"{OUT}conv.conv.weight"]
    assert report.clean and not report.missing
    for key, value in after.items():
        reference = before[key] if key.startswith(OUT) else src[key]
        assert torch.equal(value, reference), key


def test_output_layer_of_another_meaning_is_reinitialised(tiny_cfg, pretrained):
    source, path = pretrained  # a pre-training: its 4 outputs are modalities, not the 4 BraTS classes
    target = build_model(tiny_cfg, 4)
    before = _snapshot(target)
    report = init_from_checkpoint(target, path, task="segmentation")
    assert sorted(report.reinitialised) == [f"{OUT}conv.conv.bias", f"{OUT}conv.conv.weight"] and report.clean
    after = target.state_dict()
    assert torch.equal(after[f"{OUT}conv.conv.weight"], before[f"{OUT}conv.conv.weight"])
    assert torch.equal(
        after[f"{SWIN}patch_embed.proj.weight"], source.state_dict()[f"{SWIN}patch_embed.proj.weight"]
    )
    init_from_checkpoint(target, path, task="synthesis")  # images -> images: the output layer is kept
    assert torch.equal(
        target.state_dict()[f"{OUT}conv.conv.weight"], source.state_dict()[f"{OUT}conv.conv.weight"]
    )


def test_encoder_only_into_stock_swinunetr(tiny_cfg, pretrained):
    source, path = pretrained
    target = build_baseline(tiny_cfg, "swinunetr", 3)
    before = _snapshot(target)
    report = init_from_checkpoint(target, path, encoder_only=True)
    src = source.state_dict()
    swin_keys = [k for k in before if k.startswith(SWIN)]
    assert sorted(report.matched) == sorted(swin_keys)
    assert any(k.startswith("prior") for k in report.ignored)  # the prior is not part of the encoder
    for key, value in target.state_dict().items():
        assert torch.equal(value, src[key] if key.startswith(SWIN) else before[key]), key


def test_mismatched_checkpoint_is_refused_with_the_keys(tiny_cfg, pretrained, tmp_path):
    source, _ = pretrained
    state = source.state_dict()
    state.pop(f"{SWIN}patch_embed.proj.bias")
    state["backbone.decoder9.weight"] = torch.zeros(2)
    state[f"{SWIN}layers1.0.blocks.0.norm1.weight"] = torch.zeros(5)
    path = _save(tmp_path / "bad.pt", state, tiny_cfg)
    target = build_model(tiny_cfg, 4)
    before = _snapshot(target)
    with pytest.raises(InputError) as info:
        init_from_checkpoint(target, path)
    message = str(info.value)
    for key in (
        "patch_embed.proj.bias",
        "backbone.decoder9.weight",
        "layers1.0.blocks.0.norm1.weight",
        "--allow-mismatch",
    ):
        assert key in message
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())  # refused: untouched
    report = init_from_checkpoint(target, path, allow_mismatch=True)
    assert report.unexpected == ["backbone.decoder9.weight"] and len(report.shape_mismatch) == 1
    assert torch.equal(
        target.state_dict()[f"{SWIN}patch_embed.proj.weight"], state[f"{SWIN}patch_embed.proj.weight"]
    )


def test_other_modalities_are_refused(tiny_cfg, pretrained, tmp_path):
    source, _ = pretrained
    path = _save(tmp_path / "mods.pt", source, tiny_cfg, modalities=["t2f", "t1n", "t1c", "t2w"])
    with pytest.raises(InputError, match="modalities"):
        init_from_checkpoint(build_model(tiny_cfg, 4), path, modalities=tiny_cfg.data.modalities)


def test_encoder_transfers_exactly_to_another_modality_set(tiny_cfg, tmp_path):
    """Table 6: pre-trained on (ct, pet), tuned on (ct, pet, pet_nac): the encoder of a repeated modality agrees."""
    import copy

    pet_ct = copy.deepcopy(tiny_cfg)
    pet_ct.data.modalities = ("ct", "pet")
    source = _randomise(build_model(pet_ct, 2), seed=3)
    path = _save(tmp_path / "petct.pt", source, pet_ct, out_channels=2)
    nac = copy.deepcopy(tiny_cfg)
    nac.data.modalities = ("ct", "pet", "pet_nac")
    target = build_model(nac, 3)
    with pytest.raises(InputError, match="modalities"):  # all weights: the decoder's channels are positional
        init_from_checkpoint(target, path, modalities=nac.data.modalities)
    report = init_from_checkpoint(target, path, encoder_only=True, modalities=nac.data.modalities)
    assert any("patch_embed" in line for line in report.adapted)
    x = torch.randn(1, 1, 32, 32, 64)
    with torch.no_grad():
        z_source, _ = source.eval().encode(x.expand(-1, 2, -1, -1, -1))
        z_target, _ = target.eval().encode(x.expand(-1, 3, -1, -1, -1))
    torch.testing.assert_close(z_target, z_source, rtol=1e-4, atol=1e-4)


def test_encoder_init_carries_the_prior_into_p2gnet(tiny_cfg, tmp_path):
    """Table 6 (App. B.4): only the decoder is re-initialised; O, its attention and the fusion are pre-trained."""
    import copy

    pet_ct = copy.deepcopy(tiny_cfg)
    pet_ct.data.modalities = ("ct", "pet")
    source = _randomise(build_model(pet_ct, 2), seed=4)
    path = _save(tmp_path / "petct.pt", source, pet_ct, out_channels=2)
    nac = copy.deepcopy(tiny_cfg)
    nac.data.modalities = ("ct", "pet", "pet_nac")
    target = build_model(nac, 3)
    before = _snapshot(target)
    init_from_checkpoint(target, path, encoder_only=True, modalities=nac.data.modalities)
    src, after = source.state_dict(), target.state_dict()
    prior_keys = [k for k in after if k.startswith("prior.")]
    assert {k.split(".")[1] for k in prior_keys} == {"retrieval", "fuse"}
    for key in prior_keys:  # O, the attention and the fusion conv equal the pre-trained tensors
        assert torch.equal(after[key], src[key]), key
    decoder = [k for k in after if k.startswith("backbone.") and not k.startswith(SWIN)]
    assert decoder and all(torch.equal(after[k], before[k]) for k in decoder)  # the decoder stays fresh


@pytest.mark.parametrize("prefix", ["module.", "swin_vit.", "module.swin_vit."])
def test_tang_swinvit_weights_with_channel_rule(tiny_cfg, tmp_path, prefix):
    one_channel = _randomise(SwinUNETR(**{**swinunetr_kwargs(tiny_cfg, 1), "in_channels": 1}), seed=2).eval()
    state = {f"{prefix}{k}": v for k, v in one_channel.swinViT.state_dict().items()}
    state["rotation_head.weight"] = torch.zeros(4, 192)  # a pre-training head: ignored, not an error
    torch.save({"state_dict": state}, tmp_path / "model_swinvit.pt")
    model = build_model(tiny_cfg, 4).eval()
    report = init_from_swinvit(model, tmp_path / "model_swinvit.pt")
    assert report.ignored == ["rotation_head.weight"] and report.clean
    ours, theirs = model.state_dict(), one_channel.swinViT.state_dict()
    for key in theirs:
        if key != "patch_embed.proj.weight":
            assert torch.equal(ours[SWIN + key], theirs[key]), key
    # the documented rule: one modality repeated over the 4 channels embeds exactly as the 1-channel original
    x = torch.randn(1, 1, 32, 32, 64)
    with torch.no_grad():
        expected = one_channel.swinViT(x, True)[4]
        z, _ = model.encode(x.repeat(1, 4, 1, 1, 1))
    torch.testing.assert_close(z, expected, rtol=1e-4, atol=1e-5)


def test_swinvit_file_errors(tiny_cfg, tmp_path):
    model = build_model(tiny_cfg, 4)
    with pytest.raises(InputError, match="does not exist"):
        init_from_swinvit(model, tmp_path / "nothing.pt")
    (tmp_path / "junk.pt").write_text("not a torch file")
    with pytest.raises(InputError, match="junk.pt"):
        init_from_swinvit(model, tmp_path / "junk.pt")
    torch.save(
        {"state_dict": {"module.layers1.0.blocks.0.norm1.weight": torch.zeros(7)}}, tmp_path / "small.pt"
    )
    with pytest.raises(InputError, match="another shape"):
        init_from_swinvit(model, tmp_path / "small.pt")


def test_export_loads_strictly_into_monai_with_the_same_encoder_features(tiny_cfg, pretrained, tmp_path):
    source, path = pretrained
    source.eval()
    kwargs = export_monai_swinunetr(path, tmp_path / "export" / "swinunetr.pt")
    blob = torch.load(tmp_path / "export" / "swinunetr.pt", weights_only=True)
    net = SwinUNETR(**blob["monai_kwargs"]).eval()
    net.load_state_dict(blob["state_dict"], strict=True)
    assert json.loads((tmp_path / "export" / "swinunetr.pt.json").read_text())["monai_kwargs"] == kwargs
    x = torch.randn(1, 4, 32, 32, 64)
    with torch.no_grad():
        theirs = net.swinViT(x, net.normalize)
        ours_z, ours_skips = source.encode(x)
    torch.testing.assert_close(theirs[4], ours_z)
    for a, b in zip(theirs[:4], ours_skips[1:], strict=True):
        torch.testing.assert_close(a, b)


def test_export_refuses_unetr(tiny_cfg, tmp_path):
    model = build_baseline(tiny_cfg, "unetr", 2)
    path = _save(
        tmp_path / "unetr.pt", model, tiny_cfg, task="segmentation", architecture="unetr", out_channels=2
    )
    with pytest.raises(InputError, match="unetr"):
        export_monai_swinunetr(path, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


def test_model_from_checkpoint_rebuilds_each_architecture(tiny_cfg, pretrained, tmp_path):
    source, path = pretrained
    model, ckpt = model_from_checkpoint(path)
    assert type(model).__name__ == "P2GNet" and not model.training and ckpt["task"] == "pretrain"
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in model.state_dict().items())
    baseline = _randomise(build_baseline(tiny_cfg, "swinunetr", 2), seed=3)
    bpath = _save(
        tmp_path / "b.pt", baseline, tiny_cfg, task="segmentation", architecture="swinunetr", out_channels=2
    )
    rebuilt, _ = model_from_checkpoint(bpath)
    assert rebuilt.architecture == "swinunetr"
    assert torch.equal(
        rebuilt.state_dict()[f"{OUT}conv.conv.weight"], baseline.state_dict()[f"{OUT}conv.conv.weight"]
    )


def test_model_from_checkpoint_errors(tiny_cfg, pretrained, tmp_path):
    source, _ = pretrained
    with pytest.raises(InputError, match="architecture"):
        model_from_checkpoint(_save(tmp_path / "x.pt", source, tiny_cfg, architecture="resnet"))
    torch.save({"model": source.state_dict()}, tmp_path / "plain.pt")
    with pytest.raises(InputError, match="not a p2gmed checkpoint"):
        model_from_checkpoint(tmp_path / "plain.pt")


def test_load_weights_limits_missing_to_the_targets(tiny_cfg):
    model = build_model(tiny_cfg, 4)
    own = model.state_dict()
    source = {
        k: torch.ones_like(own[k]) for k in (f"{SWIN}patch_embed.proj.weight", f"{SWIN}patch_embed.proj.bias")
    }
    report = load_weights(model, source, source_name="mem", targets=(f"{SWIN}patch_embed.",))
    assert report.clean and len(report.matched) == 2
    assert bool((model.state_dict()[f"{SWIN}patch_embed.proj.bias"] == 1).all())
    with pytest.raises(InputError, match="patch_embed.proj.bias"):
        load_weights(
            model,
            {f"{SWIN}patch_embed.proj.weight": source[f"{SWIN}patch_embed.proj.weight"]},
            source_name="mem",
            targets=(f"{SWIN}patch_embed.",),
        )
