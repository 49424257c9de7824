"""Is the personalised representation X' alive? Its spread over inputs and the decoder's use of it.

For each P2G checkpoint given, crops (`data.roi_size`, fixed seed) of the first `--subjects` subjects of DATA
are encoded one modality at a time as `P2GNet.forward_subset` does, and three numbers are printed (relative
root mean squares, X' = the fused bottleneck of docs/method.md §4):

- `between modalities`: X'_m of one crop against the crop's mean over its modalities. Small is what the
  invariance constraint (Eq. 3) asks for.
- `between crops`: X' of one modality against the mean over all crops (other places, other subjects). If this
  is ~0 too, X' no longer depends on the input at all: the representation has collapsed to a constant, which
  satisfies the invariance term trivially, and every prediction comes from the decoder's skip connections.
- `output change`: the decoder's output (softmax for segmentation) when X' is replaced by its mean over the
  crops, relative to the output's own spread. ~0 means the decoder ignores X'.

    python benchmarks/representation.py --data DATA RUN/checkpoints/last.pt [more checkpoints]

docs/results.md ("The false positive is frontal white matter ...") reads the demo's checkpoints with it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def crops_of(image, roi: tuple[int, ...], count: int, generator):
    """`count` random (1, M, *roi) crops of one (M, D, H, W) image (zero-padded where it is smaller)."""
    import torch
    import torch.nn.functional as F

    short = [max(0, r - s) for r, s in zip(roi, image.shape[1:], strict=True)]
    if any(short):  # F.pad takes (last dim before, after, ...)
        image = F.pad(image, [p for n in reversed(short) for p in (n // 2, n - n // 2)])
    size = list(roi)
    out = []
    for _ in range(count):
        start = [int(torch.randint(0, s - r + 1, (1,), generator=generator))
                 for r, s in zip(size, image.shape[1:], strict=True)]
        out.append(image[None, :, start[0]:start[0] + size[0], start[1]:start[1] + size[1],
                         start[2]:start[2] + size[2]].float())
    return out


def measure(checkpoint: Path, data: Path, subjects: int, crops: int, seed: int) -> dict[str, float]:
    import torch

    from p2gmed.data.read import read_dataset
    from p2gmed.data.volumes import load_subjects
    from p2gmed.inference.models import load_models

    loaded_model = load_models([checkpoint])[0]
    model, cfg = loaded_model.model.eval(), loaded_model.cfg
    if not hasattr(model, "fuse"):
        raise SystemExit(f"{checkpoint}: not a P2G model (no X' to measure)")
    items = load_subjects(read_dataset(data)[:subjects], cfg.data, progress=False, with_label=False)
    generator = torch.Generator().manual_seed(seed)
    batch = torch.cat([c for i in range(len(items))
                       for c in crops_of(items[i].image, cfg.data.roi_size, crops, generator)])
    m = batch.shape[1]
    rms = lambda t: float(t.float().pow(2).mean().sqrt())  # noqa: E731
    with torch.no_grad():
        fused, skips = [], []
        for j in range(m):
            z, s = model.encode(batch[:, j:j + 1].expand(-1, m, -1, -1, -1))
            fused.append(model.fuse(z))
            skips.append(s)
        stack = torch.stack(fused)  # (M, N, C, d, h, w)
        scale = rms(stack)
        between_modalities = rms(stack - stack.mean(0, keepdim=True)) / scale
        between_crops = rms(stack - stack.mean(1, keepdim=True)) / scale
        out = model.decode(fused[-1], skips[-1])
        frozen = model.decode(fused[-1].mean(0, keepdim=True).expand_as(fused[-1]), skips[-1])
        if loaded_model.segments:
            out, frozen = out.softmax(1), frozen.softmax(1)
        change = rms(frozen - out) / max(rms(out - out.mean(dim=(2, 3, 4), keepdim=True)), 1e-12)
    return {"crops": batch.shape[0], "rms": scale, "between_modalities": between_modalities,
            "between_crops": between_crops, "output_change": change}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="+", type=Path)
    p.add_argument("--data", type=Path, required=True, help="data set folder (any supported layout)")
    p.add_argument("--subjects", type=int, default=2)
    p.add_argument("--crops", type=int, default=3, help="random crops per subject")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    import torch

    torch.set_num_threads(args.threads)
    print(f"{'checkpoint':60s} {'X rms':>8s} {'between modalities':>19s} {'between crops':>14s} "
          f"{'output change':>14s}")
    for checkpoint in args.checkpoints:
        r = measure(checkpoint, args.data, args.subjects, args.crops, args.seed)
        print(f"{str(checkpoint)[-60:]:60s} {r['rms']:8.3f} {r['between_modalities']:19.4f} "
              f"{r['between_crops']:14.4f} {r['output_change']:14.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
