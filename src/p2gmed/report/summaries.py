"""Per-case metric CSVs -> group means, and the multi-method Markdown layouts of `p2g demo` and `p2g reproduce`.

The statistics and table primitives come from `evaluation.tables` (`mean_std`, `missing_modality_summary`,
`markdown_table`, `number`), so the demo report, the reproduced tables and `p2g evaluate` share one definition.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from p2gmed.evaluation.tables import markdown_table, mean_std, missing_modality_summary, number
from p2gmed.modalities import DISPLAY
from p2gmed.report.planning import MRI_SUBSETS, parse_source

#: BraTS regions of the report tables, (CSV column, short name); ET is the post-processed ET
SEG_REGIONS = (("dice_tc", "TC"), ("dice_et_pp", "ET"), ("dice_wt", "WT"))
#: how the report tables show a value that was not measured
MISSING = "—"


def read_csv(path: Path) -> list[dict]:
    """The rows of a CSV file as dicts of strings."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def to_float(text: str | None) -> float:
    """A CSV cell as a float; NaN for an empty or unreadable cell."""
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def mean_by(rows: list[dict], keys: tuple[str, ...], metrics: tuple[str, ...]) -> dict[tuple, dict[str, float]]:
    """Mean (NaNs ignored) and population standard deviation of each metric per group of `keys`.

    `source` values are normalised to frozensets of modality names, `modality` to canonical names.
    Returns: {group: {metric: mean, metric + "_std": std, "n": count}}.
    """
    from p2gmed.modalities import canonical

    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        key = []
        for k in keys:
            value = row.get(k, "")
            key.append(parse_source(value) if k == "source" else canonical(value) if k == "modality" else value)
        groups.setdefault(tuple(key), []).append(row)
    out = {}
    for key, members in groups.items():
        stats: dict[str, float] = {"n": float(len(members))}
        for metric in metrics:
            stats[metric], stats[f"{metric}_std"] = mean_std([to_float(r.get(metric)) for r in members])
        out[key] = stats
    return out


def segmentation_by_subset(per_method: dict[str, dict[tuple, dict[str, float]]], order: tuple[str, ...]) -> str:
    """Table 10 layout: Dice (%) per modality subset and region, one column per method. Keys (source,)."""
    methods = list(per_method)
    header = ["subset", "missing"] + [f"{r} {m}" for _, r in SEG_REGIONS for m in methods]
    rows = []
    for subset in MRI_SUBSETS:
        if not any((frozenset(subset),) in per_method[m] for m in methods):
            continue  # a subset nobody predicted from
        row = [" + ".join(DISPLAY[m] for m in subset), str(len(order) - len(subset))]
        for metric, _ in SEG_REGIONS:
            row += [number(per_method[m].get((frozenset(subset),), {}).get(metric), 2, 100, MISSING) for m in methods]
        rows.append(row)
    return markdown_table(header, rows)


def segmentation_summary(means: dict[tuple, dict[str, float]], order: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Table 3 numbers per region (%): mean/std over the 15 subset means, the mean per number missing.

    Args:
        means: `mean_by(rows, ("source",), ...)`, keyed (frozenset of modalities,).
        order: the full modality set.

    Returns:
        region ("TC", "ET", "WT") -> {"mean", "std" (ddof 1, as the paper), "missing0" (full set), ...}.
    """
    by_subset = {key[0]: stats for key, stats in means.items() if key[0] in {frozenset(s) for s in MRI_SUBSETS}}
    summary = missing_modality_summary(by_subset, len(order), [metric for metric, _ in SEG_REGIONS])
    keys = ("mean", "std", *(f"missing{k}" for k in range(len(order))))
    return {region: {k: 100 * summary[metric][k] for k in keys} for metric, region in SEG_REGIONS}
