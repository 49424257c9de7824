"""The table of `p2g reproduce`: the measured numbers next to the paper's.

`measured_rows` reads the evaluation CSVs of a plan's methods into (method, setting, metric) -> value, keyed as
`report.paper_numbers.PAPER` keys the paper's numbers; `comparison` joins both into long-format rows (mean and
sample standard deviation over seeds beside the paper's value); `write_table` writes them as `OUT/<table>.md`
(one cell per metric: `measured (paper)`) and `OUT/<table>.csv`. AutoPET aggregates (Tables 5 and 7) are
`evaluation.autopet.autopet_summary`'s.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from p2gmed.evaluation.tables import markdown_table, number, write_csv
from p2gmed.io import write_text
from p2gmed.modalities import DISPLAY
from p2gmed.report.paper_numbers import PAPER
from p2gmed.report.planning import BASE_SEED, MRI_SUBSETS
from p2gmed.report.summaries import MISSING, SEG_REGIONS, mean_by, read_csv, segmentation_summary

if TYPE_CHECKING:
    from p2gmed.report.reproduce import TablePlan


def _pair(src: frozenset, tgt: str, order: tuple[str, ...]) -> str:
    return " + ".join(DISPLAY[m] for m in order if m in src) + f" -> {DISPLAY[tgt]}"


def measured_rows(plan: TablePlan, seed: int | None = None) -> dict[tuple[str, str, str], float]:
    """(method, setting, metric) -> value measured from the evaluation CSVs of the plan's methods (of `seed`)."""
    table_no = int(plan.table[5:])
    out: dict[tuple[str, str, str], float] = {}
    for method in plan.methods:
        if seed is not None and method.seed != seed:
            continue
        rows = read_csv(method.csv)
        if plan.kind == "synthesis":
            for (src, tgt), stats in mean_by(rows, ("source", "modality"), ("psnr", "nmse", "ssim")).items():
                for metric in ("psnr", "nmse", "ssim"):
                    out[(method.label, _pair(src, tgt, plan.modalities), metric)] = stats[metric]
        elif plan.kind == "brats":
            means = mean_by(rows, ("source",), tuple(m for m, _ in SEG_REGIONS))
            if table_no == 3:
                for region, summary in segmentation_summary(means, plan.modalities).items():
                    for key, value in summary.items():
                        out[(method.label, region, key)] = value
            else:
                for subset in MRI_SUBSETS:
                    setting = " + ".join(DISPLAY[m] for m in plan.modalities if m in subset)
                    for metric, region in SEG_REGIONS:
                        out[(method.label, setting, region)] = 100 * means.get((frozenset(subset),), {}).get(
                            metric, math.nan)
        else:  # autopet: the aggregates of `autopet_summary` (paper "Dice", "DICE-", challenge FPV/FNV)
            from p2gmed.evaluation.autopet import autopet_summary, rows_from_csv

            summary = autopet_summary(rows_from_csv(rows, str(method.csv)))
            for metric, key in (("dice", "dice_paper"), ("dice_minus", "dice_minus")):
                out[(method.label, "PET + CT", metric)] = 100 * summary[key]
            for metric in ("fpv_ml", "fnv_ml"):
                out[(method.label, "PET + CT", metric)] = summary[metric]
    if plan.kind == "synthesis" and table_no in (4, 6):  # the paper's "Avg." column, over the pairs it reports
        reported = {s for _, s, _ in PAPER[plan.table]} - {"Avg."}  # Table 6: not the identity NAC -> NAC
        for label in dict.fromkeys(k[0] for k in out):  # insertion order: the same table on every run
            for metric in ("psnr", "ssim"):
                vals = [v for (m, s, mt), v in out.items()
                        if m == label and mt == metric and s in reported and math.isfinite(v)]
                if vals:
                    out[(label, "Avg.", metric)] = sum(vals) / len(vals)
    return out


def comparison(plan: TablePlan, measured: dict[tuple[str, str, str], float],
               spread: dict[tuple[str, str, str], float] | None = None) -> list[dict]:
    """Long-format rows (method, setting, metric, measured, std, seeds, paper) over the union of measured and
    paper keys; `measured` is the mean over the seeds and `std` their sample standard deviation (`spread`).

    Only the settings the paper reports, plus every measured one, appear; a missing side is NaN.
    """
    spread = spread or {}
    paper = dict(PAPER[plan.table])
    if plan.table in ("table4", "table6"):  # the paper's "Avg." column: the mean of the pairs it reports
        for label, metric in dict.fromkeys((m, mt) for m, _, mt in paper):  # the paper's row order
            values = [v for (m, s, mt), v in PAPER[plan.table].items() if m == label and mt == metric]
            paper[(label, "Avg.", metric)] = sum(values) / len(values)
    settings_of_paper = {k[1] for k in paper}
    keys = list(paper) + [k for k in measured if k not in paper and (k[1] in settings_of_paper or not paper)]
    if plan.table in ("table2", "table9") or plan.kind == "brats":
        keys += [k for k in measured if k not in keys]
    return [
        {"table": plan.table, "method": m, "setting": s, "metric": mt,
         "measured": measured.get((m, s, mt), math.nan), "std": spread.get((m, s, mt), math.nan),
         "seeds": plan.seeds, "paper": paper.get((m, s, mt), math.nan)}
        for m, s, mt in dict.fromkeys(keys)
    ]


def comparison_markdown(rows: list[dict]) -> str:
    """Pivot: one row per (method, setting), one column per metric, cells `measured (paper)`."""
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    groups: dict[tuple[str, str], dict[str, dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["setting"]), {})[r["metric"]] = r
    body = []
    for (method, setting), cells in groups.items():
        line = [method, setting]
        for metric in metrics:
            r = cells.get(metric)
            spread = "" if r is None or not math.isfinite(r.get("std", math.nan)) else f" ± {r['std']:.3f}"
            line.append("" if r is None else f"{number(r['measured'], 3, missing=MISSING)}{spread} "
                                              f"({number(r['paper'], 3, missing=MISSING)})")
        body.append(line)
    return markdown_table(["method", "setting", *metrics], body)


def write_table(plan: TablePlan) -> tuple[Path, Path]:
    """Write OUT/<table>.md and OUT/<table>.csv from the evaluation CSVs; returns their paths."""
    from p2gmed.report.seeds import paired_tests, seed_statistics, tests_markdown

    md_path, csv_path = plan.out / f"{plan.table}.md", plan.out / f"{plan.table}.csv"
    tests = ""
    if plan.seeds > 1:
        measured, spread = seed_statistics([measured_rows(plan, k) for k in range(plan.seeds)])
        rows = comparison(plan, measured, spread)
        note = (f"Each cell: mean ± sample std over {plan.seeds} seeds (train.seed {BASE_SEED} ... "
                f"{BASE_SEED + plan.seeds - 1}: other initial weights and crops, the same split) (paper).")
        tests = tests_markdown(paired_tests(plan))
    else:
        rows = comparison(plan, measured_rows(plan))
        note = "Each cell: measured (paper), from 1 seed."
    note += " The paper's numbers come from the full data sets at the paper's scale; " + {
        "tiny": "a tiny-scale run on the built-in simulated data only shows that the pipeline runs end to end.",
        "small": "a small-scale run (the tiny network with the demo's learning settings, hundreds of steps) compares "
                 "the methods at that scale on its data, not the paper's claims.",
    }.get(plan.scale, "this run used the paper's presets.")
    if plan.kind == "brats":
        note += " ET is the post-processed ET (dice_et_pp); Dice in %."
    if plan.kind == "synthesis":
        from p2gmed.evaluation.synthesis import convention_note

        note += f" Metrics: {convention_note('paper', plan.modalities)}."
    write_text(md_path, f"# {plan.table}: {plan.title} ({plan.seeds} seed{'s' if plan.seeds > 1 else ''})\n\n"
                        f"{note}\n\n{comparison_markdown(rows)}\n{tests}")
    write_csv(csv_path, rows, ("table", "method", "setting", "metric", "measured", "std", "seeds", "paper"))
    return md_path, csv_path
