"""`p2g demo`: the whole method on the built-in simulated brain data, in one command, with a report.

Stages (each an ordinary `p2g` command line, run in this process; see `report.steps.execute`). On a CPU with
two or more cores, the synthesis tuning runs beside the two segmentation tunings, each side on half of the
cores in its own process (`report/lanes.py`): on 2 cores that is faster than running them one after the other on
both (`benchmarks/lanes.py`: 0.82 of the time; docs/results.md).

1. data        `p2g data make-demo` twice: training subjects and separate held-out test subjects
2. pretrain    Algorithm 1 with the demo preset (`configs/demo-cpu.yaml`)
3. synthesis   Algorithm 2, synthesis, from the pre-trained checkpoint
4. segmentation  Algorithm 2, segmentation, from the pre-trained checkpoint
5. baseline    (full demo only) stock SwinUNETR segmentation from scratch, the Table 3/10 comparison
6. predict     every test subject from each of the 15 modality subsets in one pass (synthesis + segmentation)
7. baselines   trivial synthesis T1 -> T2 / FLAIR: the source copied; a per-subject linear fit (an oracle); and,
               as a reference, the best per-voxel map fitted on the subject (voxelmap oracle)
8. evaluate    synthesis metrics (unit convention) of the model and the baselines, BraTS Dice per subset
9. report      OUT/report.md and OUT/report.html: targets met or not, tables, figure, settings, timings, files

Re-running into the same folder continues: finished stages (markers in OUT/.state/) are skipped, an
interrupted training resumes from its last checkpoint and any other interrupted stage is redone; `--force` redoes
everything. The report is always rewritten. OUT must be new, empty or an earlier demo: p2g removes and replaces
only the files it recorded there (`p2gmed.outputs`), never the user's.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from p2gmed.data.layouts import LABEL_NAMES
from p2gmed.evaluation.tables import markdown_table, number
from p2gmed.io import write_text
from p2gmed.modalities import DISPLAY, MRI
from p2gmed.outputs import OutputFolder
from p2gmed.report.demo_targets import (
    BASELINES,
    Target,
    demo_targets,
    targets_section,
    voxelmap_lines,
    write_synthesis_baselines,
)
from p2gmed.report.html import html_document
from p2gmed.report.planning import (
    CPU_RUN_KINDS,
    MRI_SUBSETS,
    checkpoint_of,
    configs_dir,
    merge_mappings,
    predict_commands,
)
from p2gmed.report.steps import Step, StepResult, execute, plan_seconds
from p2gmed.report.summaries import MISSING, mean_by, read_csv, segmentation_by_subset, segmentation_summary

#: the report's figures (OUT/figures/<name>.png)
FIGURES = ("synthesis-from-flair", "segmentation-all")

SIMULATED_WARNING = (
    "**Simulated data, tiny scale.** Every number below comes from the built-in *simulated* brain MRI "
    "(procedural anatomy and tumours, not patients), a handful of subjects, a few dozen training steps and a "
    "tiny network (feature size 12). The numbers show that the pipeline runs end to end; they say nothing about "
    "the method's accuracy and must not be compared with the paper. A real run needs a GPU (the paper used "
    "4 x A100), the real BraTS 2023 / BraTS 2018 data, the paper presets (`configs/brats23-transfer.yaml`, "
    "`configs/brats18-segmentation.yaml`: ROI 96^3, feature size 48, 1000 epochs) and many GPU-hours; "
    "`p2g reproduce table2 --scale paper` runs that plan."
)


@dataclass
class DemoSettings:
    """How big the demo is. `quick` must stay under 3 minutes on 2 CPU cores, the full demo under 15."""

    quick: bool
    train_subjects: int
    test_subjects: int
    pretrain_steps: int
    synthesis_steps: int
    segmentation_steps: int
    baseline_steps: int
    """Steps of the stock SwinUNETR segmentation from scratch (the comparison of Tables 3/10); 0 skips it."""
    all_subsets: bool
    """Predict from all 15 modality subsets; False: the four single modalities and the full set only."""
    seed: int = 0

    @property
    def baseline(self) -> bool:
        return self.baseline_steps > 0

    @property
    def subsets(self) -> list[tuple[str, ...]]:
        if self.all_subsets:
            return list(MRI_SUBSETS)
        return [(m,) for m in MRI] + [MRI]


def demo_settings(quick: bool = False) -> DemoSettings:
    """The step budgets, chosen from the learning curves of `benchmarks/learning.py` (docs/results.md)."""
    if quick:
        return DemoSettings(True, train_subjects=4, test_subjects=1, pretrain_steps=4, synthesis_steps=6,
                            segmentation_steps=160, baseline_steps=0, all_subsets=False)
    # 30 training subjects, not 10, for the same steps: with 10, false-positive edema in normal white matter
    # halved WT Dice from all four modalities (0.62 against 0.83 held out; docs/results.md)
    # 500 segmentation steps, not 400: the two tunings run side by side, one per core, which pays for the extra
    # steps (docs/results.md, "Two tunings side by side"). 700 synthesis steps from T1 alone cost about what 360
    # from every source did (one source decoded per step, not up to four; 780 took 14.6 of the 15 minutes).
    # 5 test subjects, not 3: the mean over 3 swung by up to 0.2 Dice between two draws of subjects
    # (docs/results.md)
    return DemoSettings(False, train_subjects=30, test_subjects=5, pretrain_steps=40, synthesis_steps=700,
                        segmentation_steps=500, baseline_steps=150, all_subsets=True)


#: the demo's preset: tiny-cpu with the learning settings chosen from the curves (docs/results.md)
PRESET = "demo-cpu.yaml"


def _preset_lesions() -> str:
    """The lesion filter of the demo preset, for the report (both segmentation models inherit it)."""
    from p2gmed.config import load_config

    return load_config(configs_dir() / PRESET).inference.lesions


def _config(out: Path, name: str, extra: dict) -> tuple[Path, dict]:
    """A run config extending the demo preset (absolute path, so the file works from anywhere)."""
    return out / "configs" / f"{name}.yaml", {"extends": str(configs_dir() / PRESET), **extra}


def demo_steps(out: Path, settings: DemoSettings) -> list[Step]:
    """The stages of the demo as a plan (see the module docstring)."""
    out = Path(out)
    train, test = out / "data" / "train", out / "data" / "test"
    runs, preds, evals = out / "runs", out / "predictions", out / "evaluation"
    steps = [Step("data", f"simulated brain MRI: {settings.train_subjects} training + {settings.test_subjects} test "
                  "subjects", [
                      ["data", "make-demo", "--out", str(train), "--kind", "brain",
                       "--subjects", str(settings.train_subjects), "--seed", str(settings.seed)],
                      ["data", "make-demo", "--out", str(test), "--kind", "brain",
                       "--subjects", str(settings.test_subjects), "--seed", str(settings.seed + 1000)],
                  ], outputs=(out / "data",))]

    def training(name: str, about: str, argv: list[str], steps_: int, extra: dict, lane: str = "") -> Path:
        run = runs / name
        cfg, mapping = _config(out, name, extra)
        argv = argv + ["--data", str(train), "--out", str(run), "--config", str(cfg), "--max-steps", str(steps_)]
        steps.append(Step(name, about, [argv], outputs=(run,), configs={cfg: mapping}, run=run, lane=lane))
        return run

    def kind(name: str, extra: dict) -> dict:  # the run kind's demo settings (planning.CPU_RUN_KINDS), then extra
        return merge_mappings(CPU_RUN_KINDS[name], extra)

    pre = training("pretrain", "pre-training (Algorithm 1)", ["pretrain"], settings.pretrain_steps,
                   kind("pretrain", {}))
    init = ["--init", str(pre / "checkpoints" / "last.pt")]
    syn = training("synthesis", "synthesis tuning from the pre-trained model, T1 as the source (Table 1's T1 -> T2 "
                   "setting)", ["finetune", "--task", "synthesis", *init], settings.synthesis_steps,
                   # + 1 - SSIM (not in the paper, docs/method.md): held out, T1 -> T2 SSIM 0.860 after 400 steps
                   # against 0.838 with the MSE alone (docs/results.md, "Synthesis: an SSIM term"). T1 as the only
                   # source: tuned from every source the model never put the tumour into a FLAIR synthesized from T1
                   # (SSIM 0.80); from T1 alone it does (held out 0.90; docs/results.md, "T1 -> FLAIR")
                   kind("synthesis", {"tune": {"task": "synthesis", "sources": ["t1n"]}, "loss": {"ssim": 1.0}}),
                   lane="synthesis")
    seg = training("segmentation", "segmentation tuning from the pre-trained model",
                   ["finetune", "--task", "segmentation", *init], settings.segmentation_steps,
                   kind("segmentation", {"tune": {"task": "segmentation"}}), lane="segmentation")
    methods = {"P2G": (preds / "p2g", [syn, seg])}
    if settings.baseline:
        base = training("baseline-swinunetr", "baseline: stock SwinUNETR segmentation from scratch",
                        ["finetune", "--task", "segmentation", "--architecture", "swinunetr"], settings.baseline_steps,
                        # the paper's class-weighted CE: from scratch in 150 steps the preset's uniform CE learns
                        # no tumour core (TC / ET 0.00 / 0.00 from all four, 30 Nov 10:11; docs/results.md)
                        kind("segmentation", {"tune": {"task": "segmentation", "architecture": "swinunetr",
                                                       "init": "scratch"}, "loss": {"ce_weighting": "mmformer"}}),
                        lane="segmentation")
        methods["SwinUNETR (scratch)"] = (preds / "swinunetr", [base])

    def expand(folder: Path, models: list[Path]) -> Callable[[], list[list[str]]]:
        def commands() -> list[list[str]]:
            from p2gmed.data.read import read_dataset

            argvs = predict_commands([checkpoint_of(m) for m in models], read_dataset(test), settings.subsets,
                                     MRI, folder)
            return [a + ["--no-progress"] for a in argvs]
        return commands

    # the baseline's predictions need only the baseline: they run in its lane, while the synthesis tuning goes on
    lane_of = {"SwinUNETR (scratch)": "segmentation"}
    for label in sorted(methods, key=lambda name: name not in lane_of):
        folder, models = methods[label]
        steps.append(Step(f"predict-{folder.name}", f"{label}: test subjects from each of {len(settings.subsets)} "
                          "modality subsets",
                          expand=expand(folder, models), outputs=(folder,),
                          template=f"p2g predict --model ... --out {folder} --case <id> --input ... --subsets ..."
                          "   # once per test subject, into from-<subset>/ folders", lane=lane_of.get(label, "")))
    baselines = preds / "baselines"
    steps.append(Step("baselines", "synthesis baselines T1 -> T2 / FLAIR: the source copied, a per-subject "
                      "linear intensity fit and a per-voxel lookup table (oracles)", action=lambda: write_synthesis_baselines(test, baselines),
                      outputs=(baselines,)))
    evaluate = [["evaluate", "synthesis", "--pred", str(preds / "p2g"), "--ref", str(test),
                 "--out", str(evals / "synthesis.csv"), "--convention", "unit"]]
    evaluate += [["evaluate", "synthesis", "--pred", str(baselines / name), "--ref", str(test),
                  "--out", str(evals / f"synthesis-{name}.csv"), "--convention", "unit", "--allow-missing"]
                 for name in BASELINES]  # the baselines write T2 and FLAIR only
    evaluate += [["evaluate", "brats", "--pred", str(folder), "--ref", str(test),
                  "--out", str(evals / f"segmentation-{folder.name}.csv")] for folder, _ in methods.values()]
    steps.append(Step("evaluate", "synthesis metrics and BraTS Dice per subset", evaluate, outputs=(evals,)))
    return steps


# --------------------------------------------------------------------------------------------------
# Report


def synthesis_table(rows: list[dict]) -> str:
    """Table 2/9 layout from the synthesis CSV: single-source rows, PSNR/NMSE/SSIM per target; the
    given modality itself is marked (it is copied, not synthesized)."""
    means = mean_by(rows, ("source", "modality"), ("psnr", "nmse", "ssim"))
    header = ["source"] + [f"{DISPLAY[t]} {m}" for t in MRI for m in ("PSNR", "NMSE", "SSIM")]
    body = []
    for src in MRI:
        line = [DISPLAY[src]]
        for tgt in MRI:
            stats = means.get((frozenset([src]), tgt), {})
            line += ["given"] * 3 if tgt == src else [number(stats.get(m), 3, missing=MISSING)
                                                      for m in ("psnr", "nmse", "ssim")]
        body.append(line)
    return markdown_table(header, body)


def summary_table(per_method: dict[str, dict]) -> str:
    """Table 3 layout: Dice (%) per region, mean/std over the 15 subsets and by number of missing modalities."""
    header = ["region", "method", "mean", "std", "full", "1 missing", "2 missing", "3 missing"]
    body = []
    for region in ("TC", "ET", "WT"):
        for method, means in per_method.items():
            s = segmentation_summary(means, MRI)[region]
            body.append([region, method] + [number(s[k], 2, missing=MISSING) for k in (
                "mean", "std", "missing0", "missing1", "missing2", "missing3")])
    return markdown_table(header, body)


def stage_table(results: list[StepResult]) -> str:
    rows = [[r.name, r.about + (f" (side by side, lane {r.lane})" if r.lane else ""), r.status, f"{r.seconds:.1f}"]
            for r in results]
    rows.append(["total", "wall clock (stages run side by side count once)", "", f"{plan_seconds(results):.1f}"])
    return markdown_table(["stage", "what", "status", "seconds"], rows)


def write_report(
    out: Path, settings: DemoSettings, results: list[StepResult], *, synthesis_csv: Path | None,
    segmentation_csvs: dict[str, Path], figures: list[Path], environment: dict[str, str] | None = None,
    targets: list[Target] | None = None,
    references: list[str] | None = None,
) -> Path:
    """Write OUT/report.md and OUT/report.html; returns the Markdown path.

    Args:
        out: the demo folder; paths in the report are relative to it.
        settings: the demo's size.
        results: one per stage, with timings.
        synthesis_csv: per-case synthesis metrics (`p2g evaluate synthesis`), or None if not available.
        segmentation_csvs: method label -> per-case BraTS metrics CSV.
        figures: image files (inside `out`) to show.
        environment: extra lines for the settings section (versions, device).
        targets: the demo's promises and whether they were met (`demo_targets`), shown first.
        references: lines after the targets that are no promise (`voxelmap_lines`).
    """
    out = Path(out)

    def rel(path: Path) -> str:
        try:
            return str(Path(path).relative_to(out))
        except ValueError:
            return str(path)

    md = [f"# p2gmed demo report{' (quick)' if settings.quick else ''}", "", f"> {SIMULATED_WARNING}", ""]
    md += targets_section(targets, references) if targets else []
    md += ["## Settings", ""]
    md += [f"- {k.replace('_', ' ')}: `{v}`" for k, v in asdict(settings).items()]
    md += [f"- preset: `configs/{PRESET}` (tiny-cpu: ROI 32 x 32 x 64, feature size 12, one Swin block per stage; "
           "with the learning settings of docs/results.md)"]
    md += [f"- segmentation post-processing: `inference.lesions: {_preset_lesions()}` (which connected lesions a "
           "segmentation keeps; docs/method.md §8)"]
    md += [f"- {k}: `{v}`" for k, v in (environment or {}).items()]
    md += ["", "## Timings per stage", "", stage_table(results), ""]
    md += ["## Modality synthesis (Table 2/9 layout)", "",
           "Mean over the test subjects; one source modality in, every modality out. Unit convention: each "
           "volume scaled to [0, 1] by its own 0.5-99.5 percentiles (over the reference's non-zero voxels), "
           "PSNR in dB, NMSE, SSIM (Gaussian).", ""]
    md += [synthesis_table(read_csv(synthesis_csv)) if synthesis_csv and Path(synthesis_csv).is_file()
           else "_No synthesis metrics (the evaluation stage did not run)._", ""]
    seg = {label: mean_by(read_csv(p), ("source",), ("dice_wt", "dice_tc", "dice_et", "dice_et_pp"))
           for label, p in segmentation_csvs.items() if Path(p).is_file()}
    md += ["## Missing-modality segmentation (Table 3 and Table 10 layouts)", ""]
    if seg:
        md += ["Dice in % (BraTS regions; ET post-processed), mean over the test subjects for each of the 15 "
               "modality subsets; the summary averages the subset means.", "", summary_table(seg), "",
               segmentation_by_subset(seg, MRI), ""]
    else:
        md += ["_No segmentation metrics (the evaluation stage did not run)._", ""]
    if figures:
        md += ["## Figures", ""] + [f"![{Path(f).stem}]({rel(f)})" for f in figures] + [""]
    md += ["## Files", "", markdown_table(["what", "where"], [
        ["simulated data (training / test)", "`data/train/`, `data/test/`"],
        ["run configurations", "`configs/*.yaml`"],
        ["training runs (config.yaml, checkpoints/, metrics.jsonl, tb/)", "`runs/<stage>/`"],
        ["predictions, one folder per source subset", "`predictions/<method>/from-<modalities>/`"],
        ["per-case metrics", "`evaluation/*.csv`"],
        ["stage markers (delete one to redo that stage)", "`.state/<stage>.json`"],
        ["this report", "`report.md`, `report.html`"],
    ]), ""]
    md += ["## Commands", "", "Every stage is an ordinary `p2g` command; to run them by hand:", "", "```"]
    for r in results:
        md += [f"# {r.name}"] + r.commands
    md += ["```", ""]
    text = "\n".join(md)
    write_text(out / "report.md", text)
    write_text(out / "report.html", html_document(text, "p2gmed demo report"))
    return out / "report.md"


def make_figures(out: Path, test: Path, pred: Path) -> list[Path]:
    """Figures of the first test subject (with `report.figures`): every modality synthesized from FLAIR alone
    (the paper's Fig. 3 setting) and the segmentation from all four modalities over FLAIR."""
    import nibabel as nib
    import numpy as np

    from p2gmed.data.read import read_dataset
    from p2gmed.report.figures import plot_segmentation_overlay, plot_synthesis_case

    def load(path: Path) -> np.ndarray:
        return np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)

    subject = read_dataset(test)[0]
    case, figures = subject.subject_id, []
    source = pred / "from-t2f"
    gt = {m: load(subject.images[m]) for m in MRI}
    synthesized = {m: load(source / f"{case}_{m}.nii.gz") for m in MRI if (source / f"{case}_{m}.nii.gz").is_file()}
    if synthesized:
        figures.append(plot_synthesis_case(gt, synthesized, out / "figures" / f"{FIGURES[0]}.png",
                                           title=f"{case}: every modality from FLAIR alone (simulated data)"))
    seg = pred / ("from-" + "+".join(MRI)) / f"{case}_seg.nii.gz"
    if subject.label is not None and seg.is_file():
        figures.append(plot_segmentation_overlay(gt["t2f"], load(subject.label), load(seg),
                                                 out / "figures" / f"{FIGURES[1]}.png",
                                                 title=f"{case}: reference and predicted tumour regions",
                                                 label_names=LABEL_NAMES["brats2023"]))
    return figures


def default_threads() -> int:
    """Every CPU core this process may use. On an idle machine that is fastest; on a machine shared with other
    busy processes, OpenMP threads wait on each other and `--threads 1` can be faster."""
    from p2gmed.report.lanes import available_cores

    return max(1, len(available_cores()))


def run_demo(out: str | Path = "p2g-demo", quick: bool = False, force: bool = False, threads: int | None = None,
             echo: Callable[[str], None] = print) -> Path:
    """Run the demo into `out` (continuing an earlier run there) and write its report; returns report.md.

    Args:
        out: the demo folder.
        quick: the small variant (see `demo_settings`).
        force: redo every stage.
        threads: torch CPU threads for every stage (default `default_threads()`).
        echo: progress printer.
    """
    import torch

    import p2gmed

    from p2gmed.report.lanes import side_by_side

    torch.set_num_threads(threads or default_threads())
    out = Path(out)
    settings = demo_settings(quick)
    echo(f"# p2g demo{' --quick' if quick else ''} into {out}: simulated data, tiny scale")
    # two lanes (synthesis | segmentation), but one for --quick, whose synthesis tuning is a few steps: there is
    # nothing to run beside the segmentation tuning
    lanes, cores = side_by_side(1 if quick else 2, threads)
    results = execute(demo_steps(out, settings), out / ".state", force=force, echo=echo, lanes=lanes, cores=cores)
    figures = []
    top = OutputFolder(out)
    own = [out / "figures" / f"{n}.png" for n in FIGURES] + [out / "report.md", out / "report.html"]
    top.check_targets(own, force=True)
    top.record(own, "p2g demo")
    try:
        figures = make_figures(out, out / "data" / "test", out / "predictions" / "p2g")
    except Exception as exc:  # noqa: BLE001 - a figure must never cost the user the report
        echo(f"    (figure skipped: {exc})")
    evals = out / "evaluation"
    seg = {"P2G": evals / "segmentation-p2g.csv"}
    if settings.baseline:
        seg["SwinUNETR (scratch)"] = evals / "segmentation-swinunetr.csv"
    environment = {"p2gmed": p2gmed.__version__, "torch": torch.__version__, "python": platform.python_version(),
                   "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor()
                   or "cpu", "threads": str(torch.get_num_threads())}
    seconds = plan_seconds(results)
    synthesis_csvs = {"model": evals / "synthesis.csv"} | {b: evals / f"synthesis-{b}.csv" for b in BASELINES}
    targets = demo_targets(settings.quick, evals / "segmentation-p2g.csv", synthesis_csvs, seconds)
    references = [] if settings.quick else voxelmap_lines(synthesis_csvs)
    report = write_report(out, settings, results, synthesis_csv=evals / "synthesis.csv", segmentation_csvs=seg,
                          figures=figures, environment=environment, targets=targets, references=references)
    for target in targets:
        echo("    " + target.line()[2:].replace("**", ""))
    echo(f"==> report: {report} (and report.html); stages took {seconds:.0f} s")
    return report
