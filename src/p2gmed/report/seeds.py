"""Seeds and spread for `p2g reproduce TABLE --seeds N`: mean +/- std per cell and paired tests between methods.

A table run with N seeds trains every configuration N times (other initial weights and crops, the same split).
Each cell is the mean over the seeds of the per-seed value, with the sample standard deviation (ddof 1).

Whether two methods differ beyond that spread is decided by a paired test over seeds *and* subjects: for each
seed k and each held-out subject, the reference method's per-subject value is paired with the other method's
(seed k, same subject), and the two-sided Wilcoxon signed-rank test (scipy) is applied to the differences; a
difference is marked when p < ALPHA. The reference is "Ours" where the table has it, else its last row group (the
ablations: every constraint and the prior). Per-subject values: synthesis PSNR and SSIM per source -> target
pair; BraTS Dice per region, averaged over the subject's modality subsets; AutoPET Dice per study. No correction
for multiple comparisons is applied: read the marks as a screen, not as confirmed effects.
"""

from __future__ import annotations

import math
from typing import Any

from p2gmed.evaluation.tables import markdown_table
from p2gmed.modalities import DISPLAY
from p2gmed.report.summaries import SEG_REGIONS, read_csv, to_float

ALPHA = 0.05


def seed_statistics(per_seed: list[dict[tuple, float]]) -> tuple[dict[tuple, float], dict[tuple, float]]:
    """(mean, sample std) over the seeds of every key measured in at least one seed (NaNs ignored)."""
    mean, std = {}, {}
    for key in dict.fromkeys(k for measured in per_seed for k in measured):
        values = [m[key] for m in per_seed if key in m and math.isfinite(m[key])]
        if not values:
            mean[key] = std[key] = math.nan
            continue
        mean[key] = sum(values) / len(values)
        std[key] = (math.sqrt(sum((v - mean[key]) ** 2 for v in values) / (len(values) - 1))
                    if len(values) > 1 else math.nan)
    return mean, std


def _display_source(source: str) -> str:
    names = source[5:] if source.startswith("from-") else source
    return " + ".join(DISPLAY.get(m, m) for m in names.split("+") if m)


def case_values(rows: list[dict], kind: str) -> dict[tuple[str, str], dict[str, float]]:
    """(setting, metric) -> {case: value} from one method's evaluation CSV rows (see the module docstring)."""
    out: dict[tuple[str, str], dict[str, float]] = {}
    if kind == "synthesis":
        for r in rows:
            setting = f"{_display_source(r.get('source', ''))} -> {DISPLAY.get(r['modality'], r['modality'])}"
            for metric in ("psnr", "ssim"):
                value = to_float(r.get(metric))
                if math.isfinite(value):
                    out.setdefault((setting, metric), {})[r["case"]] = value
    elif kind == "brats":
        for column, region in SEG_REGIONS:
            sums: dict[str, list[float]] = {}
            for r in rows:
                value = to_float(r.get(column))
                if math.isfinite(value):
                    sums.setdefault(r["case"], []).append(value)
            out[(region, "mean over subsets")] = {c: 100 * sum(v) / len(v) for c, v in sums.items()}
    else:  # autopet
        out[("PET + CT", "dice")] = {r["case"]: 100 * to_float(r.get("dice")) for r in rows
                                     if math.isfinite(to_float(r.get("dice")))}
    return out


def paired_tests(plan: Any) -> list[dict]:
    """One row per (other method, setting, metric): mean difference to the reference, pairs, p, marked."""
    from scipy.stats import wilcoxon

    labels = list(dict.fromkeys(m.label for m in plan.methods))
    reference = "Ours" if "Ours" in labels else labels[-1]
    values = {(m.label, m.seed): case_values(read_csv(m.csv), plan.kind) for m in plan.methods if m.csv.is_file()}
    rows = []
    for label in (x for x in labels if x != reference):
        keys = dict.fromkeys(k for (lab, _), v in values.items() if lab == reference for k in v)
        for key in keys:
            diffs = []
            for seed in range(plan.seeds):
                ref = values.get((reference, seed), {}).get(key, {})
                other = values.get((label, seed), {}).get(key, {})
                diffs += [ref[case] - other[case] for case in ref if case in other]
            if not diffs:
                continue
            p = float(wilcoxon(diffs).pvalue) if len(diffs) > 1 and any(d != 0 for d in diffs) else 1.0
            rows.append({"reference": reference, "other": label, "setting": key[0], "metric": key[1],
                         "mean_difference": sum(diffs) / len(diffs), "pairs": len(diffs), "p": p,
                         "beyond_spread": p < ALPHA})
    return rows


def tests_markdown(rows: list[dict]) -> str:
    """The paired tests as a Markdown section (empty string when there is nothing to compare)."""
    if not rows:
        return ""
    body = [[f"{r['reference']} - {r['other']}", r["setting"], r["metric"], f"{r['mean_difference']:+.3f}",
             str(r["pairs"]), f"{r['p']:.3g}", "**yes**" if r["beyond_spread"] else "no"] for r in rows]
    return ("\n## Differences beyond the spread\n\nTwo-sided Wilcoxon signed-rank test over (seed, test subject) "
            f"pairs, marked at p < {ALPHA} without correction for multiple comparisons.\n\n"
            + markdown_table(["difference", "setting", "metric", "mean", "pairs", "p", "beyond spread"], body)
            + "\n")
