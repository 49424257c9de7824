"""Training data: what building a batch costs next to a training step (goal 4: under 10%), and the cache.

A batch comes from the cached, pre-processed subjects (`TrainBatches.batch(step)`: crop, flips, rot90); it is
timed alternately with a pre-training step on a batch of the same shape. Then the training loop is run as the
engine runs it (`StepLoader(step)`, then the step) with 0 and more DataLoader workers, and the time spent
waiting for batches is the data loading fraction (goal under 10%). Loading the subjects from disk for every
batch is the baseline of the cache.

    python benchmarks/bench_data.py [--size tiny|paper] [--device cuda]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import common  # noqa: E402
from bench_pretrain_step import make_step  # noqa: E402

GOAL = 0.10


def main(argv=None) -> None:
    p = common.parser(__doc__)
    p.add_argument("--subjects", type=int, default=2)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader worker counts to compare")
    p.add_argument("--loop-steps", type=int, default=6, help="steps of the timed training loop per worker count")
    p.add_argument("--size", choices=("tiny", "paper"), default="tiny",
                   help="tiny: tiny-cpu preset on 3 mm brains; paper: ROI 96^3, F=48 on 1 mm (BraTS-sized) brains")
    args = p.parse_args(argv)
    device = common.setup(args)
    from p2gmed.data.read import read_dataset
    from p2gmed.data.sampling import StepLoader, TrainBatches
    from p2gmed.data.synthetic import make_demo
    from p2gmed.data.volumes import load_subject, load_subjects

    if args.size == "paper":
        if device.type == "cpu":
            common.require_memory(10, "the paper-size step on the CPU")
        cfg = common.paper_config(data={"crops_per_subject": 1}, loss={"contrast": 0.0})
        spacing, repeats = 1.0, (args.repeats if device.type == "cuda" else 1)
    else:
        cfg, spacing, repeats = common.tiny_config(), None, args.repeats
    with tempfile.TemporaryDirectory() as tmp:
        make_demo(Path(tmp) / "brain", kind="brain", subjects=args.subjects, seed=0, spacing=spacing)
        subjects = read_dataset(Path(tmp) / "brain")
        loaded = load_subjects(subjects, cfg.data, progress=False)
        shape = tuple(loaded[0].image.shape[1:])
        cached = TrainBatches(loaded, cfg, seed=0)
        counter = iter(range(10**6))
        step = make_step(cfg, device, "per_step")
        t = common.interleaved({"batch": lambda: cached.batch(next(counter)), "step": step}, device, repeats,
                               warmup=args.size == "tiny" or device.type == "cuda")

        # the loop as the engine runs it: wait for the step's batch, then train on it; workers build ahead
        def waiting_fraction(workers: int, steps: int = 6) -> float:
            loader = StepLoader(cached, workers, max_steps=10**6)
            loader(0)  # start the workers (and warm up) outside the measurement
            waited = trained = 0.0
            for s in range(1, steps + 1):
                start = time.perf_counter()
                loader(s)
                waited += time.perf_counter() - start
                start = time.perf_counter()
                step()
                common.sync(device)
                trained += time.perf_counter() - start
            return waited / (waited + trained)

        loop_steps = args.loop_steps if args.size == "tiny" or device.type == "cuda" else 1
        loop = {w: waiting_fraction(w, loop_steps) for w in args.workers}

        def from_disk():
            fresh = [load_subject(s, cfg.data) for s in subjects]
            return TrainBatches(fresh, cfg, seed=0).batch(next(counter))

        disk = common.timed(from_disk, device, 1)
    fraction = t["batch"] / (t["batch"] + t["step"])
    common.report(f"training data ({args.subjects} simulated brains {'x'.join(map(str, shape))}, {args.size}: ROI "
                  f"{'x'.join(map(str, cfg.data.roi_size))}, F={cfg.model.feature_size})", device, [
        ("cached TrainBatches.batch(step)", f"{t['batch'] * 1e3:.1f} ms/batch"),
        ("pre-training step on that batch", f"{t['step'] * 1e3:.0f} ms/step"),
        ("batch building / (batch + step), in the training process", f"{fraction:.1%}"),
        *[(f"time waiting for the batch, {w} worker(s) (goal < {GOAL:.0%})",
           f"{f:.1%} of the loop, {'met' if f < GOAL else 'NOT met'}") for w, f in loop.items()],
        ("loading from disk every batch", f"{disk * 1e3:.0f} ms/batch ({disk / t['batch']:.0f}x the cache)"),
    ])


if __name__ == "__main__":
    main()
