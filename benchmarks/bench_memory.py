"""Peak memory of a pre-training step with and without activation checkpointing (goal 4).

Each measurement runs in a fresh process: on CUDA the peak allocated during the step, on the CPU the growth of
the process's resident set during the step (its high-water mark minus the resident size just before).

    python benchmarks/bench_memory.py [--size tiny|paper] [--device cuda]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import common  # noqa: E402
from bench_pretrain_step import make_step  # noqa: E402


def config(size: str, checkpointing: bool):
    model = {"activation_checkpointing": checkpointing}
    if size == "paper":  # batch 1, one crop, one modality (each modality's graph is freed by its backward)
        return common.paper_config(("t1n",), data={"crops_per_subject": 1}, loss={"contrast": 0.0}, model=model)
    return common.tiny_config(model=model)


def resident_mb() -> float:
    """This process's resident set now (Linux), in MB."""
    import os

    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(args) -> None:
    device = common.setup(args)
    cfg = config(args.size, args.child == "on")
    step = make_step(cfg, device, "per_step")
    common.sync(device)
    common.reset_peak(device)
    before = common.peak_mb(device) if device.type == "cuda" else resident_mb()
    start = time.perf_counter()
    step()  # one step: the first is the one whose peak a run must survive
    common.sync(device)
    seconds = time.perf_counter() - start
    print(json.dumps({"step_mb": common.peak_mb(device) - before, "seconds": seconds}))


BRATS23_TRAIN = 1251  # BraTS 2023 GLI training subjects


def cache_rows(data_cfg) -> list[tuple[str, str]]:
    """Host memory of the cached training data per rank, from a 1 mm simulated brain (BraTS-like extent)."""
    import tempfile

    from p2gmed.data.read import read_dataset
    from p2gmed.data.synthetic import make_demo
    from p2gmed.data.volumes import load_subject

    with tempfile.TemporaryDirectory() as tmp:
        make_demo(Path(tmp) / "b", kind="brain", subjects=1, seed=0, spacing=1.0)
        item = load_subject(read_dataset(Path(tmp) / "b")[0], data_cfg)
    parts = {"image": item.image, "foreground": item.foreground, "label": item.label}
    per_subject = sum(t.numel() * t.element_size() for t in parts.values())
    as_int64 = per_subject - item.label.numel() * (item.label.element_size() - 8)
    shape = "x".join(map(str, item.image.shape[1:]))
    rows = [(f"cached subject ({shape}, 4 modalities)", f"{per_subject / 2**20:.0f} MB "
                                                      f"({as_int64 / 2**20:.0f} MB with an int64 label)")]
    for world in (1, 2, 4, 8):
        shard = -(-BRATS23_TRAIN // world)
        rows.append((f"BraTS 2023 training cache per rank, {world} rank(s)",
                     f"{shard * per_subject / 2**30:.1f} GB ({shard} subjects)"))
    return rows


def main(argv=None) -> None:
    p = common.parser(__doc__)
    p.add_argument("--size", choices=("tiny", "paper"), default="tiny")
    args = p.parse_args(argv)
    if args.child:
        return child(args)
    device = common.setup(args)
    if args.size == "paper" and device.type == "cpu":
        common.require_memory(10, "the paper-size step on the CPU")
    cfg = config(args.size, False)
    extra = ["--device", args.device, "--size", args.size] + (["--threads", str(args.threads)] if args.threads else [])
    runs = {name: common.in_subprocess(__file__, [*extra, "--child", name]) for name in ("off", "on")}
    off, on = runs["off"], runs["on"]
    measure = "peak allocated during the step (CUDA)" if device.type == "cuda" else "resident-set growth during the step"
    common.report(f"pre-training step memory ({args.size}: ROI {'x'.join(map(str, cfg.data.roi_size))}, "
                  f"F={cfg.model.feature_size}, {len(cfg.data.modalities)} modalities, "
                  f"{cfg.train.batch_size * cfg.data.crops_per_subject} crop(s))", device, [
        ("without activation checkpointing", f"{off['step_mb']:.0f} MB (step {off['seconds']:.2f} s)"),
        ("with activation checkpointing", f"{on['step_mb']:.0f} MB (step {on['seconds']:.2f} s)"),
        ("memory saved / time added", f"{1 - on['step_mb'] / max(off['step_mb'], 1e-6):.0%} / "
                                      f"{on['seconds'] / off['seconds'] - 1:+.0%}"),
        ("measure", measure),
        *cache_rows(common.tiny_config().data),  # the four MRI modalities, native grid (the ROI plays no part)
    ])


if __name__ == "__main__":
    main()
