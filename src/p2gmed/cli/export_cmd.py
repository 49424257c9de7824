"""`p2g export`: a model to share (`--format p2g`), or a p2gmed checkpoint's weights for stock MONAI.

    p2g export --model CKPT --format p2g --out FILE
    p2g export --model CKPT --format monai-swinunetr --out FILE

`p2g`: an inference checkpoint (weights, the settings prediction needs, versions and a model card; no optimizer,
scheduler or RNG state) that `p2g predict` and `p2gmed.load` read; FILE.md holds the card.

FILE holds {"state_dict", "monai_kwargs", "p2gmed"}; FILE.json repeats the constructor arguments. Load with:

    blob = torch.load(FILE, weights_only=True)
    net = monai.networks.nets.SwinUNETR(**blob["monai_kwargs"])
    net.load_state_dict(blob["state_dict"], strict=True)
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)

FORMATS = ("p2g", "monai-swinunetr")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="write a model to share (--format p2g) or its weights for stock MONAI SwinUNETR",
        description=(
            "--format p2g writes an inference checkpoint: weights, modalities, labels, normalisation, training "
            "spacing, ROI, versions and a model card, without optimizer, scheduler or RNG state; p2g predict and "
            "p2gmed.load read it. --format monai-swinunetr writes the SwinUNETR weights of a p2g or swinunetr "
            "checkpoint so that they load with "
            "strict=True into monai.networks.nets.SwinUNETR(**monai_kwargs). For a p2g model the encoder "
            "features are identical; "
            "the stock forward has no learnable prior O, so use its decoder as an initialisation."
        ),
    )
    p.add_argument("--model", required=True, type=Path, metavar="CKPT", help="p2gmed checkpoint")
    p.add_argument("--format", required=True, choices=FORMATS, help="target format")
    p.add_argument(
        "--out", required=True, type=Path, metavar="FILE", help="output file (.pt); FILE.json beside it"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from p2gmed.errors import InputError
    from p2gmed.models.weights import export_monai_swinunetr

    if args.out.resolve() == args.model.resolve():
        raise InputError(f"--out {args.out} would overwrite the input checkpoint")
    if args.format == "p2g":
        from p2gmed.inference.export import export_inference

        result = export_inference(args.model, args.out)
        mib = lambda n: n / 2**20  # noqa: E731
        print(
            f"wrote {args.out} ({mib(result['bytes']):.2f} MiB; the training checkpoint {args.model} is "
            f"{mib(result['source_bytes']):.2f} MiB, {result['bytes'] / result['source_bytes']:.0%} of it) "
            f"and its model card {args.out}.md"
        )
        return 0
    kwargs = export_monai_swinunetr(args.model, args.out)
    log.info("wrote %s (SwinUNETR %s)", args.out, ", ".join(f"{k}={v}" for k, v in kwargs.items()))
    return 0
