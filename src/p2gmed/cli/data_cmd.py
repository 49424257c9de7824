"""`p2g data make-demo` (built-in data in a real layout), `p2g data check` (validate a data set folder) and
`p2g data convert-dicom` (DICOM PET/CT studies to NIfTI: CT in HU, PET in SUV)."""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from p2gmed.errors import InputError

#: written into every folder `make-demo` creates; only such folders may be replaced by a new make-demo
DEMO_MARKER = "p2g-demo.json"
DEFAULT_LAYOUT = {"brain": "brats23", "petct": "autopet", "nac": "nac"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="make the built-in data set; check a data set folder")
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", parser_class=type(parser))
    sub.required = True

    demo = sub.add_parser("make-demo", help="write the built-in multi-modal data set in a real layout")
    demo.add_argument("--out", required=True, type=Path, help="folder to create (empty, or an earlier demo)")
    demo.add_argument(
        "--kind",
        choices=sorted(DEFAULT_LAYOUT),
        default="brain",
        help="brain MRI (t1n, t1c, t2w, t2f), petct (ct, pet) or nac (ct, pet, pet_nac)",
    )
    demo.add_argument("--subjects", type=int, default=8, help="number of subjects (default 8)")
    demo.add_argument(
        "--layout",
        default=None,
        help="layout to write (default: brats23 for brain, autopet for petct, nac for nac)",
    )
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--spacing", type=float, default=None, metavar="MM", help="isotropic voxel size in mm")
    demo.set_defaults(func=run_make_demo)

    check = sub.add_parser("check", help="validate a data set folder; exit 2 naming each bad file")
    check.add_argument("dir", type=Path, help="data set folder (or JSON datalist)")
    check.add_argument("--layout", default="auto", help="layout (default: detect)")
    check.add_argument("--channels", metavar="0=ct,1=pet",
                       help="nnU-Net data sets: channel index to modality, instead of dataset.json's names")
    check.set_defaults(func=run_check)

    convert = sub.add_parser(
        "convert-dicom",
        help="DICOM PET/CT studies -> NIfTI (CT in HU, PET in SUV body-weight) in the nac or autopet layout",
        description=(
            "Finds every CT and PET series under SRC (any folder structure), groups them by patient and study, and "
            "writes NIfTI files with the DICOM geometry: CT in HU (rescale slope/intercept), PET in SUV body-weight "
            "from the headers (patient weight, injected dose, injection and acquisition times, half-life, decay "
            "correction), the CT also resampled onto the PET grid. Existing folders are never overwritten."
        ),
    )
    convert.add_argument("src", type=Path, help="folder of DICOM files")
    convert.add_argument("dst", type=Path, help="data set folder to write into")
    convert.add_argument("--layout", required=True, choices=("nac", "autopet"), help="layout to write")
    convert.set_defaults(func=run_convert)


def _is_demo_folder(path: Path) -> bool:
    return (path / DEMO_MARKER).is_file()


def run_make_demo(args: argparse.Namespace) -> int:
    """Write the demo into a temporary sibling folder, then move it into place: never half-written."""
    from p2gmed.data import layouts

    out: Path = args.out
    layout = args.layout or DEFAULT_LAYOUT[args.kind]
    if layout not in layouts.LAYOUTS:
        raise InputError(f"--layout must be one of {', '.join(layouts.LAYOUTS)}, got '{layout}'")
    if args.subjects < 1:
        raise InputError(f"--subjects must be at least 1, got {args.subjects}")
    if args.spacing is not None and args.spacing <= 0:
        raise InputError(f"--spacing must be > 0 mm, got {args.spacing}")
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not _is_demo_folder(out):
        raise InputError(f"--out {out} is not empty and not a p2g demo folder; choose an empty or new folder")

    from p2gmed.data.synthetic import make_demo

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        files = make_demo(
            staging,
            kind=args.kind,
            subjects=args.subjects,
            layout=layout,
            seed=args.seed,
            spacing=args.spacing,
        )
        marker = {
            "kind": args.kind,
            "subjects": args.subjects,
            "layout": layout,
            "seed": args.seed,
            "spacing": args.spacing,
        }
        (staging / DEMO_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            out.rename(old / out.name)
            staging.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    print(f"wrote {len(files)} {args.kind} subjects in layout {layout} to {out}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from p2gmed.data.check import check_dataset
    from p2gmed.errors import DataError

    from p2gmed.data.manifests import parse_channels

    channels = parse_channels(args.channels) if args.channels else None
    report = check_dataset(args.dir, layout=args.layout, channels=channels)
    print(report.summary())
    if report.problems:
        raise DataError(report.problems)
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from p2gmed.data.convert import convert_dicom

    written = convert_dicom(args.src, args.dst, args.layout)
    print(f"wrote {len(written)} subject(s) in layout {args.layout} to {args.dst}")
    return 0
