"""`p2g predict`: any subset of a patient's modalities in; every modality and a segmentation out, native geometry.

    p2g predict --model syn.pt [--model seg.pt] --out DIR --input t1n=a.nii.gz t2f=b.nii.gz [--case NAME]
    p2g predict --model syn.pt --out DIR --case-dir CASE_OR_DATASET_DIR [--layout L]
    p2g predict --model syn.pt [--model seg.pt] --out DIR --input t1n=a.nii.gz t2f=b.nii.gz --subsets all

`--subsets` predicts one case from several subsets of its --input files in one pass (each modality read,
normalised and encoded once), subset S into `DIR/from-<S>/` as `p2g evaluate` reads it.

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
    p.add_argument("--subsets", nargs="+", metavar="SUBSET",
                   help="with --input: predict from each of these subsets of the inputs in one pass, subset S "
                   "into --out/from-<S>/; 'all' (every non-empty subset) or names joined by '+', e.g. t1n t1n+t2f")
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
    p.add_argument("--lesions", choices=("all", "largest", "core"),
                   help="segmentation post-processing: keep every lesion, the largest connected one, or the one with "
                   "the most tumour core (BraTS labels); default: the model's inference.lesions")
    p.add_argument("--no-resample", dest="resample", action="store_false",
                   help="predict on the input's own spacing instead of the spacing the model was trained at")
    p.add_argument("--continue", dest="skip_complete", action="store_true",
                   help="with --case-dir: skip cases whose outputs and sidecar from the same models and settings are "
                   "complete")
    p.add_argument("--part", metavar="I/N", help="with --case-dir: predict only shard I of N (1-based)")
    p.add_argument("--channels", metavar="0=ct,1=pet",
                   help="nnU-Net data sets: channel index to modality, instead of dataset.json's names")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--force", action="store_true",
                   help="replace outputs an earlier p2g predict wrote into --out for the same case(s)")
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
    from p2gmed.inference.batch import parse_part
    from p2gmed.inference.naming import case_name_from_inputs

    inputs = parse_inputs(args.input) if args.input else None
    if args.case and not inputs:
        raise InputError("--case names the output of --input files; with --case-dir the subject ids are used")
    for flag, value in (("--continue", args.skip_complete), ("--part", args.part), ("--channels", args.channels)):
        if value and inputs is not None:
            raise InputError(f"{flag} applies to --case-dir (a data set folder), not to --input files")
    if args.subsets and inputs is None:
        raise InputError("--subsets predicts subsets of one case's --input files; it does not apply to --case-dir")
    subsets = parse_subsets(args.subsets, inputs) if args.subsets else None
    if args.case_dir is not None and not args.case_dir.exists():
        raise InputError(f"--case-dir {args.case_dir} does not exist")
    part = parse_part(args.part) if args.part else None
    channels = parse_channels(args.channels) if args.channels else None
    out = claim_output(args, inputs)
    model = load(
        args.model, args.device, overlap=args.overlap, sw_batch_size=args.sw_batch_size, mode=args.mode,
        stitch=args.stitch, reconstruct_given=args.reconstruct_given, resample=args.resample, tta=args.tta,
        naming=args.naming, progress=not args.no_progress and inputs is not None, lesions=args.lesions,
    )
    cases = [args.case or case_name_from_inputs(inputs)] if inputs is not None else _case_ids(args, part, channels)
    if subsets is not None:
        names = [f"{folder}/{n}" for folder, subset in zip(_folders(model.models, subsets), subsets)
                 for n in _possible_outputs(model.models, cases[0], {m: inputs[m] for m in subset}, args.naming)]
    else:
        names = [n for case in cases for n in _possible_outputs(model.models, case, inputs or {}, args.naming)]
    # --continue goes on with p2g's own outputs of an earlier run (complete cases are skipped, not rewritten)
    out.check_targets(names, force=args.force or args.skip_complete, force_option="--force or --continue")
    with out.writing(names, "p2g predict"):
        return _predict(args, model, inputs, subsets, part, channels)


def _predict(args: argparse.Namespace, model, inputs: dict[str, Path] | None, subsets, part, channels) -> int:
    from p2gmed.inference.batch import predict_folder
    from p2gmed.inference.cases import predict_case, predict_case_subsets

    if subsets is not None:
        sidecars = predict_case_subsets(model.models, inputs, args.out, args.case, subsets, model.options,
                                        model.device)
        for sidecar, folder in zip(sidecars, _folders(model.models, subsets)):
            _print_case(sidecar, args.out / folder)
        return 0
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


def claim_output(args: argparse.Namespace, inputs: dict[str, Path] | None):
    """--out must be new, empty or p2g's own; never the case folder or data set (nor inside it), nor the folder
    of an --input file."""
    from p2gmed.outputs import OutputFolder

    for path in (inputs or {}).values():
        if path.parent.is_dir() and args.out.is_dir() and args.out.resolve() == path.parent.resolve():
            raise InputError(f"--out {args.out} is the folder of the input file {path}; p2g never writes among its "
                             "inputs, choose a separate output folder")
    return OutputFolder.claim(args.out, inputs=[args.case_dir] if args.case_dir is not None else [])


def _case_ids(args: argparse.Namespace, part, channels) -> list[str]:
    from p2gmed.data.read import read_dataset
    from p2gmed.inference.batch import shard

    return [s.subject_id for s in shard(read_dataset(args.case_dir, args.layout, channels=channels), part)]


def parse_subsets(specs: list[str], inputs: dict[str, Path]) -> list[tuple[str, ...]]:
    """--subsets values -> subsets of the input modalities (canonical names in input order).

    ["all"] gives every non-empty subset, by size then input order; otherwise each value is modality names (any
    accepted spelling) joined by '+'. InputError names a value that is malformed, unknown, outside the inputs or
    repeated.
    """
    from itertools import combinations

    from p2gmed.modalities import canonical

    given = list(inputs)
    if specs == ["all"]:
        return [c for size in range(1, len(given) + 1) for c in combinations(given, size)]
    subsets: list[tuple[str, ...]] = []
    for spec in specs:
        if spec == "all":
            raise InputError("--subsets all means every subset of the inputs; give it alone, not beside others")
        names = spec.split("+")
        if not all(names):
            raise InputError(f"--subsets {spec} has an empty modality name; join names with '+', e.g. t1n+t2f")
        try:
            chosen = {canonical(name) for name in names}
        except InputError as exc:
            raise InputError(f"--subsets {spec}: {exc}") from None
        outside = [m for m in chosen if m not in inputs]
        if outside:
            raise InputError(f"--subsets {spec} needs {', '.join(sorted(outside))}, which is not among the --input "
                             f"modalities ({', '.join(given)})")
        subset = tuple(m for m in given if m in chosen)
        if subset in subsets:
            raise InputError(f"--subsets names the subset {spec} twice")
        subsets.append(subset)
    return subsets


def _folders(models, subsets: list[tuple[str, ...]]) -> list[str]:
    """The `from-<subset>` folder of each subset (modalities in the models' order)."""
    from p2gmed.inference.models import modality_order
    from p2gmed.inference.naming import subset_folder

    return [subset_folder(subset, modality_order(models)) for subset in subsets]


def _possible_outputs(models, case: str, inputs: dict[str, Path], naming: str) -> list[str]:
    """Every file predicting `case` may write (a superset: the names the models and inputs can produce)."""
    from p2gmed.inference.naming import SEG, output_name
    from p2gmed.modalities import canonical

    what = [m for model in models for m in model.modalities] + [canonical(m) for m in inputs]
    if any(model.segments for model in models):
        what.append(SEG)
    return [output_name(case, w, naming) for w in dict.fromkeys(what)] + [f"{case}.json"]


def _print_case(sidecar: dict, out: Path) -> None:
    outputs = ", ".join(f"{k} ({v['source']})" for k, v in sidecar["outputs"].items())
    runtime = sidecar["runtime"]
    memory = f", peak GPU {runtime['peak_gpu_mib']:.0f} MiB" if "peak_gpu_mib" in runtime else ""
    print(f"{sidecar['case']}: {outputs} -> {out} in {runtime['seconds']:.1f} s "
          f"(peak host memory {runtime['peak_host_rss_mib']:.0f} MiB{memory})")
