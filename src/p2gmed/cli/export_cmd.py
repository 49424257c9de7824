"""`p2g export`: a p2gmed checkpoint's weights for stock MONAI.

    p2g export --model CKPT --format monai-swinunetr --out FILE

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

FORMATS = ("monai-swinunetr",)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="write a checkpoint's weights for stock MONAI SwinUNETR",
        description=(
            "Write the SwinUNETR weights of a p2g or swinunetr checkpoint so that they load with "
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
    p.add_argument("--force", action="store_true", help="replace a file an earlier p2g export wrote at --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from p2gmed.errors import InputError
    from p2gmed.models.weights import export_monai_swinunetr

    from p2gmed.outputs import OutputFolder

    if args.out.is_dir():
        raise InputError(f"--out {args.out} is a folder; give the file to write")
    if args.out.resolve() == args.model.resolve():
        raise InputError(f"--out {args.out} would overwrite the input checkpoint")
    names = [args.out.name, args.out.name + ".json"]
    folder = OutputFolder.claim(args.out.parent, shared=True)
    folder.check_targets(names, force=args.force)
    with folder.writing(names, "p2g export"):
        kwargs = export_monai_swinunetr(args.model, args.out)
    log.info("wrote %s (SwinUNETR %s)", args.out, ", ".join(f"{k}={v}" for k, v in kwargs.items()))
    return 0
