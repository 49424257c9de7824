"""Real pre-training and tuning steps through the Trainer under bf16 and fp16 autocast (fp16: GradScaler).

fp16 convolutions are very slow on CPUs (about a minute for one tiny pre-training step), so the fp16 runs are
in the slow suite; the fast suite checks the fp16 mechanics (scaled backward, unscaled updates) with a stand-in
model in test_engine.py.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from p2gmed.config import replace_fields
from p2gmed.models.network import build_model
from p2gmed.models.weights import FRESH_PARTS
from p2gmed.train.engine import Trainer
from p2gmed.train.finetune import SynthesisTask
from p2gmed.train.pretrain_task import PretrainTask

MODALITIES = ("t1n", "t2w")


def _batch(cfg):
    g = torch.Generator().manual_seed(0)
    n, m = cfg.train.batch_size * cfg.data.crops_per_subject, len(cfg.data.modalities)
    image = torch.randn(n, m, *cfg.data.roi_size, generator=g)
    return {
        "image": image,
        "available": torch.ones(n, m, dtype=torch.bool),
        "foreground": image[:, :1] > -0.5,
        "subject": [f"s{i // 2}" for i in range(n)],
    }


@pytest.mark.parametrize(
    "kind,precision",
    [
        pytest.param("pretrain", "bf16", marks=pytest.mark.slow),
        pytest.param("synthesis", "bf16", marks=pytest.mark.slow),
        pytest.param("pretrain", "fp16", marks=pytest.mark.slow),
        pytest.param("synthesis", "fp16", marks=pytest.mark.slow),
    ],
)
def test_real_step_in_mixed_precision(tiny_cfg, tmp_path, kind, precision):
    # bf16 on a CPU: at 96^3 every feature map is 3^3 or larger, where oneDNN's bf16 weight gradients are right;
    # at the tiny ROI the 2x2x4 maps of the first decoder block get wrong, sometimes NaN gradients (device.py)
    roi = (96, 96, 96) if precision == "bf16" else tiny_cfg.data.roi_size
    cfg = replace_fields(
        tiny_cfg, data={"modalities": MODALITIES, "roi_size": roi}, train={"precision": precision, "device": "cpu"}
    )
    torch.manual_seed(0)
    model = build_model(cfg, len(MODALITIES))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    task = PretrainTask(model, cfg) if kind == "pretrain" else SynthesisTask(model, cfg, "p2g")
    batch = _batch(cfg)
    trainer = Trainer(
        model, task, lambda step: batch, cfg, tmp_path, task_name=kind, out_channels=len(MODALITIES),
        modalities=MODALITIES, max_steps=1,
    )  # fmt: skip
    trainer.fit()
    (record,) = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert set(task.terms) <= set(record) and all(math.isfinite(record[k]) for k in task.terms)
    assert trainer.scaler.is_enabled() == (precision == "fp16")
    assert model.prior.prior.grad is not None and model.prior.prior.grad.abs().sum() > 0  # O is trained
    if kind == "pretrain":  # every parameter takes part in pre-training, but the tuning-only subset weighting
        assert all(p.grad is not None for name, p in model.named_parameters() if not name.startswith(FRESH_PARTS))
    updated = any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    if precision == "fp16":  # an overflow at the initial loss scale skips the update and halves the scale
        assert updated != (trainer.scaler.get_scale() < 2.0**16)  # GradScaler starts at 2 ** 16
    else:
        assert updated
    saved = torch.load(tmp_path / "checkpoints/last.pt", weights_only=True)
    assert (saved["scaler"] is not None) == (precision == "fp16")


def test_auto_precision_is_bf16_only_on_gpus_with_bf16(monkeypatch):
    from p2gmed import device as device_mod

    monkeypatch.setattr(device_mod, "_cpu_has_native_bf16", lambda: False)  # e.g. an AVX2 or Skylake CPU
    assert device_mod.resolve_precision("auto", torch.device("cpu")) == "fp32"
    monkeypatch.setattr(device_mod, "_cpu_has_native_bf16", lambda: True)  # fast, but wrong weight gradients
    assert device_mod.resolve_precision("auto", torch.device("cpu")) == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert device_mod.resolve_precision("auto", torch.device("cuda", 0)) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert device_mod.resolve_precision("auto", torch.device("cuda", 0)) == "fp32"  # e.g. a V100: no fast bf16
    assert device_mod.resolve_precision("fp16", torch.device("cuda", 0)) == "fp16"  # explicit choices are kept


def test_bf16_on_a_cpu_without_onednn_bf16_warns_with_the_fix(monkeypatch, caplog):
    from p2gmed import device as device_mod

    monkeypatch.setattr(device_mod, "bf16_is_fast", lambda device: False)
    with caplog.at_level("WARNING"):
        assert device_mod.resolve_precision("bf16", torch.device("cpu")) == "bf16"
    assert "slower than fp32" in caplog.text and "train.precision fp32" in caplog.text
    caplog.clear()
    monkeypatch.setattr(device_mod, "bf16_is_fast", lambda device: True)
    with caplog.at_level("WARNING"):
        assert device_mod.resolve_precision("bf16", torch.device("cpu")) == "bf16"
    assert "wrong" in caplog.text and "slower" not in caplog.text
