"""`p2g predict` of a BraTS-sized case against MONAI's `sliding_window_inference` on a plain SwinUNETR (goal 2).

The case is 240x240x155 with four MRI modalities (BraTS geometry). Both sides run as fresh processes, so start-up,
reading the NIfTI files and writing the outputs are included on both:

- p2g: `python -m p2gmed predict` with a synthesis and a segmentation model (random weights, the preset's
  architecture), every modality and the segmentation out;
- MONAI: a script that reads the same files, z-scores them, runs `sliding_window_inference` with the same ROI,
  overlap, blending and window batch on a stock `SwinUNETR` (4 channels in; K classes out, plus 4 channels out
  when a modality is synthesized) and writes the same outputs.

"compute" rows run only the sliding window inside this process, to separate what the architecture costs
(P2GNet encodes each given modality alone, Sec. 3.3) from what the pipeline around it costs.

    python benchmarks/bench_predict.py [--size tiny|paper] [--given t1n t1c t2w t2f]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import common  # noqa: E402

BRATS_SHAPE = (240, 240, 155)
MRI = ("t1n", "t1c", "t2w", "t2f")
GOAL = 1.2
CLASSES = 4


def write_case(folder: Path, shape=BRATS_SHAPE) -> dict[str, Path]:
    """A skull-stripped-looking case: noisy intensities inside an ellipsoid, 0 outside, 1 mm RAS."""
    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in shape], indexing="ij"))
    brain = (grid**2).sum(0) < 0.7
    paths = {}
    for i, m in enumerate(MRI):
        data = np.where(brain, rng.normal(100 * (i + 1), 20, shape), 0).astype(np.float32)
        paths[m] = folder / f"case-{m}.nii.gz"
        nib.save(nib.Nifti1Image(data, np.eye(4)), str(paths[m]))
    return paths


def save_models(cfg, folder: Path) -> dict[str, Path]:
    """Random-weight P2GNet checkpoints (synthesis and segmentation) and plain SwinUNETR state dicts."""
    import torch
    from monai.networks.nets import SwinUNETR

    from p2gmed.config import config_to_dict
    from p2gmed.models.baselines import build_architecture
    from p2gmed.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    m, mc = len(MRI), cfg.model
    paths = {}
    for task, out, labels in (("synthesis", m, None), ("segmentation", CLASSES, "brats2023")):
        paths[task] = folder / f"{task}.pt"
        save_checkpoint(paths[task], model=build_architecture(cfg, "p2g", out), step=1, config=config_to_dict(cfg),
                        task=task, architecture="p2g", out_channels=out, modalities=list(MRI), labels=labels)
        net = SwinUNETR(in_channels=m, out_channels=out, feature_size=mc.feature_size, depths=mc.depths,
                        num_heads=mc.num_heads, window_size=mc.window_size)
        paths[f"monai-{task}"] = folder / f"monai-{task}.pt"
        torch.save(net.state_dict(), paths[f"monai-{task}"])
    return paths


def monai_child(spec: dict) -> None:
    """The plain-MONAI side, as a user's script would do it: read, normalise, sliding window, write."""
    import nibabel as nib
    import numpy as np
    import torch
    from monai.inferers import sliding_window_inference
    from monai.networks.nets import SwinUNETR

    start = time.perf_counter()
    arrays = [nib.load(spec["inputs"][m]).get_fdata(dtype=np.float32) if m in spec["inputs"] else None for m in MRI]
    shape = next(a for a in arrays if a is not None).shape
    image = np.zeros((len(MRI), *shape), np.float32)
    for i, a in enumerate(arrays):
        if a is not None:
            inside = a != 0
            image[i] = np.where(inside, (a - a[inside].mean()) / a[inside].std(), 0)
    x = torch.from_numpy(image)[None]
    affine = nib.load(next(iter(spec["inputs"].values()))).affine
    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode():
        for task, channels in spec["tasks"].items():
            net = SwinUNETR(in_channels=len(MRI), out_channels=channels, **spec["arch"])
            net.load_state_dict(torch.load(spec["weights"][task], weights_only=True))
            y = sliding_window_inference(x, spec["roi"], spec["sw_batch_size"], net.eval(), overlap=spec["overlap"],
                                         mode=spec["mode"])[0]
            if task == "segmentation":
                nib.save(nib.Nifti1Image(y.argmax(0).numpy().astype(np.uint8), affine), str(out / "case_seg.nii.gz"))
            else:
                for i, m in enumerate(MRI):
                    if m not in spec["inputs"]:
                        nib.save(nib.Nifti1Image(y[i].numpy(), affine), str(out / f"case_{m}.nii.gz"))
    print(json.dumps({"seconds": time.perf_counter() - start}))


def run_timed(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def main(argv=None) -> None:
    p = common.parser(__doc__)
    p.add_argument("--size", choices=("tiny", "paper"), default="tiny")
    p.add_argument("--given", nargs="+", choices=MRI, default=list(MRI), help="modalities given to the prediction")
    p.add_argument("--shape", type=int, nargs=3, default=BRATS_SHAPE, help="case size (default BraTS: 240 240 155)")
    args = p.parse_args(argv)
    if args.child:
        return monai_child(json.loads(Path(args.child).read_text()))
    device = common.setup(args)
    import torch
    from monai.inferers import sliding_window_inference
    from monai.networks.nets import SwinUNETR

    from p2gmed.models.baselines import build_architecture

    cfg = common.tiny_config() if args.size == "tiny" else common.paper_config()
    inf, mc = cfg.inference, cfg.model
    roi = list(cfg.data.roi_size)
    env = dict(os.environ, PYTHONPATH=str(common.ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    tasks = {"segmentation": CLASSES} | ({} if set(args.given) == set(MRI) else {"synthesis": len(MRI)})
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        case = write_case(tmp, tuple(args.shape))
        models = save_models(cfg, tmp)
        given = {m: str(case[m]) for m in args.given}
        spec = {"inputs": given, "out": str(tmp / "monai-out"), "tasks": tasks, "roi": roi,
                "overlap": inf.overlap, "mode": inf.mode, "sw_batch_size": inf.sw_batch_size,
                "weights": {t: str(models[f"monai-{t}"]) for t in tasks},
                "arch": {"feature_size": mc.feature_size, "depths": list(mc.depths), "num_heads": list(mc.num_heads),
                         "window_size": mc.window_size}}
        (tmp / "spec.json").write_text(json.dumps(spec))
        p2g = [sys.executable, "-m", "p2gmed", "predict", "--model", str(models["synthesis"]), "--model",
               str(models["segmentation"]), "--out", str(tmp / "p2g-out"), "--case", "case", "--device", args.device,
               "--no-progress", "--input", *[f"{m}={path}" for m, path in given.items()]]
        monai = [sys.executable, __file__, "--child", str(tmp / "spec.json")]
        whole = common.interleaved({"p2g": lambda: run_timed(p2g, env), "monai": lambda: run_timed(monai, env)},
                                   device, args.repeats, warmup=False)

        # compute only: the same sliding window in this process, P2GNet.forward_subset vs plain SwinUNETR
        x = torch.randn(1, len(MRI), *args.shape)
        available = torch.tensor([m in args.given for m in MRI], device=device)
        p2g_nets = {t: build_architecture(cfg, "p2g", c).to(device).eval() for t, c in tasks.items()}
        plain = {t: SwinUNETR(in_channels=len(MRI), out_channels=c, feature_size=mc.feature_size, depths=mc.depths,
                              num_heads=mc.num_heads, window_size=mc.window_size).to(device).eval()
                 for t, c in tasks.items()}

        def window(predictors):
            def go():
                with torch.inference_mode():
                    for predictor in predictors:
                        sliding_window_inference(x, roi, inf.sw_batch_size, predictor, overlap=inf.overlap,
                                                 mode=inf.mode, sw_device=device, device=device)
            return go

        compute = common.interleaved({
            "p2g": window([lambda b, n=n: n.forward_subset(b, available) for n in p2g_nets.values()]),
            "monai": window(list(plain.values())),
        }, device, args.repeats, warmup=False)
    ratio = whole["p2g"] / whole["monai"]
    outputs = "seg" + ("" if not tasks.get("synthesis") else f" + {len(MRI) - len(args.given)} synthesized")
    common.report(f"prediction of a {'x'.join(map(str, args.shape))} case ({args.size}: ROI {'x'.join(map(str, roi))}, "
                  f"F={mc.feature_size}, overlap {inf.overlap}, {inf.mode}; given {'+'.join(args.given)}; "
                  f"out {outputs})", device, [
        ("p2g predict (process: start-up, read, predict, write)", f"{whole['p2g']:.1f} s"),
        ("MONAI script (same, stock SwinUNETR)", f"{whole['monai']:.1f} s"),
        (f"ratio (goal <= {GOAL}x)", f"{ratio:.2f}x, {'met' if ratio <= GOAL else 'NOT met'}"),
        ("compute only: P2GNet.forward_subset windows", f"{compute['p2g']:.1f} s"),
        ("compute only: SwinUNETR windows", f"{compute['monai']:.1f} s"),
        ("compute ratio (architecture: each given modality encoded alone)",
         f"{compute['p2g'] / compute['monai']:.2f}x"),
        ("pipeline overhead beyond the compute ratio", f"{ratio / (compute['p2g'] / compute['monai']):.2f}x"),
        ("timing", f"median of {args.repeats} alternating round(s), no warm-up (every run is a fresh process)"),
    ])


if __name__ == "__main__":
    main()
