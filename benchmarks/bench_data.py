"""Training data: a batch from the cached, pre-processed subjects (`TrainBatches.batch(step)`) vs loading the
subjects from disk for every batch."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import common  # noqa: E402


def main(argv=None) -> None:
    p = common.parser(__doc__)
    p.add_argument("--subjects", type=int, default=2)
    args = p.parse_args(argv)
    device = common.setup(args)
    from p2gmed.data.read import read_dataset
    from p2gmed.data.sampling import TrainBatches
    from p2gmed.data.synthetic import make_demo
    from p2gmed.data.volumes import load_subject, load_subjects

    cfg = common.tiny_config()
    with tempfile.TemporaryDirectory() as tmp:
        make_demo(Path(tmp) / "brain", kind="brain", subjects=args.subjects, seed=0)
        subjects = read_dataset(Path(tmp) / "brain")
        cached = TrainBatches(load_subjects(subjects, cfg.data, progress=False), cfg, seed=0)
        counter = iter(range(10**6))
        from_cache = common.timed(lambda: cached.batch(next(counter)), device, args.repeats)

        def from_disk():
            loaded = [load_subject(s, cfg.data) for s in subjects]
            return TrainBatches(loaded, cfg, seed=0).batch(next(counter))

        disk = common.timed(from_disk, device, args.repeats)
    common.report(f"training batches ({args.subjects} simulated brains, ROI {cfg.data.roi_size})", device, [
        ("cached TrainBatches.batch(step)", f"{from_cache * 1e3:.1f} ms/batch"),
        ("loading from disk every batch", f"{disk * 1e3:.1f} ms/batch"),
        ("speed-up of the cache", f"{disk / from_cache:.1f}x"),
    ])


if __name__ == "__main__":
    main()
