"""`p2g reproduce TABLE`: one table of the paper, end to end, as a declarative plan of `p2g` commands.

A plan is a list of `Step`s (pre-training, tunings, baselines, predictions, evaluations, the table) executed in
order. Every step is made of ordinary `p2g` command lines, run in-process, so `--dry-run` prints exactly what a
user could type by hand. A finished step leaves a marker in `OUT/.state/`; re-running the same command skips
finished steps and redoes an interrupted one from scratch (its outputs are removed first); `--force` redoes all.

`--scale tiny` writes, for each run, a config file that `extends:` the paper preset and lays the tiny-cpu
preset over it (and `train.epochs: 0`, so that the preset's epoch count does not override `max_steps`), so every
table runs on the built-in data on a CPU. `--scale paper` uses the paper presets unchanged.

The held-out test subjects are either `--test-data DIR` or, by default, 20 % of the patients of `--data`,
written to `OUT/split.json` (`data.split_file` of every training run on `--data`, so they are never trained on).
The result is `OUT/<table>.md` and `OUT/<table>.csv`: the measured numbers next to the paper's (`PAPER`).
"""

from __future__ import annotations

import csv
import json
import math
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from p2gmed.errors import InputError
from p2gmed.io import write_text
from p2gmed.modalities import DISPLAY, MRI, NAC, PETCT

TABLES = tuple(f"table{i}" for i in range(1, 11))
SCALES = ("tiny", "paper")

#: the 15 MRI subsets in the mmFormer/RFNet table order (Table 10); names are canonical modality names
MRI_SUBSETS: tuple[tuple[str, ...], ...] = (
    ("t2w",), ("t1c",), ("t1n",), ("t2f",), ("t1c", "t2w"), ("t1c", "t1n"), ("t2f", "t1n"), ("t1n", "t2w"),
    ("t2f", "t2w"), ("t2f", "t1c"), ("t2f", "t1c", "t1n"), ("t2f", "t1n", "t2w"), ("t2f", "t1c", "t2w"),
    ("t1c", "t1n", "t2w"), ("t2f", "t1c", "t1n", "t2w"),
)


def configs_dir() -> Path:
    """The folder of the YAML presets (`configs/` at the repository root of this installation)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "configs" / "tiny-cpu.yaml").is_file():
            return parent / "configs"
    raise InputError("the configs/ folder with the presets was not found next to this installation of p2gmed")


def subset_name(modalities: tuple[str, ...] | list[str], order: tuple[str, ...]) -> str:
    """Folder name of a source subset as `p2g evaluate` expects it: `from-t1n+t2f` (model modality order)."""
    return "from-" + "+".join(m for m in order if m in modalities)


def parse_source(text: str) -> frozenset[str]:
    """`from-t1n+t2f`, `t1n+t2f` or `t1n` -> frozenset of canonical modality names."""
    from p2gmed.modalities import canonical

    text = text.strip()
    text = text[5:] if text.startswith("from-") else text
    return frozenset(canonical(m) for m in text.split("+") if m)


def _merge(base: dict, over: dict) -> dict:
    """Nested dict update (a new dict): `over` wins, sub-mappings are merged key by key."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def fmt_cmd(argv: list[str]) -> str:
    return "p2g " + " ".join(shlex.quote(a) for a in argv)


# --------------------------------------------------------------------------------------------------
# Steps and their execution (also used by `p2g demo`)


@dataclass
class Step:
    """One unit of a plan: `p2g` command lines and/or a Python action, skipped once finished.

    Attributes:
        name: unique within the plan; the marker is `STATE/<name>.json`.
        about: one line for the progress header and the report.
        commands: `p2g` argument lists known when the plan is built.
        expand: returns more argument lists when the step runs (e.g. one `p2g predict` per test case).
        template: what `expand` will run, shown by `--dry-run`.
        action: Python work run after the commands (writing a split, a table, a report).
        outputs: files/folders removed before an interrupted step is redone.
        configs: config files written before the commands run (path -> YAML mapping).
    """

    name: str
    about: str
    commands: list[list[str]] = field(default_factory=list)
    expand: Callable[[], list[list[str]]] | None = None
    template: str = ""
    action: Callable[[], None] | None = None
    outputs: tuple[Path, ...] = ()
    configs: dict[Path, dict] = field(default_factory=dict)


@dataclass
class StepResult:
    name: str
    about: str
    status: str
    """ran | reused (finished in an earlier invocation) | planned (dry run)"""
    seconds: float
    commands: list[str]


def run_p2g(argv: list[str]) -> None:
    """Run one `p2g` command in this process; a non-zero exit becomes an InputError naming the command."""
    from p2gmed.cli import main

    try:
        rc = main(list(argv))
    except SystemExit as exc:  # argparse usage errors
        rc = exc.code if isinstance(exc.code, int) else 2
    if rc:
        raise InputError(f"the command `{fmt_cmd(argv)}` failed (exit {rc}); see its message above")


def write_configs(step: Step) -> None:
    for path, mapping in step.configs.items():
        write_text(path, "# written by p2gmed (reproduce/demo); edit the preset it extends instead\n"
                   + yaml.safe_dump(mapping, sort_keys=False))


def execute(
    steps: list[Step],
    state_dir: Path,
    *,
    force: bool = False,
    dry_run: bool = False,
    echo: Callable[[str], None] = print,
    runner: Callable[[list[str]], None] = run_p2g,
) -> list[StepResult]:
    """Run the steps in order, skipping those with a marker in `state_dir` (unless `force`).

    Args:
        steps: the plan.
        state_dir: where the per-step markers (JSON: seconds, commands) are kept.
        force: redo every step.
        dry_run: print the commands, run nothing, write nothing.
        echo: progress printer.
        runner: executes one `p2g` argument list (tests pass a stub).

    Returns:
        One StepResult per step, in order.
    """
    names = [s.name for s in steps]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate step names in plan: {names}")
    results = []
    for index, step in enumerate(steps, 1):
        marker = state_dir / f"{step.name}.json"
        header = f"[{index}/{len(steps)}] {step.name}: {step.about}"
        if dry_run:
            echo(f"# {header}")
            for path in step.configs:
                echo(f"#   writes {path}")
            shown = [fmt_cmd(c) for c in step.commands] + ([step.template] if step.template else [])
            for line in shown:
                echo(line)
            if step.action is not None and not shown:
                echo("#   (Python step, no command)")
            results.append(StepResult(step.name, step.about, "planned", 0.0, shown))
            continue
        if marker.is_file() and not force:
            record = json.loads(marker.read_text())
            echo(f"==> {header} (done earlier, {record['seconds']:.0f} s; skipped)")
            results.append(StepResult(step.name, step.about, "reused", record["seconds"], record["commands"]))
            continue
        echo(f"==> {header}")
        marker.unlink(missing_ok=True)
        for path in step.outputs:  # an interrupted or forced step starts from a clean slate
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        start = time.perf_counter()
        write_configs(step)
        commands = list(step.commands) + (step.expand() if step.expand else [])
        for argv in commands:
            echo(f"    $ {fmt_cmd(argv)}")
            runner(argv)
        if step.action is not None:
            step.action()
        seconds = time.perf_counter() - start
        shown = [fmt_cmd(c) for c in commands]
        write_text(marker, json.dumps({"seconds": seconds, "commands": shown}, indent=1))
        echo(f"    {step.name} finished in {seconds:.1f} s")
        results.append(StepResult(step.name, step.about, "ran", seconds, shown))
    return results


# --------------------------------------------------------------------------------------------------
# Splits and test cases


def make_split(subjects: list, test_fraction: float = 0.2, val_fraction: float = 0.1, seed: int = 0) -> dict:
    """Split subjects by patient into train/val/test id lists (deterministic in `seed`).

    At least one test patient; a validation patient only when at least three patients remain for training.
    """
    import random

    patients = sorted({s.patient_id for s in subjects})
    if len(patients) < 2:
        raise InputError(f"need at least 2 patients to hold one out for testing, found {len(patients)}")
    random.Random(seed).shuffle(patients)
    n_test = max(1, round(test_fraction * len(patients)))
    rest = len(patients) - n_test
    n_val = max(1, round(val_fraction * len(patients))) if rest >= 4 else 0
    groups = {"test": set(patients[:n_test]), "val": set(patients[n_test:n_test + n_val])}
    split: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for s in sorted(subjects, key=lambda s: s.subject_id):
        key = next((k for k, g in groups.items() if s.patient_id in g), "train")
        split[key].append(s.subject_id)
    return split


def predict_commands(
    models: list[Path], subjects: list, subsets: list[tuple[str, ...]], order: tuple[str, ...], out: Path,
    reconstruct: bool = False,
) -> list[list[str]]:
    """One `p2g predict` per (test subject, source subset): `out/from-<subset>/<case>_*.nii.gz`.

    The case name is given explicitly (`--case`): AutoPET/NAC file names (CTres.nii.gz) do not carry it.
    `reconstruct` writes the model's reconstruction of the given modalities (the paper's T1 -> T1 entries)
    instead of copies of the inputs.
    """
    commands = []
    for subset in subsets:
        folder = out / subset_name(subset, order)
        for subject in subjects:
            missing = [m for m in subset if m not in subject.images]
            if missing:
                raise InputError(f"test subject {subject.subject_id} lacks {', '.join(missing)} needed for {subset}")
            argv = ["predict"]
            for model in models:
                argv += ["--model", str(model)]
            argv += ["--out", str(folder), "--case", subject.subject_id]
            argv += ["--input", *(f"{m}={subject.images[m]}" for m in subset)]
            if reconstruct:
                argv.append("--reconstruct-given")
            commands.append(argv)
    return commands


def checkpoint_of(run_dir: Path) -> Path:
    """best.pt when the run validated, else last.pt."""
    best = run_dir / "checkpoints" / "best.pt"
    return best if best.is_file() else run_dir / "checkpoints" / "last.pt"


# --------------------------------------------------------------------------------------------------
# Metric CSVs -> means


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _num(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def mean_by(rows: list[dict], keys: tuple[str, ...], metrics: tuple[str, ...]) -> dict[tuple, dict[str, float]]:
    """Mean (NaNs ignored) and standard deviation of each metric per group of `keys`.

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
            values = [v for v in (_num(r.get(metric)) for r in members) if math.isfinite(v)]
            stats[metric] = sum(values) / len(values) if values else math.nan
            var = sum((v - stats[metric]) ** 2 for v in values) / len(values) if values else math.nan
            stats[f"{metric}_std"] = math.sqrt(var) if values else math.nan
        out[key] = stats
    return out


def fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A pipe table; `|` inside cells is escaped."""
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *(line(r) for r in rows)])


def synthesis_matrix(
    means: dict[tuple, dict[str, float]], sources: list[tuple[str, ...]], targets: tuple[str, ...],
    metrics: tuple[str, ...] = ("psnr", "nmse", "ssim"),
) -> str:
    """Table 2/9 layout: one row per source subset, PSNR/NMSE/SSIM per target. `means` keyed (source, modality)."""
    header = ["source"] + [f"{DISPLAY[t]} {m.upper()}" for t in targets for m in metrics]
    rows = []
    for src in sources:
        row = [" + ".join(DISPLAY[m] for m in src)]
        for t in targets:
            stats = means.get((frozenset(src), t), {})
            row += [fmt(stats.get(m)) for m in metrics]
        rows.append(row)
    return markdown_table(header, rows)


SEG_REGIONS = (("dice_tc", "TC"), ("dice_et_pp", "ET"), ("dice_wt", "WT"))


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
            row += [fmt(100 * per_method[m].get((frozenset(subset),), {}).get(metric, math.nan), 2) for m in methods]
        rows.append(row)
    return markdown_table(header, rows)


def segmentation_summary(means: dict[tuple, dict[str, float]], order: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Table 3 numbers per region: mean/std over the 15 subset means, full set, mean per number missing (%)."""
    out = {}
    for metric, region in SEG_REGIONS:
        per_subset = {s: 100 * means.get((frozenset(s),), {}).get(metric, math.nan) for s in MRI_SUBSETS}
        values = [v for v in per_subset.values() if math.isfinite(v)]
        summary = {"mean": sum(values) / len(values) if values else math.nan}
        summary["std"] = math.sqrt(sum((v - summary["mean"]) ** 2 for v in values) / len(values)) if values else math.nan
        for missing in range(len(order)):
            vals = [v for s, v in per_subset.items() if len(order) - len(s) == missing and math.isfinite(v)]
            summary[f"missing{missing}"] = sum(vals) / len(vals) if vals else math.nan
        out[region] = summary
    return out


# --------------------------------------------------------------------------------------------------
# The paper's numbers (ICLR-2025 submission text). Keys: (method, setting, metric) -> value.


def _syn_rows(method: str, matrix: list[list[float]], targets: tuple[str, ...] = MRI) -> dict:
    """Table 9 rows: per source (in MRI order) PSNR/NMSE/SSIM for each target (in MRI order)."""
    out = {}
    for src, values in zip(MRI, matrix):
        for k, tgt in enumerate(targets):
            for j, metric in enumerate(("psnr", "nmse", "ssim")):
                out[(method, f"{DISPLAY[src]} -> {DISPLAY[tgt]}", metric)] = values[3 * k + j]
    return out


_TABLE9 = {
    **_syn_rows("Ours", [
        [43.472, 0.003, 0.996, 34.547, 0.045, 0.955, 30.756, 0.065, 0.944, 31.693, 0.049, 0.937],
        [34.077, 0.020, 0.962, 46.663, 0.003, 0.996, 30.775, 0.063, 0.942, 32.224, 0.046, 0.941],
        [32.646, 0.028, 0.955, 33.857, 0.051, 0.949, 43.653, 0.006, 0.991, 32.224, 0.046, 0.941],
        [32.752, 0.026, 0.951, 33.471, 0.055, 0.944, 30.571, 0.068, 0.940, 43.624, 0.004, 0.995]]),
    **_syn_rows("SwinUNETR", [
        [32.815, 0.092, 0.941, 31.655, 0.202, 0.912, 24.650, 0.361, 0.857, 27.593, 0.202, 0.883],
        [32.456, 0.100, 0.929, 33.001, 0.156, 0.926, 25.125, 0.366, 0.859, 27.699, 0.211, 0.882],
        [30.102, 0.171, 0.896, 30.354, 0.283, 0.883, 26.831, 0.268, 0.887, 27.234, 0.242, 0.872],
        [31.371, 0.135, 0.916, 31.285, 0.240, 0.905, 25.579, 0.338, 0.867, 29.092, 0.148, 0.923]]),
}
_TABLE1_PAIRS = (("t1n", "t2w"), ("t2w", "t2f"), ("t1n", "t1c"))
_TABLE1 = {
    **{k: v for k, v in _TABLE9.items() if k[0] == "Ours" and k[1] in
       {f"{DISPLAY[a]} -> {DISPLAY[b]}" for a, b in _TABLE1_PAIRS}},
    ("Ours", "T2 -> FLAIR", "psnr"): 32.224, ("Ours", "T2 -> FLAIR", "nmse"): 0.046,
    ("Ours", "T2 -> FLAIR", "ssim"): 0.941,
    ("MS-SPADE (3D, paper only)", "T1 -> T2", "psnr"): 25.818, ("MS-SPADE (3D, paper only)", "T1 -> T2", "nmse"): 0.079,
    ("MS-SPADE (3D, paper only)", "T1 -> T2", "ssim"): 0.904,
    ("MS-SPADE (3D, paper only)", "T2 -> FLAIR", "psnr"): 25.074,
    ("MS-SPADE (3D, paper only)", "T2 -> FLAIR", "nmse"): 0.098,
    ("MS-SPADE (3D, paper only)", "T2 -> FLAIR", "ssim"): 0.867,
    ("MS-SPADE (3D, paper only)", "T1 -> T1ce", "psnr"): 26.119,
    ("MS-SPADE (3D, paper only)", "T1 -> T1ce", "ssim"): 0.912,
}


def _summary_rows(method: str, region: str, values: list[float]) -> dict:
    keys = ("mean", "std", "missing0", "missing1", "missing2", "missing3")
    return {(method, region, k): v for k, v in zip(keys, values)}


_TABLE3 = {
    **_summary_rows("Ours", "TC", [79.78, 4.55, 86.72, 83.64, 79.56, 74.51]),
    **_summary_rows("Ours", "ET", [63.49, 7.58, 70.64, 64.44, 63.87, 60.19]),
    **_summary_rows("Ours", "WT", [87.63, 3.25, 91.19, 89.49, 87.45, 85.17]),
    **_summary_rows("mmFormer (paper only)", "TC", [76.43, 5.83, 82.22, 79.78, 76.55, 71.45]),
    **_summary_rows("mmFormer (paper only)", "ET", [62.14, 18.60, 79.91, 71.54, 61.77, 48.86]),
    **_summary_rows("mmFormer (paper only)", "WT", [84.84, 5.35, 88.26, 87.59, 85.36, 80.45]),
}
#: Table 10 keeps only the full-modality column: the text of the paper does not say which subset each other
#: column is (the grey boxes are lost), so only the unambiguous column is compared.
_TABLE10 = {("Ours", "T1 + T1ce + T2 + FLAIR", r): v for r, v in (("TC", 86.72), ("ET", 70.64), ("WT", 91.19))}


def _ablation_rows(values: dict[str, list[float]], metric: str) -> dict:
    return {(f"pretrain {i + 1}", pair, metric): v for pair, vs in values.items() for i, v in enumerate(vs)}


_TABLE4 = {
    **_ablation_rows({"PET -> PET": [0.9903, 0.9835, 0.9955, 0.9931, 0.9957, 0.9969],
                      "CT -> CT": [0.9739, 0.9475, 0.9419, 0.9437, 0.9664, 0.9780],
                      "PET -> CT": [0.9161, 0.9148, 0.9215, 0.9070, 0.9121, 0.9282],
                      "CT -> PET": [0.9884, 0.9824, 0.9851, 0.9834, 0.9842, 0.9883]}, "ssim"),
    **_ablation_rows({"PET -> PET": [44.8811, 42.2223, 46.5603, 45.5829, 47.4198, 49.547],
                      "CT -> CT": [37.2309, 32.0777, 31.2692, 33.1866, 35.4194, 37.098],
                      "PET -> CT": [28.1046, 29.3181, 29.6694, 26.8885, 27.2708, 30.154],
                      "CT -> PET": [39.8490, 39.0795, 39.1718, 39.4528, 39.4348, 41.584]}, "psnr"),
}
_TABLE5 = {
    ("UNETR (scratch)", "PET + CT", "dice"): 10.81, ("UNETR (scratch)", "PET + CT", "dice_minus"): 23.14,
    ("SwinUNETR (scratch)", "PET + CT", "dice"): 43.45, ("SwinUNETR (scratch)", "PET + CT", "dice_minus"): 62.60,
    ("Ours", "PET + CT", "dice"): 48.20, ("Ours", "PET + CT", "dice_minus"): 61.16,
    ("nnU-Net (paper only)", "PET + CT", "dice"): 33.10,
    ("SwinUNETR + Tang et al. pre-training (paper only)", "PET + CT", "dice"): 44.06,
}
_TABLE6 = {
    (m, pair, metric): v
    for m, vals in {"UNETR (scratch)": (0.4899, 0.8998, 21.7330, 42.8557),
                    "SwinUNETR (scratch)": (0.5853, 0.9265, 23.5628, 42.5495),
                    "Ours": (0.6939, 0.9516, 25.8498, 46.4658)}.items()
    for pair, metric, v in (("NAC-PET -> CT", "ssim", vals[0]), ("NAC-PET -> PET", "ssim", vals[1]),
                            ("NAC-PET -> CT", "psnr", vals[2]), ("NAC-PET -> PET", "psnr", vals[3]))
}
_TABLE7 = {
    (f"pretrain {i + 1}", "PET + CT", metric): v
    for i, (dice, dice_minus) in enumerate(((40.85, 55.79), (44.34, 48.63), (42.42, 60.67), (46.31, 55.77),
                                            (44.42, 57.80), (48.20, 61.16)))
    for metric, v in (("dice", dice), ("dice_minus", dice_minus))
}
PAPER: dict[str, dict[tuple[str, str, str], float]] = {
    "table1": _TABLE1, "table2": {k: v for k, v in _TABLE9.items()}, "table3": _TABLE3, "table4": _TABLE4,
    "table5": _TABLE5, "table6": _TABLE6, "table7": _TABLE7, "table8": _TABLE1, "table9": _TABLE9,
    "table10": _TABLE10,
}
ABLATIONS = ("table4-1-eq", "table4-2-inv", "table4-3-eq-inv", "table4-4-eq-prior", "table4-5-inv-prior",
             "table4-6-eq-inv-prior")


# --------------------------------------------------------------------------------------------------
# Plans


@dataclass
class Method:
    """One row group of a table: predictions from `models` (run names) evaluated into `csv`."""

    label: str
    models: tuple[str, ...]
    pred: Path
    csv: Path


@dataclass
class TablePlan:
    table: str
    title: str
    kind: str
    """synthesis | brats | autopet: the evaluation and the table layout."""
    builtin: str
    """make-demo --kind giving data this table runs on at tiny scale: brain | petct | nac."""
    modalities: tuple[str, ...]
    steps: list[Step]
    methods: list[Method]
    out: Path


class _Planner:
    """Builds the steps of one table: configs, trainings, predictions, evaluations, the table."""

    def __init__(self, table, data, out, scale, pretrain_data, test_data, max_steps, modalities):
        self.table, self.data, self.out, self.scale = table, Path(data), Path(out), scale
        self.pretrain_data = Path(pretrain_data) if pretrain_data else self.data
        self.test_data = Path(test_data) if test_data else None
        self.max_steps, self.modalities = max_steps, modalities
        self.split = self.out / "split.json"
        self.steps: list[Step] = []
        self.methods: list[Method] = []
        self.tiny = yaml.safe_load((configs_dir() / "tiny-cpu.yaml").read_text()) if scale == "tiny" else {}
        if self.test_data is None:
            self.steps.append(Step("split", f"hold out 20 % of the patients of {self.data} for testing",
                                   action=self._write_split, outputs=(self.split,)))

    def _write_split(self) -> None:
        from p2gmed.data.read import read_dataset

        write_text(self.split, json.dumps(make_split(read_dataset(self.data)), indent=1))

    def config(self, name: str, preset: str, extra: dict, data: Path) -> tuple[Path, dict]:
        """A run's config file and its mapping: the paper preset, the tiny overrides (tiny scale), `extra`."""
        mapping: dict = {"extends": str(configs_dir() / preset)}
        if self.scale == "tiny":
            mapping = _merge(mapping, _merge(self.tiny, {"train": {"epochs": 0}}))
        mapping = _merge(mapping, extra)
        if data == self.data and self.test_data is None:
            mapping = _merge(mapping, {"data": {"split_file": str(self.split)}})
        return self.out / "configs" / f"{name}.yaml", mapping

    def _train(self, name: str, about: str, argv: list[str], preset: str, extra: dict, data: Path) -> Path:
        run = self.out / "runs" / name
        cfg_path, mapping = self.config(name, preset, extra, data)
        argv = argv + ["--data", str(data), "--out", str(run), "--config", str(cfg_path)]
        if self.max_steps:
            argv += ["--max-steps", str(self.max_steps)]
        self.steps.append(Step(name, about, [argv], outputs=(run,), configs={cfg_path: mapping}))
        return run

    def pretrain(self, name: str, preset: str, extra: dict | None = None, data: Path | None = None) -> Path:
        return self._train(name, f"pre-training ({preset})", ["pretrain"], preset, extra or {},
                           data or self.pretrain_data)

    def finetune(self, name: str, preset: str, task: str, init: Path | None, architecture: str = "p2g",
                 encoder_only: bool = False) -> Path:
        """A tuning run: from `init`'s last checkpoint (all weights, or the encoder only), else from scratch."""
        argv = ["finetune", "--task", task, "--architecture", architecture]
        if init is not None:
            argv += ["--init", str(init / "checkpoints" / "last.pt")] + (["--encoder-only"] if encoder_only else [])
        extra = {"tune": {"task": task, "architecture": architecture,
                          "init": "scratch" if init is None else "encoder" if encoder_only else "full"}}
        about = f"{task} tuning of {architecture} ({preset}, {'from ' + init.name if init else 'from scratch'})"
        return self._train(name, about, argv, preset, extra, self.data)

    def _test_subjects(self) -> list:
        from p2gmed.data.read import read_dataset

        if self.test_data is not None:
            return read_dataset(self.test_data)
        test = set(json.loads(self.split.read_text())["test"])
        return [s for s in read_dataset(self.data) if s.subject_id in test]

    def method(self, label: str, runs: list[Path], subsets: list[tuple[str, ...]], kind: str) -> None:
        """Predict the test subjects from every subset with `runs`' checkpoints, then evaluate."""
        slug = "-".join(r.name for r in runs)
        pred, csv_path = self.out / "predictions" / slug, self.out / "evaluation" / f"{slug}.csv"

        def expand() -> list[list[str]]:
            return predict_commands([checkpoint_of(r) for r in runs], self._test_subjects(), subsets,
                                    self.modalities, pred, reconstruct=kind == "synthesis")

        models = " ".join(f"--model {checkpoint_of(r)}" for r in runs)
        template = (f"p2g predict {models} --out {pred}/from-<subset> --case <id> --input <modality>=<file> ..."
                    f"   # for each test subject and each of the {len(subsets)} source subsets")
        self.steps.append(Step(f"predict-{slug}", f"predictions of {label}", expand=expand, template=template,
                               outputs=(pred,)))
        ref = self.test_data or self.data
        argv = ["evaluate", kind, "--pred", str(pred), "--ref", str(ref), "--out", str(csv_path)]
        if kind == "synthesis":
            argv += ["--convention", "paper"]
        if self.test_data is None:
            argv += ["--allow-missing"]  # the reference holds the training subjects too
        self.steps.append(Step(f"evaluate-{slug}", f"{kind} metrics of {label}", [argv], outputs=(csv_path,)))
        self.methods.append(Method(label, tuple(r.name for r in runs), pred, csv_path))


def build_plan(
    table: str, data: str | Path, out: str | Path, scale: str = "tiny", *, pretrain_data: str | Path | None = None,
    test_data: str | Path | None = None, max_steps: int | None = None,
) -> TablePlan:
    """The declarative plan of one paper table (see the module docstring).

    Args:
        table: "table1" ... "table10" (also "1" ... "10").
        data: the tuning/training data set (any layout).
        out: the output folder of the reproduction.
        scale: "tiny" (tiny-cpu overrides on each paper preset) or "paper".
        pretrain_data: data for pre-training when it differs (Table 3/10: BraTS23 pre-training, BraTS18 tuning).
        test_data: held-out test set; default: 20 % of the patients of `data`.
        max_steps: cap every training run at this many steps (smoke runs).

    Raises:
        InputError: unknown table or scale.
    """
    table = f"table{table}" if str(table).isdigit() else str(table).lower()
    if table not in TABLES:
        raise InputError(f"unknown table '{table}'; choose one of {', '.join(TABLES)}")
    if scale not in SCALES:
        raise InputError(f"unknown scale '{scale}'; choose tiny or paper")
    number = int(table[5:])
    modalities = MRI if number in (1, 2, 3, 8, 9, 10) else NAC if number == 6 else PETCT
    p = _Planner(table, data, out, scale, pretrain_data, test_data, max_steps, modalities)
    singles = [(m,) for m in modalities]
    if number in (1, 2, 8, 9):
        title, kind, builtin = "MRI modality transfer on BraTS 2023", "synthesis", "brain"
        pre = p.pretrain("p2g-pretrain", "brats23-transfer.yaml")
        p.method("Ours", [pre], singles, kind)  # the pre-trained model is the transfer model (Sec. 4.1)
        if number in (2, 9):
            base = p.finetune("swinunetr-synthesis", "brats23-transfer.yaml", "synthesis", None, "swinunetr")
            p.method("SwinUNETR", [base], singles, kind)
    elif number in (3, 10):
        title, kind, builtin = "Missing-modality segmentation on BraTS 2018", "brats", "brain"
        pre = p.pretrain("p2g-pretrain", "brats23-transfer.yaml")
        seg = p.finetune("p2g-segmentation", "brats18-segmentation.yaml", "segmentation", pre)
        p.method("Ours", [seg], list(MRI_SUBSETS), kind)
        base = p.finetune("swinunetr-segmentation", "brats18-segmentation.yaml", "segmentation", None, "swinunetr")
        p.method("SwinUNETR (scratch)", [base], list(MRI_SUBSETS), kind)
    elif number in (4, 7):
        title = "Ablation of the constraints on AutoPET-II: " + ("synthesis" if number == 4 else "segmentation")
        kind, builtin = ("synthesis" if number == 4 else "autopet"), "petct"
        for i, name in enumerate(ABLATIONS, 1):
            pre = p.pretrain(f"pretrain-{i}", f"ablations/{name}.yaml")
            if number == 4:
                p.method(f"pretrain {i}", [pre], singles, kind)
            else:
                seg = p.finetune(f"segmentation-{i}", f"ablations/{name}.yaml", "segmentation", pre)
                p.method(f"pretrain {i}", [seg], [modalities], kind)
    elif number == 5:
        title, kind, builtin = "Lesion segmentation on AutoPET-II", "autopet", "petct"
        pre = p.pretrain("p2g-pretrain", "autopet-pretrain.yaml")
        p.method("Ours", [p.finetune("p2g-segmentation", "autopet-segmentation.yaml", "segmentation", pre)],
                 [modalities], kind)
        for arch, label in (("swinunetr", "SwinUNETR (scratch)"), ("unetr", "UNETR (scratch)")):
            run = p.finetune(f"{arch}-segmentation", "autopet-segmentation.yaml", "segmentation", None, arch)
            p.method(label, [run], [modalities], kind)
    else:  # 6
        title, kind, builtin = "NAC-PET to AC-PET and CT", "synthesis", "nac"
        # Pre-training on AC-PET and CT; on NAC data without a separate PET/CT set its ct/pet channels are used.
        pre = p.pretrain("p2g-pretrain", "autopet-pretrain.yaml",
                         {"data": {"layout": "auto"}} if pretrain_data is None else None)
        # the decoder is re-initialised for the new modality set: the encoder (and prior) only, P2G architecture
        ours = p.finetune("p2g-nac", "nac-synthesis.yaml", "synthesis", pre, encoder_only=True)
        p.method("Ours", [ours], [("pet_nac",)], kind)
        for arch, label in (("swinunetr", "SwinUNETR (scratch)"), ("unetr", "UNETR (scratch)")):
            run = p.finetune(f"{arch}-nac", "nac-synthesis.yaml", "synthesis", None, arch)
            p.method(label, [run], [("pet_nac",)], kind)
    plan = TablePlan(table, title, kind, builtin, modalities, p.steps, p.methods, p.out)
    plan.steps.append(Step("table", f"{table}.md and {table}.csv next to the paper's numbers",
                           action=lambda: write_table(plan), outputs=(p.out / f"{table}.md", p.out / f"{table}.csv")))
    return plan


# --------------------------------------------------------------------------------------------------
# The table: measured next to the paper


def _pair(src: frozenset, tgt: str, order: tuple[str, ...]) -> str:
    return " + ".join(DISPLAY[m] for m in order if m in src) + f" -> {DISPLAY[tgt]}"


def measured_rows(plan: TablePlan) -> dict[tuple[str, str, str], float]:
    """(method, setting, metric) -> value measured from the evaluation CSVs of the plan's methods."""
    number = int(plan.table[5:])
    out: dict[tuple[str, str, str], float] = {}
    for method in plan.methods:
        rows = read_csv(method.csv)
        if plan.kind == "synthesis":
            for (src, tgt), stats in mean_by(rows, ("source", "modality"), ("psnr", "nmse", "ssim")).items():
                for metric in ("psnr", "nmse", "ssim"):
                    out[(method.label, _pair(src, tgt, plan.modalities), metric)] = stats[metric]
        elif plan.kind == "brats":
            means = mean_by(rows, ("source",), tuple(m for m, _ in SEG_REGIONS))
            if number == 3:
                for region, summary in segmentation_summary(means, plan.modalities).items():
                    for key, value in summary.items():
                        out[(method.label, region, key)] = value
            else:
                for subset in MRI_SUBSETS:
                    setting = " + ".join(DISPLAY[m] for m in plan.modalities if m in subset)
                    for metric, region in SEG_REGIONS:
                        out[(method.label, setting, region)] = 100 * means.get((frozenset(subset),), {}).get(
                            metric, math.nan)
        else:  # autopet: the paper sets Dice to 0 where it is undefined (no lesion anywhere); Dice- skips those
            dice = [_num(r.get("dice")) for r in rows]
            defined = [d for d in dice if math.isfinite(d)]
            out[(method.label, "PET + CT", "dice")] = 100 * sum(defined) / len(dice) if dice else math.nan
            out[(method.label, "PET + CT", "dice_minus")] = 100 * sum(defined) / len(defined) if defined else math.nan
            for metric in ("fpv_ml", "fnv_ml"):
                values = [v for v in (_num(r.get(metric)) for r in rows) if math.isfinite(v)]
                out[(method.label, "PET + CT", metric)] = sum(values) / len(values) if values else math.nan
    if plan.kind == "synthesis" and number in (4, 6):  # the paper's "Avg." column
        for label in {k[0] for k in out}:
            for metric in ("psnr", "ssim"):
                vals = [v for (m, s, mt), v in out.items() if m == label and mt == metric and math.isfinite(v)]
                if vals:
                    out[(label, "Avg.", metric)] = sum(vals) / len(vals)
    return out


def comparison(plan: TablePlan, measured: dict[tuple[str, str, str], float]) -> list[dict]:
    """Long-format rows (method, setting, metric, measured, paper) over the union of measured and paper keys.

    Only the settings the paper reports, plus every measured one, appear; a missing side is NaN.
    """
    paper = PAPER[plan.table]
    settings_of_paper = {k[1] for k in paper}
    keys = list(paper) + [k for k in measured if k not in paper and (k[1] in settings_of_paper or not paper)]
    if plan.table in ("table2", "table9") or plan.kind == "brats":
        keys += [k for k in measured if k not in keys]
    return [
        {"table": plan.table, "method": m, "setting": s, "metric": mt,
         "measured": measured.get((m, s, mt), math.nan), "paper": paper.get((m, s, mt), math.nan)}
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
            line.append("" if r is None else f"{fmt(r['measured'])} ({fmt(r['paper'])})")
        body.append(line)
    return markdown_table(["method", "setting", *metrics], body)


def write_table(plan: TablePlan) -> tuple[Path, Path]:
    """Write OUT/<table>.md and OUT/<table>.csv from the evaluation CSVs; returns their paths."""
    rows = comparison(plan, measured_rows(plan))
    md_path, csv_path = plan.out / f"{plan.table}.md", plan.out / f"{plan.table}.csv"
    note = ("Each cell: measured (paper). The paper's numbers come from the full data sets at the paper's scale; "
            "a tiny-scale run on the built-in simulated data only shows that the pipeline runs end to end.")
    if plan.kind == "brats":
        note += " ET is the post-processed ET (dice_et_pp); Dice in %."
    write_text(md_path, f"# {plan.table}: {plan.title}\n\n{note}\n\n{comparison_markdown(rows)}\n")
    lines = ["table,method,setting,metric,measured,paper"]
    for r in rows:
        cells = [r["table"], r["method"], r["setting"], r["metric"], fmt(r["measured"], 6), fmt(r["paper"], 6)]
        lines.append(",".join(f'"{c}"' if "," in c else c.replace("—", "") for c in cells))
    write_text(csv_path, "\n".join(lines) + "\n")
    return md_path, csv_path


def reproduce(
    table: str, data: str | Path, out: str | Path, scale: str = "tiny", *, pretrain_data=None, test_data=None,
    max_steps: int | None = None, dry_run: bool = False, force: bool = False, echo: Callable[[str], None] = print,
) -> list[StepResult]:
    """Build the plan of `table` and execute it (or print it with `dry_run`). See `build_plan`."""
    plan = build_plan(table, data, out, scale, pretrain_data=pretrain_data, test_data=test_data,
                      max_steps=max_steps)
    for path, what in ((data, "--data"), (pretrain_data, "--pretrain-data"), (test_data, "--test-data")):
        if path is not None and not dry_run and not Path(path).exists():
            raise InputError(f"{what} {path} does not exist")
    echo(f"# p2g reproduce {plan.table} ({plan.title}), scale {scale}: {len(plan.steps)} steps into {plan.out}")
    return execute(plan.steps, Path(out) / ".state", force=force, dry_run=dry_run, echo=echo)
