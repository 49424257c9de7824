"""Pre-training step: the paper's loop (all modalities, one update) vs the authors' per-modality updates, and
peak memory against the number of modalities M (gradients are freed after each modality's backward, so it
must stay flat in M)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import common  # noqa: E402

MRI = ("t1n", "t1c", "t2w", "t2f")


def make_step(cfg, device, update: str):
    """One `Trainer.train_step` (the engine's loop: forward per modality, backward, update) on a fixed batch."""
    import tempfile

    import torch

    from p2gmed.config import replace_fields
    from p2gmed.models.network import build_model
    from p2gmed.train.engine import Trainer
    from p2gmed.train.pretrain_task import PretrainTask

    cfg = replace_fields(cfg, train={"update": update, "device": str(device), "lr": 1e-4})
    torch.manual_seed(0)
    m = len(cfg.data.modalities)
    model = build_model(cfg, out_channels=m)
    n = cfg.train.batch_size * cfg.data.crops_per_subject
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, m, *cfg.data.roi_size, generator=gen)
    batch = {
        "image": x,
        "available": torch.ones(n, m, dtype=torch.bool),
        "foreground": x[:, :1] > -0.5,
        "subject": [f"s{i // 2}" for i in range(n)],
    }
    trainer = Trainer(
        model,
        PretrainTask(model, cfg),
        lambda step: batch,
        cfg,
        tempfile.mkdtemp(),
        task_name="pretrain",
        out_channels=m,
        modalities=cfg.data.modalities,
        max_steps=10**9,
    )
    model.train()
    return trainer.train_step


def child(args) -> None:
    device = common.setup(args)
    m = int(args.child)
    cfg = common.tiny_config(MRI[:m])
    step = make_step(cfg, device, "per_step")
    common.sync(device)
    common.reset_peak(device)
    before = common.peak_mb(device)  # model, optimizer and batch in place; no step run yet
    seconds = common.timed(step, device, 1)
    print(json.dumps({"m": m, "step_mb": common.peak_mb(device) - before, "seconds": seconds}))


def main(argv=None) -> None:
    args = common.parser(__doc__).parse_args(argv)
    if args.child:
        return child(args)
    device = common.setup(args)
    cfg = common.tiny_config(MRI)
    paper = common.timed(make_step(cfg, device, "per_step"), device, args.repeats)
    authors = common.timed(make_step(cfg, device, "per_modality"), device, args.repeats)
    rows = [
        ("paper loop (1 update / step)", f"{paper:.3f} s/step"),
        ("authors' loop (1 update / modality)", f"{authors:.3f} s/step"),
        ("ratio paper / authors", f"{paper / authors:.2f}x"),
    ]
    if device.type != "cuda":  # the process RSS high-water mark is set by the libraries, not by a tiny step
        rows.append(("memory vs M", "measured on CUDA only: run with --device cuda"))
        common.report("pre-training step (tiny-cpu, ROI 32x32x64, F=12)", device, rows)
        return
    mems = []
    for m in (1, 2, 4):
        extra = ["--device", args.device, "--child", str(m)] + (
            ["--threads", str(args.threads)] if args.threads else []
        )
        mems.append(common.in_subprocess(__file__, extra))
    base = max(mems[0]["step_mb"], 1e-6)
    for r in mems:
        rows.append(
            (
                f"step memory, M={r['m']}",
                f"{r['step_mb']:.0f} MB ({r['step_mb'] / base:.2f}x M=1; step {r['seconds']:.3f} s)",
            )
        )
    rows.append(("memory measure", "peak allocated during the step (CUDA)"))
    common.report("pre-training step (tiny-cpu, ROI 32x32x64, F=12)", device, rows)


if __name__ == "__main__":
    main()
