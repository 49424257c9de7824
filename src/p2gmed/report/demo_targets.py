"""What the demo promises, checked: segmentation and synthesis targets and two trivial synthesis baselines.

The demo's models must visibly work on held-out simulated subjects. Its report states, one line per target,
whether it was met. Synthesis is only worth something if it beats what needs no model at all, so two baselines
are scored exactly like the model (`p2g evaluate synthesis`, unit convention), for T1 -> T2 and T1 -> FLAIR:

- copy: the source volume itself, unchanged, taken as the target;
- linear: the source mapped to the target by the least-squares line a * source + b fitted on the same subject's
  brain voxels. It sees the target, so it is an oracle: a model that beats it has learned more than a global
  intensity map.

A third, `voxelmap`, is no target but says how far per-voxel intensity can go: the best function of the source
intensity alone, a lookup table from 64 quantile bins of the subject's source to the mean target intensity of
each bin, fitted on the same subject (an oracle too). Whatever it misses needs the neighbourhood: on the
simulated brains at 3 mm, partial volumes of CSF, grey and white matter that look alike in T1 and not in T2, and
edema that T1 hardly shows (docs/results.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from p2gmed.report.summaries import mean_by, read_csv

#: (source, targets) of the synthesis targets and baselines
SYNTHESIS_PAIRS = ("t1n", ("t2w", "t2f"))
#: how much better (SSIM) than each baseline the model must be
SSIM_MARGIN = 0.01
#: the baselines the demo writes and scores; the last is a reference, not a target
BASELINES = ("copy", "linear", "voxelmap")
#: source intensity bins of the voxelmap reference
VOXELMAP_BINS = 64
FULL = frozenset(("t1n", "t1c", "t2w", "t2f"))


@dataclass
class Target:
    """One promise of the demo and whether the run kept it (`value` None: not measured)."""

    what: str
    value: float | None
    threshold: float
    higher_is_better: bool = True

    @property
    def met(self) -> bool | None:
        if self.value is None or self.value != self.value:
            return None
        return self.value >= self.threshold if self.higher_is_better else self.value <= self.threshold

    def line(self) -> str:
        shown = "not measured" if self.value is None else f"{self.value:.3f}"
        sign = ">=" if self.higher_is_better else "<="
        verdict = {True: "**met**", False: "**not met**", None: "**not measured**"}[self.met]
        return f"- {verdict}: {self.what} {sign} {self.threshold:g} (measured {shown})"


def voxel_map(source: np.ndarray, target: np.ndarray, region: np.ndarray, bins: int = VOXELMAP_BINS) -> np.ndarray:
    """The best per-voxel map source -> target on `region`, as a lookup table over quantile bins of the source.

    Args:
        source, target: (D, H, W) volumes.
        region: (D, H, W) bool, the voxels the table is fitted on and applied to (zero elsewhere).
        bins: number of source-intensity bins (equal counts).

    Returns:
        (D, H, W) float32: each region voxel gets the mean target intensity of its source bin.
    """
    out = np.zeros(source.shape, np.float32)
    if not region.any():
        return out
    values = source[region]
    edges = np.quantile(values, np.linspace(0.0, 1.0, bins + 1)[1:-1])
    index = np.searchsorted(edges, values, side="right")
    sums = np.bincount(index, weights=target[region].astype(np.float64), minlength=bins)
    counts = np.bincount(index, minlength=bins)
    out[region] = (sums / np.maximum(counts, 1))[index]
    return out


def write_synthesis_baselines(test_dir: Path, out: Path) -> list[Path]:
    """Write the baselines of every test subject as `out/<baseline>/from-t1n/<case>_<m>.nii.gz` (`BASELINES`).

    Returns the baseline folders, in the order of `BASELINES`.
    """
    import nibabel as nib

    from p2gmed.data.read import read_dataset
    from p2gmed.io import save_nifti

    source, targets = SYNTHESIS_PAIRS
    folders = [out / name for name in BASELINES]
    for subject in read_dataset(test_dir):
        if source not in subject.images:
            continue
        src_img = nib.load(str(subject.images[source]))
        src = np.asarray(src_img.dataobj, dtype=np.float32)
        for target in targets:
            if target not in subject.images:
                continue
            ref = np.asarray(nib.load(str(subject.images[target])).dataobj, dtype=np.float32)
            brain = (src != 0) & (ref != 0)
            a, b = np.polyfit(src[brain], ref[brain], 1) if brain.sum() > 1 else (1.0, 0.0)
            linear = np.where(src != 0, a * src + b, 0).astype(np.float32)
            for folder, volume in zip(folders, (src, linear, voxel_map(src, ref, brain)), strict=True):
                path = folder / f"from-{source}" / f"{subject.subject_id}_{target}.nii.gz"
                path.parent.mkdir(parents=True, exist_ok=True)
                save_nifti(nib.Nifti1Image(volume, src_img.affine, src_img.header), path)
    return folders


def _synthesis_ssim(csv: Path | None) -> dict[str, float]:
    """target modality -> mean SSIM of T1 -> target over the test subjects."""
    if csv is None or not Path(csv).is_file():
        return {}
    means = mean_by(read_csv(csv), ("source", "modality"), ("ssim",))
    source, targets = SYNTHESIS_PAIRS
    return {t: means[(frozenset([source]), t)]["ssim"] for t in targets if (frozenset([source]), t) in means}


def demo_targets(
    quick: bool, segmentation_csv: Path | None, synthesis_csvs: dict[str, Path], seconds: float,
    full_minutes: float = 15.0, quick_minutes: float = 3.0,
) -> list[Target]:
    """The targets of `p2g demo` (or `--quick`) measured from its evaluation CSVs and its total time.

    Args:
        quick: the quick demo promises only a found tumour (WT >= 0.5) in under 3 minutes.
        segmentation_csv: P2G's per-case BraTS metrics (`p2g evaluate brats`).
        synthesis_csvs: "model", "copy", "linear" -> per-case synthesis metrics (`p2g evaluate synthesis`).
        seconds: wall-clock of all stages.
    """
    seg = {}
    if segmentation_csv is not None and Path(segmentation_csv).is_file():
        seg = mean_by(read_csv(segmentation_csv), ("source",), ("dice_wt", "dice_tc", "dice_et"))

    def dice(subset: frozenset, region: str) -> float | None:
        return seg[(subset,)][f"dice_{region}"] if (subset,) in seg else None

    minutes = quick_minutes if quick else full_minutes
    out = [Target("wall-clock of all stages, minutes (2 idle CPU cores promised)", seconds / 60, minutes, False)]
    if quick:
        return out + [Target("WT Dice from all four modalities", dice(FULL, "wt"), 0.5)]
    out += [Target(f"{region.upper()} Dice from all four modalities", dice(FULL, region), threshold)
            for region, threshold in (("wt", 0.85), ("tc", 0.75), ("et", 0.65))]
    out.append(Target("WT Dice from FLAIR alone", dice(frozenset(["t2f"]), "wt"), 0.75))
    ssim = {name: _synthesis_ssim(path) for name, path in synthesis_csvs.items()}
    for target, label in (("t2w", "T2"), ("t2f", "FLAIR")):
        model = ssim.get("model", {}).get(target)
        out.append(Target(f"synthesis T1 -> {label} SSIM", model, 0.85))
        for baseline in ("copy", "linear"):
            base = ssim.get(baseline, {}).get(target)
            margin = None if model is None or base is None else model - base
            out.append(Target(f"synthesis T1 -> {label}: SSIM minus the {baseline} baseline's ({base:.3f})"
                              if base is not None else f"synthesis T1 -> {label}: SSIM minus the {baseline} "
                              "baseline's", margin, SSIM_MARGIN))
    return out


def voxelmap_lines(synthesis_csvs: dict[str, Path]) -> list[str]:
    """One report line per target modality: the voxelmap reference's SSIM next to the model's."""
    model, voxelmap = _synthesis_ssim(synthesis_csvs.get("model")), _synthesis_ssim(synthesis_csvs.get("voxelmap"))
    return [f"- reference, not a target: T1 -> {label} by the best per-voxel intensity map fitted on the same "
            f"subject (voxelmap oracle) SSIM {voxelmap[t]:.3f}; the model {model[t]:.3f}" if t in model else
            f"- reference, not a target: T1 -> {label} voxelmap oracle SSIM {voxelmap[t]:.3f}"
            for t, label in (("t2w", "T2"), ("t2f", "FLAIR")) if t in voxelmap]


def targets_section(targets: list[Target], references: list[str] | None = None) -> list[str]:
    """Markdown lines of the report's targets section; `references` (e.g. `voxelmap_lines`) follow them."""
    kept = sum(t.met is True for t in targets)
    return ["## Targets", "", f"{kept} of {len(targets)} targets met on the held-out simulated subjects. Synthesis "
            "baselines, scored like the model: *copy* takes the T1 volume itself as the target, *linear* maps T1 to "
            f"the target by a line fitted on the same subject (an oracle); the model must beat each by "
            f"{SSIM_MARGIN} SSIM.", "", *[t.line() for t in targets], *(references or []), ""]
