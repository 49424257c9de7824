"""`p2g predict`: any subset of a patient's modalities in; every modality and a segmentation out, native geometry.

    p2g predict --model syn.pt [--model seg.pt] --out DIR --input t1n=a.nii.gz t2f=b.nii.gz [--case NAME]
    p2g predict --model syn.pt --out DIR --case-dir CASE_OR_DATASET_DIR [--layout L]

`--case-dir` takes one case folder of a supported layout, or a whole data set folder (batch mode: every case,
a progress bar and a summary; `--continue` skips finished cases, `--part I/N` predicts one of N shards).
Checkpoints are read once for all cases. The work is done by `p2gmed.inference` (the same core as the Python API,
`p2gmed.load`); this module only parses arguments and prints.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from p2gmed.errors import InputError

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="predict every modality and a segmentation from any subset of a patient's NIfTI files",
        description=(
            "Any subset of a patient's modalities in; every modality the synthesis model knows out (given ones "
            "copied, missing ones synthesized) and a segmentation from a segmentation model, as "
            "<case>_<modality>.nii.gz, <case>_seg.nii.gz and <case>.json, in the input's shape and affine."
        ),
    )
    p.add_argument("--model", action="append", required=True, metavar="CKPT",
                   help="p2gmed checkpoint (training or exported); repeat to give a synthesis (or pre-training) and "
                   "a segmentation model; several of one kind are averaged as an ensemble (N times the cost)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", nargs="+", metavar="MOD=PATH",
                        help="modality files, e.g. t1n=t1.nii.gz t2f=flair.nii.gz (names: t1n t1c t2w t2f ct pet "
                        "pet_nac, or t1 t1ce t2 flair ...)")
    source.add_argument("--case-dir", type=Path, metavar="DIR",
                        help="one case folder of a supported layout, or a data set folder (every case)")
    p.add_argument("--case", help="output file stem with --input (default: from the first file name)")
    p.add_argument("--layout", default="auto", help="layout of --case-dir (default: detected)")
    given = p.add_mutually_exclusive_group()
    given.add_argument("--keep-given", dest="reconstruct_given", action="store_false",
                       help="copy given modalities through unchanged (default)")
    given.add_argument("--reconstruct-given", dest="reconstruct_given", action="store_true",
                       help="write the model's reconstruction of the given modalities instead")
    p.set_defaults(reconstruct_given=False)
    p.add_argument("--overlap", type=float, help="sliding-window overlap in [0, 1) (default: the model's config)")
    p.add_argument("--sw-batch-size", type=int, help="windows per forward pass (default: the model's config)")
    p.add_argument("--mode", choices=("gaussian", "constant"), help="window blending (default: the model's config)")
    p.add_argument("--stitch", choices=("auto", "cpu", "same"),
                   help="where the whole volume is accumulated; cpu bounds GPU memory for whole-body PET/CT")
    p.add_argument("--naming", choices=("p2g", "nnunet", "brats"), default="p2g",
                   help="output names: p2g <case>_<mod|seg>; nnunet segmentation <case>.nii.gz; brats "
                   "<case>-<mod>.nii.gz and segmentation <case>.nii.gz (default p2g)")
    p.add_argument("--tta", action="store_true",
                   help="test-time mirroring: average the 8 mirrorings of every window (8 times the network cost)")
    p.add_argument("--no-resample", dest="resample", action="store_false",
                   help="predict on the input's own spacing instead of the spacing the model was trained at")
    p.add_argument("--continue", dest="skip_complete", action="store_true",
                   help="with --case-dir: skip cases whose outputs and sidecar from the same models are complete")
    p.add_argument("--part", metavar="I/N", help="with --case-dir: predict only shard I of N (1-based)")
    p.add_argument("--channels", metavar="0=ct,1=pet",
                   help="nnU-Net data sets: channel index to modality, instead of dataset.json's names")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def parse_inputs(items: list[str]) -> dict[str, Path]:
    """["t1n=a.nii.gz", ...] -> {canonical modality: Path}; InputError for a malformed item or unknown name."""
    from p2gmed.modalities import canonical

    inputs: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise InputError(f"--input expects MODALITY=PATH, got '{item}'")
        modality = canonical(name)
        if modality in inputs:
            raise InputError(f"--input gives {modality} twice ({inputs[modality]} and {path})")
        inputs[modality] = Path(path)
    return inputs


def run(args: argparse.Namespace) -> int:
    from p2gmed.data.manifests import parse_channels
    from p2gmed.inference.api import load
    from p2gmed.inference.batch import parse_part, predict_folder
    from p2gmed.inference.predict import predict_case

    inputs = parse_inputs(args.input) if args.input else None
    if args.case and not inputs:
        raise InputError("--case names the output of --input files; with --case-dir the subject ids are used")
    for flag, value in (("--continue", args.skip_complete), ("--part", args.part), ("--channels", args.channels)):
        if value and inputs is not None:
            raise InputError(f"{flag} applies to --case-dir (a data set folder), not to --input files")
    if args.case_dir is not None and not args.case_dir.exists():
        raise InputError(f"--case-dir {args.case_dir} does not exist")
    part = parse_part(args.part) if args.part else None
    channels = parse_channels(args.channels) if args.channels else None
    model = load(
        args.model, args.device, overlap=args.overlap, sw_batch_size=args.sw_batch_size, mode=args.mode,
        stitch=args.stitch, reconstruct_given=args.reconstruct_given, resample=args.resample, tta=args.tta,
        naming=args.naming, progress=not args.no_progress and inputs is not None,
    )
    if inputs is not None:
        sidecar = predict_case(model.models, inputs, args.out, args.case, model.options, model.device)
        _print_case(sidecar, args.out)
        return 0
    summary = predict_folder(
        model.models, args.case_dir, args.out, model.options, model.device, layout=args.layout,
        progress=not args.no_progress, skip_complete=args.skip_complete, part=part, channels=channels,
    )
    shard = f" (part {part[0]}/{part[1]})" if part else ""
    done = f"predicted {len(summary['done'])} case(s){shard} into {args.out} in {summary['seconds']:.1f} s"
    if summary["skipped"]:
        done += f"; {len(summary['skipped'])} already complete, skipped"
    print(done)
    for case, reason in summary["failed"].items():
        print(f"  skipped {case}: {reason}")
    if summary["failed"]:
        raise InputError(f"{len(summary['failed'])} case(s) of {args.case_dir} could not be predicted (see above)")
    return 0


def _print_case(sidecar: dict, out: Path) -> None:
    outputs = ", ".join(f"{k} ({v['source']})" for k, v in sidecar["outputs"].items())
    runtime = sidecar["runtime"]
    memory = f", peak GPU {runtime['peak_gpu_mib']:.0f} MiB" if "peak_gpu_mib" in runtime else ""
    print(f"{sidecar['case']}: {outputs} -> {out} in {runtime['seconds']:.1f} s "
          f"(peak host memory {runtime['peak_host_rss_mib']:.0f} MiB{memory})")
