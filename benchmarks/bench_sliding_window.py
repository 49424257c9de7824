"""Sliding-window inference throughput: stitching the whole volume on the CPU vs on the compute device."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import common  # noqa: E402


def main(argv=None) -> None:
    p = common.parser(__doc__)
    p.add_argument("--size", type=int, nargs=3, default=(48, 48, 80), help="volume D H W")
    args = p.parse_args(argv)
    device = common.setup(args)
    import torch

    from p2gmed.inference.sliding import sliding_predict
    from p2gmed.models.network import build_model

    cfg = common.tiny_config()
    model = build_model(cfg, out_channels=4).to(device).eval()
    image = torch.randn(1, 4, *args.size)
    available = torch.ones(4, dtype=torch.bool, device=device)

    def predictor(x):
        return model.forward_subset(x, available)

    def run(stitch: str):
        def go():
            with torch.inference_mode():
                sliding_predict(predictor, image, cfg.data.roi_size, overlap=0.25, sw_batch_size=2, device=device,
                                stitch=stitch, out_channels=4)
        return go

    voxels = image[0, 0].numel()
    same = common.timed(run("same"), device, args.repeats)
    cpu = common.timed(run("cpu"), device, args.repeats)
    common.report(f"sliding-window inference ({'x'.join(map(str, args.size))}, ROI {cfg.data.roi_size})", device, [
        ("stitch on the compute device", f"{same:.3f} s ({voxels / same / 1e6:.2f} Mvox/s)"),
        ("stitch on the CPU", f"{cpu:.3f} s ({voxels / cpu / 1e6:.2f} Mvox/s)"),
        ("ratio cpu / same", f"{cpu / same:.2f}x"),
    ])


if __name__ == "__main__":
    main()
