"""Paper-style summary tables (Markdown or CSV, cells "mean ± std") and the per-case CSV writer.

Layouts follow the paper: synthesis as Tables 2/8/9 (one row per source, PSNR/NMSE/SSIM per target), BraTS
missing-modality segmentation as Table 3 (Dice mean and std per number of missing modalities) and Table 10
(every one of the 15 subsets as a column), AutoPET segmentation as Table 5.

Standard deviations: over cases (population, ddof 0) for synthesis and plain BraTS tables; over the subset
means (sample, ddof 1) for Table 3, which reproduces the paper's "All settings" and "Missing Num = 1" columns
from its Table 10.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from p2gmed.modalities import ALL, DISPLAY

SYNTHESIS_COLUMNS = ("case", "modality", "psnr", "nmse", "ssim")
BRATS_COLUMNS = ("case", "dice_wt", "dice_tc", "dice_et", "dice_et_pp", "hd95_wt", "hd95_tc", "hd95_et")
AUTOPET_COLUMNS = ("case", "dice", "fpv_ml", "fnv_ml")
#: BraTS rows of Tables 3 and 10: (column, display name); Dice is printed in percent as the paper does
BRATS_REGIONS = (
    ("dice_wt", "Whole tumour"), ("dice_tc", "Tumour core"), ("dice_et", "Enhancing tumour"),
    ("dice_et_pp", "Enhancing tumour (post-processed)"),
)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown pipe table (no trailing newline); a `|` inside a cell is escaped."""
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header), *(line(r) for r in rows)])


@dataclass
class Table:
    """A rectangular table of strings with notes printed under it."""

    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [markdown_table(self.header, self.rows)]
        return "\n".join(lines + ([""] + [f"{n}" for n in self.notes] if self.notes else [])) + "\n"

    def csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.header)
        writer.writerows(self.rows)
        return buffer.getvalue()

    def render(self, fmt: str) -> str:
        if fmt not in ("markdown", "csv"):
            raise ValueError(f"unknown table format {fmt!r}; use 'markdown' or 'csv'")
        return self.markdown() if fmt == "markdown" else self.csv()


def mean_std(values: Sequence[float], ddof: int = 0) -> tuple[float, float]:
    """Mean and std of the finite values (NaN/inf dropped); NaN when none is left."""
    finite = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if finite.size == 0:
        return float("nan"), float("nan")
    std = float(finite.std(ddof=ddof)) if finite.size > ddof else float("nan")
    return float(finite.mean()), std


def cell(values: Sequence[float], digits: int = 3, scale: float = 1.0, ddof: int = 0) -> str:
    """"mean ± std" of `values` times `scale`, with the number of finite values when some were dropped."""
    mean, std = mean_std(values, ddof)
    if math.isnan(mean):
        return "n/a"
    text = f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"
    finite = sum(1 for v in values if v is not None and math.isfinite(v))
    return text if finite == len(values) else f"{text} (n={finite})"


def number(value: float | None, digits: int = 2, scale: float = 1.0, missing: str = "n/a") -> str:
    """`value` times `scale` with fixed digits; `missing` for None, NaN or inf (e.g. a rate without cases)."""
    return missing if value is None or not math.isfinite(value) else f"{value * scale:.{digits}f}"


def _source_label(source: str | None) -> str:
    if source is None:
        return "given"
    return "+".join(DISPLAY[m] for m in source[len("from-"):].split("+"))


def _source_key(source: str | None) -> tuple:
    if source is None:
        return (0,)
    mods = source[len("from-"):].split("+")
    return (len(mods), [ALL.index(m) for m in mods])


def _synthesis(rows: list[dict]) -> Table:
    targets = sorted({r["modality"] for r in rows}, key=ALL.index)
    groups: dict = defaultdict(list)
    for r in rows:
        groups[(r.get("source"), r["modality"])].append(r)
    header = ["Source"] + [f"{DISPLAY[t]} {m}" for t in targets for m in ("PSNR ↑", "NMSE ↓", "SSIM ↑")]
    body = []
    for source in sorted({r.get("source") for r in rows}, key=_source_key):
        line = [_source_label(source)]
        for t in targets:
            group = groups.get((source, t), [])
            line += [cell([g[k] for g in group], digits) for k, digits in (("psnr", 3), ("nmse", 3), ("ssim", 4))]
        body.append(line)
    n = len({r["case"] for r in rows})
    return Table(header, body, [f"Mean ± std (population) over {n} cases; PSNR in dB, inf (identical volumes) left out."])


def synthesis_table(rows: list[dict], fmt: str = "markdown") -> str:
    """Tables 2/8/9: one row per source subset, PSNR/NMSE/SSIM "mean ± std" per target modality."""
    return _synthesis(rows).render(fmt)


def _subset_means(rows: list[dict]) -> dict[str, dict[str, float]]:
    """source -> region column -> mean over cases."""
    groups: dict = defaultdict(list)
    for r in rows:
        groups[r.get("source")].append(r)
    return {s: {c: mean_std([g[c] for g in group])[0] for c, _ in BRATS_REGIONS} for s, group in groups.items()}


def missing_modality_summary(
    means: Mapping[Collection[str], Mapping[str, float]], n_modalities: int = 4,
    columns: Sequence[str] = tuple(c for c, _ in BRATS_REGIONS),
) -> dict[str, dict[str, float]]:
    """Table 3 numbers from the per-subset means: per region column, over the subsets of the full set.

    Args:
        means: modality subset (any collection of modality names) -> region column -> mean over cases.
        n_modalities: modalities of the full set; a larger subset in `means` raises it.
        columns: the region columns to summarise.

    Returns:
        column -> {"mean", "std"} over all subset means (std ddof 1, as the paper's Table 3 from its Table 10)
        plus "missing<k>" and "missing<k>_std" over the subsets with k modalities missing (k = 0: the full set).
    """
    sizes = {subset: len(subset) for subset in means}
    total = max([n_modalities, *sizes.values()])
    out = {}
    for column in columns:
        summary = dict(zip(("mean", "std"), mean_std([means[s].get(column, math.nan) for s in sizes], ddof=1)))
        for k in range(total):
            group = [means[s].get(column, math.nan) for s in sizes if sizes[s] == total - k]
            summary[f"missing{k}"], summary[f"missing{k}_std"] = mean_std(group, ddof=1)
        out[column] = summary
    return out


def _subset_summary(rows: list[dict], n_modalities: int) -> Table:
    means = {tuple(s[len("from-"):].split("+")): m for s, m in _subset_means(rows).items() if s}
    summary = missing_modality_summary(means, n_modalities)
    total = max([n_modalities, *(len(s) for s in means)])
    header = ["Region", "All: mean", "All: std", "Full modality"]
    missing_counts = list(range(1, total))
    for k in missing_counts:
        header += [f"Missing {k}: mean", f"Missing {k}: std"]
    body = []
    for column, name in BRATS_REGIONS:
        numbers = summary[column]
        line = [name] + [number(numbers[k], scale=100) for k in ("mean", "std", "missing0")]
        for k in missing_counts:
            line += [number(numbers[f"missing{k}"], scale=100), number(numbers[f"missing{k}_std"], scale=100)]
        body.append(line)
    notes = [(
        f"Dice in %: mean over cases per subset, then mean and std (ddof 1) over the {len(means)} subsets of "
        f"{total} modalities with the given number missing (paper Table 3)."
    )]
    return Table(header, body, notes)


def subset_table(rows: list[dict], fmt: str = "markdown", n_modalities: int = 4) -> str:
    """Table 3: Dice mean and std over subsets, per number of missing modalities (rows need a ``source``).

    Args:
        rows: per-case BraTS rows with a ``source`` (``from-<mod>[+<mod>]``).
        fmt: "markdown" or "csv".
        n_modalities: modalities of the full set (4 for BraTS MRI); missing = this minus the subset size.
    """
    return _subset_summary([r for r in rows if r.get("source")], n_modalities).render(fmt)


def subset_detail_table(rows: list[dict], fmt: str = "markdown", n_modalities: int = 4) -> str:
    """Table 10: mean Dice (%) of every subset as a column, most missing first."""
    means = _subset_means([r for r in rows if r.get("source")])
    total = max([n_modalities, *(len(s.split("+")) for s in means)])
    sources = sorted(means, key=lambda s: (len(s.split("+")), [ALL.index(m) for m in s[5:].split("+")]))
    header = ["Region"] + [_source_label(s) for s in sources]
    body = [["Missing"] + [str(total - len(s.split("+"))) for s in sources]]
    body += [[name] + [number(means[s][column], scale=100) for s in sources] for column, name in BRATS_REGIONS]
    return Table(header, body, ["Dice in %, mean over cases (paper Table 10)."]).render(fmt)


def brats_table(rows: list[dict], fmt: str = "markdown") -> str:
    """Per-region Dice (%) and HD95 (mm), "mean ± std" over cases, one row per source."""
    header = ["Source", "Dice WT", "Dice TC", "Dice ET", "Dice ET (pp)", "HD95 WT", "HD95 TC", "HD95 ET"]
    body = []
    for source in sorted({r.get("source") for r in rows}, key=_source_key):
        group = [r for r in rows if r.get("source") == source]
        line = [_source_label(source)]
        line += [cell([g[c] for g in group], 2, 100.0) for c, _ in BRATS_REGIONS]
        line += [cell([g[f"hd95_{r}"] for g in group], 2) for r in ("wt", "tc", "et")]
        body.append(line)
    notes = ["Dice in %, HD95 in mm; mean ± std (population) over cases. Legacy BraTS empty-mask rules."]
    return Table(header, body, notes).render(fmt)


def autopet_table(summaries: dict, definitions: dict[str, str], fmt: str = "markdown") -> str:
    """Table 5 layout (Dice, DICE-, TPR, TNR, FNR, FPR in %) plus the challenge's Dice, FPV and FNV.

    Args:
        summaries: source (None for a flat prediction folder) -> `autopet_summary` result.
        definitions: aggregate key -> sentence, printed under the table.
    """
    keys = ("dice_paper", "dice_minus", "tpr", "tnr", "fnr", "fpr", "dice_challenge", "fpv_ml", "fnv_ml")
    names = ("Dice", "DICE-", "TPR", "TNR", "FNR", "FPR", "Dice (challenge)", "FPV ml", "FNV ml")
    header = ["Source", *names, "Cases (TP/FN/TN/FP)"]
    body = []
    for source in sorted(summaries, key=_source_key):
        summary = summaries[source]
        counts = "/".join(str(summary[k]) for k in ("tp", "fn", "tn", "fp"))
        body.append([_source_label(source)] + [number(summary[k], scale=100) for k in keys[:7]]
                    + [number(summary[k], 3) for k in keys[7:]] + [f"{summary['n']} ({counts})"])
    notes = [f"- {name}: {definitions[key]}" for key, name in zip(keys, names)]
    return Table(header, body, notes).render(fmt)


def format_value(value) -> str:
    """CSV text of one value: NaN as an empty field, floats with 8 significant digits."""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.8g}"
    return str(value)


def write_csv(path: str | Path, rows: list[dict], columns: Sequence[str]) -> None:
    """Write `rows` with exactly `columns` (+ ``source`` when the rows have one) atomically."""
    from p2gmed.io import write_text

    columns = list(columns) + (["source"] if any("source" in r for r in rows) else [])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([[format_value(r.get(c, "")) for c in columns] for r in rows])
    write_text(path, buffer.getvalue())
