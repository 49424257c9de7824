"""`p2g figure`: per case, the given, synthesized and reference modalities and the segmentation overlays on three
orthogonal slices through the lesion, as PNGs.

    p2g figure --pred DIR [--ref DIR] --out DIR [--case NAME ...]

`--pred` is a `p2g predict` folder (any naming `p2g evaluate` reads, or from-<modality> subfolders); `--ref` a flat
folder or a data set in any supported layout.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "figure",
        help="PNG per case: given, synthesized and reference modalities and segmentation overlays",
        description=(
            "Per case, every predicted modality (marked given or synthesized), its reference, and the predicted and "
            "reference segmentations over the first image, on sagittal, coronal and axial slices through the "
            "largest lesion; written as <out>/<case>.png."
        ),
    )
    p.add_argument("--pred", required=True, type=Path, metavar="DIR", help="prediction folder")
    p.add_argument("--ref", type=Path, metavar="DIR", help="references: flat folder or data set (optional)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder for the PNGs")
    p.add_argument("--case", action="append", metavar="NAME", help="only this case (repeatable)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from p2gmed.errors import InputError
    from p2gmed.report.case_figure import write_case_figures

    if args.out.exists() and not args.out.is_dir():
        raise InputError(f"--out {args.out} is a file; give a folder for the figures")
    written = write_case_figures(args.pred, args.out, args.ref, args.case)
    print(f"wrote {len(written)} figure(s) to {args.out}")
    return 0
