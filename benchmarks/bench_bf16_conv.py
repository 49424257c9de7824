"""bf16 on the CPU: which 3D convolutions keep oneDNN's kernels, and what bf16 autocast does to a SwinUNETR step.

PyTorch sends a bf16 convolution to oneDNN only when oneDNN supports bf16 on this CPU
(`torch.ops.mkldnn._is_mkldnn_bf16_supported()`: x86 with AVX-512, natively fast with AVX512_BF16 or AMX);
otherwise it runs in the reference kernel `aten::slow_conv3d_forward`, 20-40x slower than fp32. Shapes, channel
counts, batch and channels-last do not change that choice; they only change how much bf16 gains.
To see the other regimes on an AVX-512 machine, limit oneDNN: `ONEDNN_MAX_CPU_ISA=AVX2` (no bf16 kernels) or
`ONEDNN_MAX_CPU_ISA=AVX512_CORE` (bf16 emulated without AVX512_BF16 instructions).

    python benchmarks/bench_bf16_conv.py [--threads N]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import common  # noqa: E402

# (in, out, kernel, stride, batch, spatial, channels-last): SwinUNETR's convolutions at tiny-cpu and paper size
SHAPES = [
    (4, 12, 3, 1, 4, (32, 32, 64), False),   # encoder1 at tiny-cpu (M inputs at full resolution)
    (4, 12, 3, 1, 4, (32, 32, 64), True),
    (12, 12, 3, 1, 4, (32, 32, 64), False),  # decoder1 at tiny-cpu
    (12, 12, 3, 1, 4, (32, 32, 64), True),
    (4, 12, 2, 2, 4, (32, 32, 64), False),   # patch embedding
    (48, 48, 3, 1, 1, (96, 96, 96), False),  # decoder1 at paper size
    (48, 48, 3, 1, 1, (96, 96, 96), True),
]


def kernel_names(fn) -> str:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    names = {e.key for e in prof.key_averages()}
    return ", ".join(sorted(k for k in names if "slow_conv" in k or "mkldnn_conv" in k)) or "?"


def main(argv=None) -> None:
    p = common.parser(__doc__)
    p.add_argument("--skip-paper", action="store_true", help="leave out the 96^3 shapes")
    args = p.parse_args(argv)
    device = common.setup(args)
    import torch

    fast = common.bf16_kernels(device)
    rows = [("oneDNN bf16 kernels here", f"{fast} (ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', 'unset')})")]
    for cin, cout, k, stride, batch, spatial, channels_last in SHAPES:
        if args.skip_paper and spatial[0] > 64:
            continue
        if not fast and spatial[0] > 64:
            continue  # minutes in the reference kernel; the small shapes already show the regime
        conv = torch.nn.Conv3d(cin, cout, k, stride=stride, padding=k // 2 if stride == 1 else 0).to(device)
        x = torch.randn(batch, cin, *spatial, device=device)
        if channels_last:
            conv = conv.to(memory_format=torch.channels_last_3d)
            x = x.to(memory_format=torch.channels_last_3d)
        x.requires_grad_()

        def fp32(conv=conv, x=x):
            conv(x).sum().backward()

        def bf16(conv=conv, x=x):
            with torch.autocast(device.type, torch.bfloat16):
                y = conv(x)
            y.float().sum().backward()

        t = common.interleaved({"fp32": fp32, "bf16": bf16}, device, 1 if not fast else args.repeats)
        name = f"{cin}->{cout} k{k}s{stride} x{batch} {'x'.join(map(str, spatial))}{' CL' if channels_last else ''}"
        rows.append((name, f"fp32 {t['fp32'] * 1e3:7.1f} ms, bf16 {t['bf16'] * 1e3:8.1f} ms "
                           f"({t['fp32'] / t['bf16']:.2f}x; bf16 in {kernel_names(bf16)})"))
    common.report("bf16 3D convolutions (forward + backward)", device, rows)


if __name__ == "__main__":
    main()
