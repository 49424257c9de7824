"""Learning curves on the built-in brain data: does a setting learn, how fast, in steps and in seconds?

`make bench-learning` (or `python benchmarks/learning.py`) writes a simulated brain data set (training subjects
plus separate held-out test subjects), then for each compared setting tunes a model with `p2g finetune` (a
subprocess, so threads and memory are its own) with validation on the held-out subjects every `--eval-every`
steps, and prints the curve:

- segmentation: Dice WT / TC / ET, each the mean over the held-out subjects and over the subsets "all four
  modalities" and "each modality alone" (what `p2g finetune` validates), against the step and the cumulative
  training seconds (validation time excluded);
- synthesis: PSNR (dB, unit convention, single source -> every other target) against steps and seconds.

After the last step the final model is scored on the held-out subjects the way the demo's targets are stated:
Dice WT/TC/ET from all four modalities and from FLAIR alone (also after keeping the largest connected lesion,
`inference.keep_largest_component`); synthesis PSNR/SSIM (unit convention) of T1 -> T2
and T1 -> FLAIR next to two trivial baselines, the source copied and the source mapped to the target by a
per-subject linear intensity fit (an oracle: it sees the target). Scores are computed on the model's working
grid in normalised intensities (no resampling back to the native grid); the demo's `p2g evaluate` scores the
written files.

A setting is a name and `--set` overrides on top of the tiny-cpu preset: `--setting fast:train.lr=3.0e-3,
data.crops_per_subject=4`; the built-in names are in SETTINGS. Wall-clock seconds depend on what else runs on
the machine: the script prints the load average before and after so that contention is visible, and learning
should be compared in steps. `--budget-s` turns a wall-clock budget into a step count from a 3-step probe.

Every number goes to OUT/learning.json; `--plot` draws OUT/learning.png (matplotlib).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "configs" / "tiny-cpu.yaml"

#: name -> (architecture, overrides on the tiny-cpu preset); compared by default: the preset as it stands
SETTINGS: dict[str, tuple[str, list[str]]] = {
    "tiny-cpu": ("p2g", []),
    "roi64": ("p2g", ["data.roi_size=[64,64,64]", "data.crops_per_subject=1"]),
    "crops4-cosine": ("p2g", ["data.crops_per_subject=4", "train.lr=3.0e-3", "train.schedule=warmup_cosine",
                              "train.warmup_steps=20"]),
    "crops4-lr1e-2": ("p2g", ["data.crops_per_subject=4", "train.lr=1.0e-2", "train.schedule=warmup_cosine",
                              "train.warmup_steps=20"]),
    "swinunetr-crops4-lr1e-2": ("swinunetr", ["data.crops_per_subject=4", "train.lr=1.0e-2",
                                              "train.schedule=warmup_cosine", "train.warmup_steps=20"]),
    "swinunetr-roi64": ("swinunetr", ["data.roi_size=[64,64,64]", "data.crops_per_subject=2"]),
}


def parse_setting(text: str) -> tuple[str, tuple[str, list[str]]]:
    """`name` (built-in) or `name[@architecture]:key=value,key=value` -> (name, (architecture, overrides))."""
    if ":" not in text:
        if text not in SETTINGS:
            raise SystemExit(f"unknown setting '{text}'; built-in: {', '.join(SETTINGS)} (or name:key=value,...)")
        return text, SETTINGS[text]
    head, body = text.split(":", 1)
    name, _, architecture = head.partition("@")
    overrides, depth, current = [], 0, ""
    for ch in body:  # split on commas outside [...]
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            overrides.append(current)
            current = ""
        else:
            current += ch
    overrides += [current] if current else []
    return name, (architecture or "p2g", [o.strip() for o in overrides if o.strip()])


def make_data(out: Path, train: int, test: int, seed: int, spacing: float | None) -> Path:
    """One data set: `train` training subjects then `test` held-out ones, and a split file naming them."""
    from p2gmed.data.read import read_dataset
    from p2gmed.data.synthetic import make_demo

    data = out / "data"
    if not (out / "split.json").is_file():
        make_demo(data, "brain", subjects=train + test, seed=seed, spacing=spacing)
        ids = sorted(s.subject_id for s in read_dataset(data))
        (out / "split.json").write_text(json.dumps({"train": ids[:train], "val": ids[train:]}) + "\n")
    return data


def train(name: str, setting: tuple[str, list[str]], task: str, data: Path, out: Path, steps: int,
          eval_every: int, threads: int, init: Path | None) -> Path:
    """`p2g finetune` of one setting in a subprocess; returns its run folder (metrics.jsonl, checkpoints/)."""
    architecture, overrides = setting
    run = out / "runs" / f"{task}-{name}"
    if (run / "checkpoints" / "last.pt").is_file():
        print(f"  {run} exists: reusing it")
        return run
    sets = [f"data.split_file={out / 'split.json'}", f"train.val_every={eval_every}", "train.val_subjects=0",
            "train.checkpoint_every=100000", *overrides]
    argv = [sys.executable, "-m", "p2gmed", "finetune", "--task", task, "--data", str(data), "--out", str(run),
            "--config", str(PRESET), "--max-steps", str(steps), "--architecture", architecture]
    argv += ["--init", str(init)] if init else ["--set", "tune.init=scratch"]
    for item in sets:
        argv += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT / "src")}
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"{' '.join(argv)} failed:\n{proc.stderr[-3000:]}")
    print(f"  trained {task}-{name} in {time.perf_counter() - start:.0f} s (wall-clock, with validation)")
    return run


def curve(run: Path) -> list[dict]:
    """The validation records of a run: step, cumulative training seconds, val_* metrics."""
    rows, seconds = [], 0.0
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        seconds += float(record.get("seconds", 0.0))
        if any(k.startswith("val_") for k in record):
            rows.append({"step": record["step"], "seconds": round(seconds, 1),
                         **{k[4:]: v for k, v in record.items() if k.startswith("val_")}})
    return rows


def final_scores(run: Path, data: Path, out: Path) -> dict[str, float]:
    """The demo's targets on the held-out subjects, from RUN/checkpoints/last.pt (see the module docstring)."""
    import numpy as np
    import torch

    from p2gmed.data.layouts import classes_to_labels, region_masks
    from p2gmed.data.read import read_dataset
    from p2gmed.data.volumes import load_subjects
    from p2gmed.evaluation.synthesis import synthesis_metrics
    from p2gmed.inference.models import load_models
    from p2gmed.inference.postprocess import keep_largest_component
    from p2gmed.inference.sliding import sliding_predict
    from p2gmed.train.validation import dice_score

    loaded_model = load_models([run / "checkpoints" / "last.pt"])[0]
    model, cfg = loaded_model.model, loaded_model.cfg
    modalities = list(cfg.data.modalities)
    held_out = set(json.loads((out / "split.json").read_text())["val"])
    subjects = [s for s in read_dataset(data) if s.subject_id in held_out]
    loaded = load_subjects(subjects, cfg.data, progress=False,
                           with_label=loaded_model.segments)
    scores: dict[str, list[float]] = {}

    def predict(image: torch.Tensor, sources: list[str]) -> torch.Tensor:
        subset = torch.tensor([m in sources for m in modalities])
        with torch.no_grad():
            return sliding_predict(lambda x: model.forward_subset(x, subset), image, cfg.data.roi_size,
                                   overlap=cfg.inference.overlap, sw_batch_size=cfg.inference.sw_batch_size,
                                   mode=cfg.inference.mode, device=torch.device("cpu"), stitch="cpu")[0]

    for index in range(len(loaded)):
        item = loaded[index]
        image = item.image[None].float()
        if loaded_model.segments:
            reference = region_masks(item.label[0], loaded_model.labels)
            for label, sources in (("all", modalities), ("flair", ["t2f"])):
                logits = predict(image, sources)
                labels = classes_to_labels(logits.argmax(0), loaded_model.labels)
                largest = torch.from_numpy(keep_largest_component(labels.numpy()))
                for suffix, volume in (("", labels), ("_largest", largest)):
                    for region, mask in region_masks(volume, loaded_model.labels).items():
                        scores.setdefault(f"{label}{suffix}_dice_{region}", []).append(
                            dice_score(mask, reference[region]))
        else:
            fg = item.foreground[0].numpy()
            source = modalities.index("t1n")
            prediction = predict(image, ["t1n"]).numpy()
            src = image[0, source].numpy()
            for target in ("t2w", "t2f"):
                ref = image[0, modalities.index(target)].numpy()
                a, b = np.polyfit(src[fg], ref[fg], 1)  # the oracle: fitted on the target itself
                candidates = {"model": prediction[modalities.index(target)], "copy": src, "linear": a * src + b}
                for what, volume in candidates.items():
                    # z-scores put the background (0) mid-grey; lift each brain to start at 0 as a written image
                    # does, so that the unit convention's own scaling treats every candidate's background alike
                    metrics = synthesis_metrics(as_image(volume, fg), as_image(ref, fg), "unit")
                    for metric in ("psnr", "ssim"):
                        scores.setdefault(f"t1n>{target}_{what}_{metric}", []).append(metrics[metric])
    return {k: round(float(np.mean(v)), 4) for k, v in scores.items()}


def as_image(volume, foreground):
    """A normalised volume as a non-negative image: brain shifted to start at 0, background 0."""
    import numpy as np

    return np.where(foreground, volume - volume[foreground].min(), 0.0)


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def probe_steps(name, setting, task, data, out, threads, init, budget_s: float) -> int:
    """Steps that fit `budget_s` seconds of training, from the seconds per step of a 3-step probe run."""
    import shutil

    probe = train(f"{name}-probe", setting, task, data, out, 3, 0, threads, init)
    records = [json.loads(line) for line in (probe / "metrics.jsonl").read_text().splitlines()]
    per_step = sorted(float(r["seconds"]) for r in records[1:] or records)[0]  # the first step warms up
    shutil.rmtree(probe)
    return max(1, int(budget_s / per_step))


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in results})
    fig, axes = plt.subplots(len(tasks), 2, figsize=(11, 4 * len(tasks)), squeeze=False)
    for row, task in enumerate(tasks):
        metrics = ("dice_wt", "dice_tc", "dice_et") if task == "segmentation" else ("psnr",)
        for col, x in enumerate(("step", "seconds")):
            ax = axes[row, col]
            for i, r in enumerate(r for r in results if r["task"] == task):  # colour: setting; line: metric
                for metric, style in zip(metrics, ("-", "--", ":")):
                    pts = [(c[x], c[metric]) for c in r["curve"] if metric in c]
                    if pts:
                        ax.plot(*zip(*pts), style, color=f"C{i}", marker="o", ms=3, label=f"{r['name']} {metric}")
            ax.set_xlabel("training step" if x == "step" else "training seconds (contended 2-core CPU)")
            ax.set_ylabel("held-out Dice" if task == "segmentation" else "held-out PSNR (dB)")
            ax.set_title(f"{task}: against {x}s" if x == "step" else f"{task}: against wall-clock")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=("segmentation", "synthesis", "both"), default="both")
    p.add_argument("--setting", action="append", help="name or name[@arch]:key=value,... (repeatable)")
    p.add_argument("--steps", type=int, default=100, help="optimizer steps per setting (default 100)")
    p.add_argument("--budget-s", type=float, help="instead of --steps: training seconds per setting (probed)")
    p.add_argument("--eval-every", type=int, default=25, help="validate on the held-out subjects every N steps")
    p.add_argument("--subjects", type=int, default=10, help="training subjects (default 10)")
    p.add_argument("--test-subjects", type=int, default=3, help="held-out subjects (default 3)")
    p.add_argument("--spacing", type=float, help="voxel size of the built-in data in mm (default 3)")
    p.add_argument("--seed", type=int, default=0, help="data seed")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: all cores)")
    p.add_argument("--init", type=Path, help="tune from this checkpoint (e.g. a pre-training) instead of scratch")
    p.add_argument("--out", type=Path, default=Path("bench-learning"), help="output folder (reused if present)")
    p.add_argument("--plot", action="store_true", help="draw OUT/learning.png")
    args = p.parse_args(argv)
    settings = dict(parse_setting(s) for s in (args.setting or ["tiny-cpu"]))
    tasks = ["segmentation", "synthesis"] if args.task == "both" else [args.task]
    args.out.mkdir(parents=True, exist_ok=True)
    data = make_data(args.out, args.subjects, args.test_subjects, args.seed, args.spacing)
    print(f"== learning curves: {args.subjects} training + {args.test_subjects} held-out simulated brains, "
          f"{args.threads} threads, load average before {load_average()}")
    results_path = args.out / "learning.json"
    results: list[dict] = []
    for task in tasks:
        for name, setting in settings.items():
            steps = args.steps
            if args.budget_s:
                steps = probe_steps(name, setting, task, data, args.out, args.threads, args.init, args.budget_s)
            start = time.perf_counter()
            run = train(name, setting, task, data, args.out, steps, args.eval_every, args.threads, args.init)
            wall = time.perf_counter() - start
            result = {"task": task, "name": name, "architecture": setting[0], "overrides": setting[1],
                      "steps": steps, "threads": args.threads, "load_average": load_average(),
                      "curve": curve(run), "final": final_scores(run, data, args.out)}
            results = json.loads(results_path.read_text()) if results_path.is_file() else []  # another run's too
            results = [r for r in results if (r["task"], r["name"]) != (task, name)] + [result]
            results_path.write_text(json.dumps(results, indent=1) + "\n")
            print(f"\n-- {task} / {name} ({setting[0]}; {' '.join(setting[1]) or 'preset'}), {steps} steps, "
                  f"{wall:.0f} s wall-clock, load average after {result['load_average']}")
            keys = [k for k in result["curve"][-1] if k not in ("step", "seconds")] if result["curve"] else []
            print("  " + "  ".join(f"{k:>9}" for k in ["step", "seconds", *keys]))
            for c in result["curve"]:
                print("  " + "  ".join(f"{c.get(k, float('nan')):>9.3f}" if isinstance(c.get(k), float)
                                       else f"{c.get(k)!s:>9}" for k in ["step", "seconds", *keys]))
            print("  held-out, final model: " + ", ".join(f"{k} {v:.3f}" for k, v in result["final"].items()))
    if args.plot:
        plot(json.loads(results_path.read_text()), args.out / "learning.png")
        print(f"figure: {args.out / 'learning.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
