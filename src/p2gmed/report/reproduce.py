"""`p2g reproduce TABLE`: one table of the paper, end to end, as a declarative plan of `p2g` commands.

A plan is a list of `report.steps.Step`s (pre-training, tunings, baselines, predictions, evaluations, the table)
executed in order by `report.steps.execute`: ordinary `p2g` command lines, so `--dry-run` prints exactly what a
user could type by hand, and finished steps (markers in `OUT/.state/`) are skipped on a re-run, an interrupted
training resumes from its last checkpoint, and only files p2g recorded in OUT are ever removed or replaced.

`--scale tiny` writes, for each run, a config file that `extends:` the paper preset and lays the tiny-cpu
preset over it (and `train.epochs: 0`, so that the preset's epoch count does not override `max_steps`), so every
table runs on the built-in data on a CPU. `--scale small` lays the small-cpu preset over it instead (the tiny
network with the demo's learning settings) and gives each run kind the step budget of `SMALL_RUNS`: tables whose
models learn on 2 CPU cores (docs/results.md). `--scale paper` uses the paper presets unchanged.

The held-out test subjects are either `--test-data DIR` or, by default, 20 % of the patients of `--data`,
written to `OUT/split.json` (`data.split_file` of every training run on `--data`, so they are never trained on).
The result is `OUT/<table>.md` and `OUT/<table>.csv`: the measured numbers next to the paper's
(`report.paper_numbers.PAPER`), written by `report.comparison.write_table`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from p2gmed.config_loading import preset_settings
from p2gmed.errors import InputError
from p2gmed.io import write_text
from p2gmed.modalities import MRI, NAC, PETCT
from p2gmed.report.comparison import write_table
from p2gmed.report.paper_numbers import ABLATION_NAMES
from p2gmed.report.planning import (
    BASE_SEED,
    CPU_RUN_KINDS,
    MRI_SUBSETS,
    checkpoint_of,
    configs_dir,
    make_split,
    merge_mappings,
    predict_commands,
)
from p2gmed.report.steps import Step, StepResult, execute

TABLES = tuple(f"table{i}" for i in range(1, 11))
SCALES = ("tiny", "small", "paper")
#: --scale small: the preset laid over every paper preset, and each run kind's settings on top of it (the demo's,
#: with these step budgets)
SMALL_PRESET = "small-cpu.yaml"
SMALL_STEPS = {"pretrain": 100, "segmentation": 400, "synthesis": 200}
SMALL_RUNS = {kind: merge_mappings(CPU_RUN_KINDS[kind], {"train": {"max_steps": steps}})
              for kind, steps in SMALL_STEPS.items()}
#: the pre-training presets (configs/ablations/) of the six constraint ablations of Tables 4 and 7
ABLATIONS = ("table4-1-eq", "table4-2-inv", "table4-3-eq-inv", "table4-4-eq-prior", "table4-5-inv-prior",
             "table4-6-eq-inv-prior")


# --------------------------------------------------------------------------------------------------
# Plans


def _scale_overlay(scale: str) -> dict:
    """The settings laid over every paper preset at this scale: its CPU preset (`extends` resolved) and
    `train.epochs: 0`, so that the paper preset's epoch count does not override the steps; none at paper scale."""
    if scale == "paper":
        return {}
    preset = preset_settings(configs_dir() / ("tiny-cpu.yaml" if scale == "tiny" else SMALL_PRESET), [])
    return merge_mappings(preset, {"train": {"epochs": 0}})


@dataclass
class Method:
    """One row group of a table: predictions from `models` (run names) evaluated into `csv`."""

    label: str
    models: tuple[str, ...]
    pred: Path
    csv: Path
    seed: int = 0
    """Which of the plan's seeds (0 ... seeds - 1) trained the models."""


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
    seeds: int = 1
    scale: str = "tiny"


class _Planner:
    """Builds the steps of one table: configs, trainings, predictions, evaluations, the table."""

    def __init__(self, table, data, out, scale, pretrain_data, test_data, max_steps, modalities, seeds=1):
        self.table, self.data, self.out, self.scale = table, Path(data), Path(out), scale
        self.seeds, self.seed = seeds, 0
        self.pretrain_data = Path(pretrain_data) if pretrain_data else self.data
        self.test_data = Path(test_data) if test_data else None
        self.max_steps, self.modalities = max_steps, modalities
        self.split = self.out / "split.json"
        self.steps: list[Step] = []
        self.methods: list[Method] = []
        self.overlay = _scale_overlay(scale)
        if self.test_data is None:
            self.steps.append(Step("split", f"hold out 20 % of the patients of {self.data} for testing",
                                   action=self._write_split, outputs=(self.split,)))

    def _write_split(self) -> None:
        from p2gmed.data.read import read_dataset

        write_text(self.split, json.dumps(make_split(read_dataset(self.data)), indent=1))

    def config(self, name: str, preset: str, extra: dict, data: Path) -> tuple[Path, dict]:
        """A run's config file and its mapping: the paper preset, the scale's overrides, `extra`."""
        mapping: dict = {"extends": str(configs_dir() / preset)}
        mapping = merge_mappings(mapping, self.overlay)
        mapping = merge_mappings(mapping, extra)
        if data == self.data and self.test_data is None:
            mapping = merge_mappings(mapping, {"data": {"split_file": str(self.split)}})
        return self.out / "configs" / f"{name}.yaml", mapping

    def _train(self, name: str, about: str, argv: list[str], preset: str, extra: dict, data: Path) -> Path:
        if self.seeds > 1:  # the same configuration again: other initial weights and crops, the same split
            name, about = f"{name}-seed{self.seed}", f"{about}, seed {self.seed + 1} of {self.seeds}"
            extra = merge_mappings(extra, {"train": {"seed": BASE_SEED + self.seed}})
        run = self.out / "runs" / name
        cfg_path, mapping = self.config(name, preset, extra, data)
        argv = argv + ["--data", str(data), "--out", str(run), "--config", str(cfg_path)]
        if self.max_steps:
            argv += ["--max-steps", str(self.max_steps)]
        self.steps.append(Step(name, about, [argv], outputs=(run,), configs={cfg_path: mapping}, run=run))
        return run

    def pretrain(self, name: str, preset: str, extra: dict | None = None, data: Path | None = None) -> Path:
        return self._train(name, f"pre-training ({preset})", ["pretrain"], preset,
                           merge_mappings(self._small("pretrain"), extra or {}), data or self.pretrain_data)

    def _small(self, kind: str) -> dict:
        return SMALL_RUNS[kind] if self.scale == "small" else {}

    def finetune(self, name: str, preset: str, task: str, init: Path | None, architecture: str = "p2g",
                 encoder_only: bool = False, extra: dict | None = None) -> Path:
        """A tuning run: from `init`'s last checkpoint (all weights, or all but the decoder), else from scratch."""
        argv = ["finetune", "--task", task, "--architecture", architecture]
        if init is not None:
            argv += ["--init", str(init / "checkpoints" / "last.pt")] + (["--encoder-only"] if encoder_only else [])
        extra = merge_mappings(merge_mappings(self._small(task), extra or {}), {"tune": {
            "task": task, "architecture": architecture,
            "init": "scratch" if init is None else "encoder" if encoder_only else "full"}})
        about = f"{task} tuning of {architecture} ({preset}, {'from ' + init.name if init else 'from scratch'})"
        tune = yaml.safe_load((configs_dir() / preset).read_text()).get("tune", {})
        if tune.get("sources"):  # say which pairs are tuned (Table 6: NAC-PET -> CT, AC-PET)
            targets = ", ".join(tune.get("targets") or ["every modality"])
            about += f": {'+'.join(tune['sources'])} -> {targets}"
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
            # the model's own reconstruction of its input where the table reports identity pairs (T1 -> T1,
            # PET -> PET); Table 6 reports none, and its NAC-PET output is not trained
            reconstruct = kind == "synthesis" and self.table != "table6"
            return predict_commands([checkpoint_of(r) for r in runs], self._test_subjects(), subsets,
                                    self.modalities, pred, reconstruct=reconstruct)

        models = " ".join(f"--model {checkpoint_of(r)}" for r in runs)
        template = (f"p2g predict {models} --out {pred} --case <id> --input <modality>=<file> ... --subsets ..."
                    f"   # for each test subject, its {len(subsets)} source subsets in one pass into from-<subset>/")
        self.steps.append(Step(f"predict-{slug}", f"predictions of {label}", expand=expand, template=template,
                               outputs=(pred,)))
        ref = self.test_data or self.data
        argv = ["evaluate", kind, "--pred", str(pred), "--ref", str(ref), "--out", str(csv_path)]
        if kind == "synthesis":
            argv += ["--convention", "paper"]
        if self.test_data is None:
            argv += ["--allow-missing"]  # the reference holds the training subjects too
        self.steps.append(Step(f"evaluate-{slug}", f"{kind} metrics of {label}", [argv], outputs=(csv_path,)))
        self.methods.append(Method(label, tuple(r.name for r in runs), pred, csv_path, self.seed))


def build_plan(
    table: str, data: str | Path, out: str | Path, scale: str = "tiny", *, pretrain_data: str | Path | None = None,
    test_data: str | Path | None = None, max_steps: int | None = None, seeds: int = 1,
) -> TablePlan:
    """The declarative plan of one paper table (see the module docstring).

    Args:
        table: "table1" ... "table10" (also "1" ... "10").
        data: the tuning/training data set (any layout).
        out: the output folder of the reproduction.
        scale: "tiny" (tiny-cpu overrides on each paper preset), "small" (small-cpu and `SMALL_RUNS`) or "paper".
        pretrain_data: data for pre-training when it differs (Table 3/10: BraTS23 pre-training, BraTS18 tuning).
        test_data: held-out test set; default: 20 % of the patients of `data`.
        max_steps: cap every training run at this many steps (smoke runs).
        seeds: run every configuration this many times (train.seed = 20, 21, ...: other initial weights and
            crops, the same split); the table then shows mean +/- std and paired tests (`report.seeds`).

    Raises:
        InputError: unknown table or scale, seeds < 1.
    """
    table = f"table{table}" if str(table).isdigit() else str(table).lower()
    if table not in TABLES:
        raise InputError(f"unknown table '{table}'; choose one of {', '.join(TABLES)}")
    if scale not in SCALES:
        raise InputError(f"unknown scale '{scale}'; choose {', '.join(SCALES)}")
    table_no = int(table[5:])
    modalities = MRI if table_no in (1, 2, 3, 8, 9, 10) else NAC if table_no == 6 else PETCT
    if seeds < 1:
        raise InputError(f"--seeds must be at least 1, got {seeds}")
    p = _Planner(table, data, out, scale, pretrain_data, test_data, max_steps, modalities, seeds)
    for seed in range(seeds):
        p.seed = seed
        first = len(p.steps)
        title, kind, builtin = _configurations(p, table_no, modalities, pretrain_data)
        if seeds > 1:  # a seed's steps depend only on each other: seeds may run side by side (`execute(lanes=)`)
            for step in p.steps[first:]:
                step.lane = f"seed{seed}"
    plan = TablePlan(table, title, kind, builtin, modalities, p.steps, p.methods, p.out, seeds, scale)
    plan.steps.append(Step("table", f"{table}.md and {table}.csv next to the paper's numbers",
                           action=lambda: write_table(plan), outputs=(p.out / f"{table}.md", p.out / f"{table}.csv")))
    return plan


def _configurations(p: _Planner, table_no: int, modalities: tuple[str, ...], pretrain_data) -> tuple[str, str, str]:
    """Add every run and method of the table (for the planner's current seed); returns (title, kind, builtin)."""
    singles = [(m,) for m in modalities]
    if table_no in (1, 2, 8, 9):
        title, kind, builtin = "MRI modality transfer on BraTS 2023", "synthesis", "brain"
        pre = p.pretrain("p2g-pretrain", "brats23-transfer.yaml")
        p.method("Ours", [pre], singles, kind)  # the pre-trained model is the transfer model (Sec. 4.1)
        if table_no in (2, 9):
            base = p.finetune("swinunetr-synthesis", "brats23-transfer.yaml", "synthesis", None, "swinunetr")
            p.method("SwinUNETR", [base], singles, kind)
    elif table_no in (3, 10):
        title, kind, builtin = "Missing-modality segmentation on BraTS 2018", "brats", "brain"
        pre = p.pretrain("p2g-pretrain", "brats23-transfer.yaml")
        seg = p.finetune("p2g-segmentation", "brats18-segmentation.yaml", "segmentation", pre)
        p.method("Ours", [seg], list(MRI_SUBSETS), kind)
        base = p.finetune("swinunetr-segmentation", "brats18-segmentation.yaml", "segmentation", None, "swinunetr")
        p.method("SwinUNETR (scratch)", [base], list(MRI_SUBSETS), kind)
    elif table_no in (4, 7):
        title = "Ablation of the constraints on AutoPET-II: " + ("synthesis" if table_no == 4 else "segmentation")
        kind, builtin = ("synthesis" if table_no == 4 else "autopet"), "petct"
        for i, name in enumerate(ABLATIONS, 1):
            pre = p.pretrain(f"pretrain-{i}", f"ablations/{name}.yaml")
            if table_no == 4:
                p.method(ABLATION_NAMES[i - 1], [pre], singles, kind)
            else:
                # the ablations change pre-training only: every tuning is Table 5's, L_inv included (App. B.3.2),
                # in the architecture of its pre-training (with or without O)
                ablation = yaml.safe_load((configs_dir() / "ablations" / f"{name}.yaml").read_text())
                seg = p.finetune(f"segmentation-{i}", "autopet-segmentation.yaml", "segmentation", pre,
                                 extra={"model": {"use_prior": bool(ablation["model"]["use_prior"])}})
                p.method(ABLATION_NAMES[i - 1], [seg], [modalities], kind)
    elif table_no == 5:
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
        # App. B.4: NAC-PET -> CT and NAC-PET -> AC-PET only (the preset's tune.sources / tune.targets); the
        # decoder is re-initialised: everything else (encoder, prior O, attention, fusion) comes from pre-training
        ours = p.finetune("p2g-nac", "nac-synthesis.yaml", "synthesis", pre, encoder_only=True)
        p.method("Ours", [ours], [("pet_nac",)], kind)
        for arch, label in (("swinunetr", "SwinUNETR (scratch)"), ("unetr", "UNETR (scratch)")):
            run = p.finetune(f"{arch}-nac", "nac-synthesis.yaml", "synthesis", None, arch)
            p.method(label, [run], [("pet_nac",)], kind)
    return title, kind, builtin


def reproduce(
    table: str, data: str | Path, out: str | Path, scale: str = "tiny", *, pretrain_data=None, test_data=None,
    max_steps: int | None = None, dry_run: bool = False, force: bool = False, echo: Callable[[str], None] = print,
    seeds: int = 1, threads: int | None = None,
) -> list[StepResult]:
    """Build the plan of `table` and execute it (or print it with `dry_run`). See `build_plan`.

    With several seeds on a CPU of two or more cores, the seeds run side by side, each on its share of the first
    `threads` cores (default: all this process may use); on a GPU, one after the other.
    """
    plan = build_plan(table, data, out, scale, pretrain_data=pretrain_data, test_data=test_data,
                      max_steps=max_steps, seeds=seeds)
    for path, what in ((data, "--data"), (pretrain_data, "--pretrain-data"), (test_data, "--test-data")):
        if path is not None and not dry_run and not Path(path).exists():
            raise InputError(f"{what} {path} does not exist")
    echo(f"# p2g reproduce {plan.table} ({plan.title}), scale {scale}, {seeds} seed(s): {len(plan.steps)} steps "
         f"into {plan.out}")
    lanes, cores = 1, None
    if seeds > 1 and not dry_run:
        from p2gmed.report.lanes import side_by_side

        lanes, cores = side_by_side(seeds, threads)
    return execute(plan.steps, Path(out) / ".state", force=force, dry_run=dry_run, echo=echo, lanes=lanes,
                   cores=cores)
