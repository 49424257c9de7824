"""A pre-training step against plain MONAI and against the hardware (issue goals 1 and 3).

Algorithm 1 (docs/method.md) runs, per modality, the encoder three times (the sample and two augmented views),
the prior, the fusion, the heads and the decoder. The baseline is the same passes in plain MONAI: per modality
one `SwinUNETR` forward/backward on the same input plus two `swinViT` forward/backwards when the contrastive
term is on, same ROI, feature size and batch, one AdamW update per step. The ratio is Algorithm 1's overhead.

FLOPs are counted with `torch.utils.flop_counter` (matrix products and convolutions, forward and backward) and
divided by the measured time; the device's practical peak is a large matrix product timed in the same run.

    python benchmarks/bench_step.py                 # tiny-cpu: ROI 32x32x64, feature size 12, 4 modalities
    python benchmarks/bench_step.py --size paper    # ROI 96^3, feature size 48, batch 1 (needs ~10 GB)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import common  # noqa: E402
from bench_pretrain_step import make_step  # noqa: E402

OVERHEAD_GOAL = 1.15
#: the SwinUNETR blocks `--compile` compiles, in P2GNet's backbone and in the plain network alike
BLOCKS = ("swinViT", "encoder1", "encoder2", "encoder3", "encoder4", "encoder10", "decoder5", "decoder4", "decoder3",
          "decoder2", "decoder1", "out")


def compile_blocks(swinunetr) -> None:
    """torch.compile every block of a MONAI SwinUNETR in place (P2GNet calls the blocks, not the whole net)."""
    for name in BLOCKS:
        getattr(swinunetr, name).compile()


def p2g_step(cfg, device, precision: str, compile_: bool = False):
    """One Algorithm-1 step through the engine (`Trainer.train_step`: every modality, one AdamW update) on a fixed
    random batch, under `precision`; returns the step function."""
    from p2gmed.config import replace_fields

    step = make_step(replace_fields(cfg, train={"precision": precision}), device, "per_step")
    if compile_:
        compile_blocks(step.__self__.model.backbone)
    return step


def augmentation_seconds(cfg, device) -> float:
    """Time of the two augmented views of every modality of one step (cuboid noise, drawn on the CPU)."""
    import torch

    from p2gmed.train.pretrain_task import cuboid_noise_augment

    m, n = len(cfg.data.modalities), cfg.train.batch_size * cfg.data.crops_per_subject
    x = torch.randn(n, m, *cfg.data.roi_size).to(device)
    gen = torch.Generator().manual_seed(0)
    return common.timed(lambda: [cuboid_noise_augment(x, gen) for _ in range(2 * m)], device, 3)


def plain_monai_step(cfg, device, compile_: bool = False):
    """The passes of one Algorithm-1 step in plain MONAI (see the module docstring); returns the step function."""
    import torch
    from monai.networks.nets import SwinUNETR

    torch.manual_seed(0)
    m, mc = len(cfg.data.modalities), cfg.model
    net = SwinUNETR(in_channels=m, out_channels=m, feature_size=mc.feature_size, depths=mc.depths,
                    num_heads=mc.num_heads, window_size=mc.window_size,
                    use_checkpoint=mc.activation_checkpointing).to(device)
    if compile_:
        compile_blocks(net)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    n = cfg.train.batch_size * cfg.data.crops_per_subject
    x = torch.randn(n, m, *cfg.data.roi_size, generator=torch.Generator().manual_seed(0)).to(device)
    views = 2 if cfg.loss.contrast > 0 else 0

    def step():
        opt.zero_grad(set_to_none=True)
        for i in range(m):
            xi = x[:, i : i + 1].expand(-1, m, -1, -1, -1)
            loss = torch.nn.functional.mse_loss(net(xi).float(), x)
            for _ in range(views):
                loss = loss + net.swinViT(xi, net.normalize)[4].float().mean()
            loss.backward()
        opt.step()

    return step


def autocast(device, precision: str):
    import torch

    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def with_precision(fn, device, precision: str):
    def go():
        with autocast(device, precision):
            fn()
    return go


def main(argv=None) -> None:
    p = common.parser(__doc__)
    p.add_argument("--size", choices=("tiny", "paper"), default="tiny")
    p.add_argument("--precision", nargs="+", choices=("fp32", "bf16"), default=("fp32", "bf16"))
    p.add_argument("--compile", action="store_true", help="torch.compile the SwinUNETR blocks of both networks")
    p.add_argument("--modalities", type=int, choices=(1, 2), default=2, help="paper size: modalities per step")
    args = p.parse_args(argv)
    device = common.setup(args)
    import torch

    if args.size == "paper":
        # batch 1, one crop, two modalities: the contrastive term (which needs two crops) is measured at tiny size
        if device.type == "cpu":
            common.require_memory(10, "the paper-size step on the CPU")
        cfg = common.paper_config(("t1n", "t1c")[: args.modalities], data={"crops_per_subject": 1},
                                  loss={"contrast": 0.0})
    else:
        cfg = common.tiny_config()
    repeats = args.repeats
    n = cfg.train.batch_size * cfg.data.crops_per_subject
    title = (f"pre-training step vs plain MONAI ({args.size}: ROI {'x'.join(map(str, cfg.data.roi_size))}, "
             f"F={cfg.model.feature_size}, {len(cfg.data.modalities)} modalities, {n} crop(s), "
             f"contrast {'on' if cfg.loss.contrast > 0 else 'off'}{', torch.compile' if args.compile else ''})")
    monai_step = plain_monai_step(cfg, device, args.compile)
    # a paper-size step on the CPU takes minutes: per precision one counting round as the warm-up, then one timed
    # round; elsewhere FLOPs are counted once (fp32) and every precision gets a warm-up and alternating rounds
    single = args.size == "paper" and device.type == "cpu"
    flops: dict[str, float] = {}
    rows: list[tuple[str, str]] = []
    seconds = {}
    for precision in args.precision:
        peak = common.matmul_rate(device, torch.float32 if precision == "fp32" else torch.bfloat16)
        if precision == "bf16" and not common.bf16_kernels(device):
            rows.append(("bf16", "skipped: no fast bf16 kernels on this device (oneDNN bf16 needs AVX-512); "
                                 "bf16 3D convolutions would run in the reference kernel, 20-40x slower"))
            continue
        fns = {"p2g": p2g_step(cfg, device, precision, args.compile),
               "monai": with_precision(monai_step, device, precision)}
        if single or not flops:  # the counting round is also the warm-up (first-touch allocation, oneDNN set-up)
            flops = {name: common.count_flops(fn) for name, fn in fns.items()}
            t = common.interleaved(fns, device, repeats, warmup=False)
        else:
            t = common.interleaved(fns, device, repeats)
        seconds[precision] = t
        ratio = t["p2g"] / t["monai"]
        verdict = "met" if ratio <= OVERHEAD_GOAL else "NOT met"
        rows += [
            (f"{precision} Algorithm 1 step", f"{t['p2g']:.3f} s ({flops['p2g'] / t['p2g'] / 1e9:.1f} GFLOP/s, "
                                              f"{100 * flops['p2g'] / t['p2g'] / peak:.0f}% of matmul)"),
            (f"{precision} plain MONAI passes", f"{t['monai']:.3f} s ({flops['monai'] / t['monai'] / 1e9:.1f} "
                                                f"GFLOP/s, {100 * flops['monai'] / t['monai'] / peak:.0f}% of matmul)"),
            (f"{precision} overhead (goal <= {OVERHEAD_GOAL}x)", f"{ratio:.2f}x, {verdict}"),
            (f"{precision} matmul 4096^2 (the device's peak)", f"{peak / 1e9:.1f} GFLOP/s"),
        ]
    if flops:
        rows.insert(0, ("FLOPs per step", f"Algorithm 1 {flops['p2g'] / 1e9:.1f} G, plain MONAI "
                                          f"{flops['monai'] / 1e9:.1f} G ({flops['p2g'] / flops['monai']:.2f}x)"))
    if "fp32" in seconds and "bf16" in seconds:
        rows.append(("bf16 speed-up of the Algorithm 1 step",
                     f"{seconds['fp32']['p2g'] / seconds['bf16']['p2g']:.2f}x (plain MONAI "
                     f"{seconds['fp32']['monai'] / seconds['bf16']['monai']:.2f}x)"))
    if cfg.loss.contrast > 0 and "fp32" in seconds:
        aug = augmentation_seconds(cfg, device)
        rows.append(("of which augmented views (CPU cuboid noise)",
                     f"{aug:.3f} s/step ({aug / seconds['fp32']['p2g']:.0%} of the fp32 step)"))
    rows.append(("timing", f"median of {repeats} alternating round(s) after a warm-up (the FLOP-counting round)"))
    common.report(title, device, rows)


if __name__ == "__main__":
    main()
