"""`p2g evaluate synthesis|brats|autopet`: per-case metrics to CSV, a paper-style summary to the terminal and to
Markdown (`<out stem>.md`) and CSV (`<out stem>.summary.csv`) beside the per-case CSV.

Nothing is written until every case has been evaluated, and every file is written atomically.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from p2gmed.errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="metrics of predictions against references (synthesis, BraTS, AutoPET)",
        description="Per-case metrics to CSV; summary to the terminal and to <out>.md beside the CSV.",
    )
    tasks = parser.add_subparsers(dest="task", metavar="TASK")
    tasks.required = True

    def common(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = tasks.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--pred", required=True, type=Path,
                         help="folder of <case>_<modality|seg>.nii.gz, or of from-<mod>[+<mod>] subfolders")
        sub.add_argument("--ref", required=True, type=Path,
                         help="flat folder in the same naming, or a data set in any supported layout")
        sub.add_argument("--out", required=True, type=Path, help="per-case CSV to write")
        sub.add_argument("--allow-missing", action="store_true",
                         help="evaluate the matched cases only, instead of failing on a missing or extra case")
        sub.set_defaults(func=run)
        return sub

    synthesis = common("synthesis", "PSNR, NMSE and 3D SSIM of synthesized modalities")
    synthesis.add_argument(
        "--convention", choices=("paper", "unit"), default="unit",
        help="paper: the authors' test script (z-scored, reference copied into the background: MRI z < -0.35, "
        "CT/PET outside the body; uniform 7-window SSIM); unit: each volume to [0,1] by its own p0.5-p99.5, "
        "Gaussian SSIM (default)",
    )
    brats = common("brats", "BraTS WT/TC/ET Dice (legacy rules, ET post-processed) and HD95; 15-subset tables")
    brats.add_argument("--labels", choices=("brats2023", "brats2018"), default=None,
                       help="label convention (ET = 3 or 4); default from the reference layout")
    brats.add_argument("--metrics", choices=("legacy", "lesionwise", "both"), default="legacy",
                       help="legacy region Dice/HD95 (default), the BraTS 2023 lesion-wise Dice/HD95, or both")
    brats.add_argument("--challenge", default="BraTS-GLI",
                       choices=("BraTS-GLI", "BraTS-SSA", "BraTS-MEN", "BraTS-PED", "BraTS-MET"),
                       help="sub-challenge whose lesion dilation and minimum lesion size apply (default BraTS-GLI)")
    common("autopet", "AutoPET Dice, false-positive and false-negative volume; challenge and paper aggregates")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.is_dir():
        raise InputError(f"--out {out} is a folder; give the CSV file to write")
    if out.suffix.lower() != ".csv":
        raise InputError(f"--out {out} must name a .csv file (the summary goes beside it as .md)")
    if args.task == "synthesis":
        rows, columns, summary = _synthesis(args)
    elif args.task == "brats":
        rows, columns, summary = _brats(args)
    else:
        rows, columns, summary = _autopet(args)
    _write(out, rows, columns, summary, f"p2g evaluate {args.task}: {args.pred} vs {args.ref}")
    return 0


def _synthesis(args):
    from p2gmed.evaluation.synthesis import convention_note, evaluate_synthesis
    from p2gmed.evaluation.tables import SYNTHESIS_COLUMNS, synthesis_table

    rows = evaluate_synthesis(args.pred, args.ref, args.convention, args.allow_missing)
    title = f"Synthesis ({convention_note(args.convention, sorted({r['modality'] for r in rows}))})"
    tables = [(title, synthesis_table(rows), synthesis_table(rows, "csv"))]
    return rows, SYNTHESIS_COLUMNS, tables


def _brats(args):
    from p2gmed.evaluation.brats import evaluate_brats
    from p2gmed.evaluation.lesionwise import evaluate_brats_metrics, lesionwise_table
    from p2gmed.evaluation.tables import BRATS_COLUMNS, brats_table, subset_detail_table, subset_table

    if args.metrics == "legacy":
        rows, columns = evaluate_brats(args.pred, args.ref, args.labels, args.allow_missing), BRATS_COLUMNS
    else:
        rows, columns = evaluate_brats_metrics(
            args.pred, args.ref, args.labels, args.allow_missing, args.metrics, args.challenge
        )
    tables = []
    if args.metrics != "lesionwise":
        tables.append(("BraTS segmentation", brats_table(rows), brats_table(rows, "csv")))
    if args.metrics != "legacy":
        title = f"BraTS 2023 lesion-wise ({args.challenge})"
        tables.append((title, lesionwise_table(rows), lesionwise_table(rows, "csv")))
    if args.metrics != "lesionwise" and any("source" in r for r in rows):
        tables += [
            ("Missing-modality protocol (Table 3 layout)", subset_table(rows), subset_table(rows, "csv")),
            ("Every subset (Table 10 layout)", subset_detail_table(rows), subset_detail_table(rows, "csv")),
        ]
    return rows, columns, tables


def _autopet(args):
    from p2gmed.evaluation.autopet import AGGREGATE_DEFINITIONS, autopet_summary, evaluate_autopet
    from p2gmed.evaluation.tables import AUTOPET_COLUMNS, autopet_table

    rows = evaluate_autopet(args.pred, args.ref, args.allow_missing)
    sources = {r.get("source") for r in rows}
    summaries = {s: autopet_summary([r for r in rows if r.get("source") == s]) for s in sources}
    tables = [("AutoPET segmentation", autopet_table(summaries, AGGREGATE_DEFINITIONS),
               autopet_table(summaries, AGGREGATE_DEFINITIONS, "csv"))]
    return rows, AUTOPET_COLUMNS, tables


def _write(out: Path, rows: list[dict], columns, tables: list[tuple[str, str, str]], command: str) -> None:
    from p2gmed.evaluation.tables import write_csv
    from p2gmed.io import write_text

    markdown = "\n".join(f"## {title}\n\n{md}" for title, md, _ in tables)
    summary_csv = "\n".join(f"# {title}\n{text}" for title, _, text in tables)
    write_csv(out, rows, columns)
    write_text(out.with_suffix(".md"), f"# {command}\n\nPer-case values: `{out.name}`.\n\n{markdown}")
    write_text(out.with_suffix(".summary.csv"), summary_csv)
    print(markdown)
    print(f"wrote {out}, {out.with_suffix('.md')} and {out.with_suffix('.summary.csv')}")
