"""Every modality subset of one case: 15 separate `predict_case` calls against one `predict_case_subsets` pass.

One simulated brain (`p2g data make-demo --subjects 1`, four MRI modalities) is predicted from each of its 15
modality subsets with a freshly built tiny synthesis and segmentation checkpoint (tiny-cpu preset, random weights),
both ways, into `from-<subset>/` folders. The models are loaded once for both sides, so the ratio counts only what
the one pass saves inside a prediction (reading and normalising each file once, encoding each modality once per
window, one sliding window per model); separate `p2g predict` processes also re-load the checkpoints each time.

    python benchmarks/predict_subsets.py [--threads 1] [--repeats 2] [--device cpu]
"""

from __future__ import annotations

import itertools
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import common  # noqa: E402

MRI = ("t1n", "t1c", "t2w", "t2f")


def build(folder: Path, device):
    """(models, inputs, case): the tiny checkpoints loaded, and the simulated subject's files."""
    import torch

    from p2gmed.config import config_to_dict
    from p2gmed.data.read import read_dataset
    from p2gmed.data.synthetic import make_demo
    from p2gmed.inference.models import load_models
    from p2gmed.models.baselines import build_architecture
    from p2gmed.train.checkpoint import save_checkpoint

    make_demo(folder / "data", kind="brain", subjects=1, layout="brats23", seed=0)
    (subject,) = read_dataset(folder / "data")
    cfg = common.tiny_config()
    torch.manual_seed(0)
    paths = []
    for task, labels in (("synthesis", None), ("segmentation", "brats2023")):
        paths.append(folder / f"{task}.pt")
        save_checkpoint(paths[-1], model=build_architecture(cfg, "p2g", 4), step=1, config=config_to_dict(cfg),
                        task=task, architecture="p2g", out_channels=4, modalities=list(MRI), labels=labels)
    return load_models(paths, device), {m: subject.images[m] for m in MRI}, subject.subject_id


def main(argv=None) -> None:
    from p2gmed.inference.cases import predict_case, predict_case_subsets
    from p2gmed.inference.naming import subset_folder

    args = common.parser(__doc__.splitlines()[0]).parse_args(argv)
    device = common.setup(args)
    subsets = [s for size in range(1, 5) for s in itertools.combinations(MRI, size)]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        models, inputs, case = build(folder, device)

        def separate():
            for subset in subsets:
                out = folder / "separate" / subset_folder(subset, MRI)
                predict_case(models, {m: inputs[m] for m in subset}, out, case, device=device)

        def one_pass():
            predict_case_subsets(models, inputs, folder / "one-pass", case, subsets, device=device)

        seconds = common.interleaved({"separate": separate, "one pass": one_pass}, device, args.repeats)
        shape = "x".join(map(str, _shape(inputs)))
    common.report(f"all 15 subsets of one simulated brain ({shape}), tiny synthesis + segmentation model", device, [
        ("15 x predict_case", f"{seconds['separate']:.2f} s"),
        ("1 x predict_case_subsets", f"{seconds['one pass']:.2f} s"),
        ("speed-up", f"{seconds['separate'] / seconds['one pass']:.2f}x"),
    ])


def _shape(inputs) -> tuple[int, ...]:
    import nibabel as nib

    return nib.load(str(next(iter(inputs.values())))).shape


if __name__ == "__main__":
    main()
