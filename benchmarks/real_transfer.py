"""Transfer to real scans: does a synthesis model trained only on the built-in data turn a real T1 into a T2?

`make bench-transfer MODEL=runs/synthesis/checkpoints/last.pt` (or `python benchmarks/real_transfer.py
--model PATH --out transfer.json`). Each real skull-stripped T1 (`real_data.py`: the ICBM avg152 and avg305
T1 averages and the Colin27 single subject masked by SPM's intracranial mask; nilearn's ICBM152 2009 T1) is
given to the model through the public API, `p2gmed.load(PATH).predict({"t1n": (array, affine)})`, as the
only input, exactly as a user would run it (resampling to the model's training spacing and back, the training
normalisation). Its T2 output is resampled onto the avg152 grid and compared, inside the intracranial mask
(and the input's own brain mask), with the real avg152 T2 average:

* Pearson and Spearman correlation of the synthesized T2 with the real T2, against the same for the
  inverted T1 (-T1). The check passes for an input when the model's Pearson correlation is higher. A cubic
  polynomial of the T1 fitted to the real T2 (an oracle: it sees the target) shows what any voxel-wise
  intensity mapping of the T1 could reach;
* tissue contrast: mean GM / mean WM and mean CSF / mean WM (TPM probability > 0.8, CSF > 0.7) of the real
  T2, and of each candidate after its mean and standard deviation inside the mask are matched to the real
  T2's (the model writes a z-score put on the T1's scale, so its zero is not a physical zero);
* FLAIR (no real average exists): the same contrasts in standard deviations of the brain, (GM - WM) / sd and
  (CSF - WM) / sd, next to those of the simulator's FLAIR of the same MNI anatomy.

References that need no real input:

* the simulator's signal model (nominal tissue parameters, no noise) applied to SPM's tissue map, the
  anatomy of the avg152 population, against the real avg152 T1, T2 and PD: is the simulated contrast real?
* per input, the simulator's noiseless T2 of the MNI152 2009 anatomy (the maps the built-in data are made
  from), and an extra input: the simulator's T1 of that anatomy. The gap between that input's row and the real
  2009 T1's is the gap between simulated and real T1 contrast;
* the same criterion on three fresh simulated brains (tumour, noise and bias: the built-in data themselves),
  against their own simulated T2: what the model does in distribution.

Prints a table, writes every number to --out (JSON). Exit 2 with one sentence when spm-runtime is missing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_data import SPM_INSTALL, RealDataMissing, RealInput, RealSet, load_real, resample  # noqa: E402

#: the built-in data's voxel size, used for a checkpoint that does not record its training spacing
BUILTIN_SPACING = 3.0
#: the calibration input: the simulator's own T1 of the MNI152 2009 anatomy (not a real scan)
SIMULATED = "simulator T1 (MNI152 2009 anatomy)"
#: (TR, TE, TI) ms of a proton-density-weighted spin echo, for the calibration against the real PD average
PD_SEQUENCE = (4500.0, 10.0, None)
#: seeds of the simulated brains of the in-distribution reference (the demo's data use other, hashed seeds)
IN_DISTRIBUTION_SEED = 90_000


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(stats.pearsonr(np.ravel(a), np.ravel(b))[0])


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(stats.spearmanr(np.ravel(a), np.ravel(b))[0])


def match_moments(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """`values` linearly mapped to the mean and standard deviation of `reference` (same voxels)."""
    z = (values - values.mean()) / max(float(values.std()), 1e-12)
    return z * reference.std() + reference.mean()


def tissue_ratios(image: np.ndarray, tissues: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, float]:
    """Mean GM / mean WM and mean CSF / mean WM of `image` over the tissue voxels inside `mask`."""
    mean = {k: float(image[v & mask].mean()) for k, v in tissues.items()}
    return {"gm/wm": mean["gm"] / mean["wm"], "csf/wm": mean["csf"] / mean["wm"]}


def tissue_contrasts(image: np.ndarray, tissues: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, float]:
    """(GM - WM) / sd and (CSF - WM) / sd of `image`, sd over `mask`: contrast free of scale and offset."""
    sd = float(image[mask].std())
    mean = {k: float(image[v & mask].mean()) for k, v in tissues.items()}
    return {"(gm-wm)/sd": (mean["gm"] - mean["wm"]) / sd, "(csf-wm)/sd": (mean["csf"] - mean["wm"]) / sd}


def compare(candidate: np.ndarray, reference: np.ndarray, tissues: dict[str, np.ndarray],
            mask: np.ndarray) -> dict[str, float]:
    """Correlations with a reference T2 and moment-matched tissue ratios of one candidate T2 (same grid)."""
    target = reference[mask]
    matched = np.zeros_like(candidate)
    matched[mask] = match_moments(candidate[mask], target)
    return {"pearson": pearson(candidate[mask], target), "spearman": spearman(candidate[mask], target),
            **tissue_ratios(matched, tissues, mask)}


def oracle_polynomial(t1: np.ndarray, t2: np.ndarray, degree: int = 3) -> np.ndarray:
    """The polynomial of the T1 closest (least squares) to the T2: the ceiling of a voxel-wise mapping."""
    return np.polynomial.Polynomial.fit(t1, t2, degree)(t1)  # fitted on a scaled domain: well conditioned


def simulator_images(real: RealSet) -> dict[str, np.ndarray]:
    """The built-in simulator's noiseless T1, T2 and FLAIR of the MNI152 2009 anatomy (nominal tissue
    parameters, no bias, noise or tumour), on the simulator's 2 mm grid; plus "affine" and "mask"."""
    from p2gmed.data.synthetic.brain import SEQUENCES, TISSUES, _signal, mni_tissue_maps

    maps, affine = mni_tissue_maps(2)
    fractions = {k: maps[k] for k in ("gm", "wm", "csf")}
    images = {m: _signal(fractions, TISSUES, SEQUENCES[m]) * maps["mask"] for m in ("t1n", "t2w", "t2f")}
    return images | {"affine": affine, "mask": maps["mask"] > 0.5}


def tpm_fractions(real: RealSet) -> dict[str, np.ndarray]:
    """GM, WM and CSF probabilities of SPM's TPM (the avg152 population's anatomy) on the avg152 grid."""
    from real_data import read_spm

    tpm = read_spm("tpm/TPM.nii")
    maps = np.asarray(tpm.dataobj, np.float32)[..., :3]
    probabilities = resample(maps, tpm.affine, real.shape, real.affine)
    return {k: probabilities[..., i] for i, k in enumerate(("gm", "wm", "csf"))}


def calibration(real: RealSet) -> dict[str, dict[str, float]]:
    """The simulator's signal model (nominal tissue parameters, no noise) on the TPM anatomy against the real
    avg152 T1, T2 and PD: Pearson correlation and raw tissue ratios (the simulator's zero is no signal)."""
    from p2gmed.data.synthetic.brain import SEQUENCES, TISSUES, _signal

    fractions = tpm_fractions(real)
    sequences = {"t1": SEQUENCES["t1n"], "t2": SEQUENCES["t2w"], "pd": PD_SEQUENCE}
    out = {}
    for contrast, sequence in sequences.items():
        simulated, measured = _signal(fractions, TISSUES, sequence), getattr(real, contrast)
        row = {"pearson": pearson(simulated[real.mask], measured[real.mask])}
        for what, image in (("simulated", simulated), ("real", measured)):
            row |= {f"{what} {k}": v for k, v in tissue_ratios(image, real.tissues, real.mask).items()}
        out[contrast] = row
    out["t2"]["inverted T1 pearson"] = pearson(-real.t1[real.mask], real.t2[real.mask])
    return out


def in_distribution(model, subjects: int = 3) -> dict:
    """The same criterion on fresh simulated brains (the built-in data, with tumour, noise and bias): each
    individual's T1 alone in, the model's T2 against that individual's simulated T2, inside its brain."""
    from p2gmed.data.synthetic import generate_brain

    rows = []
    for i in range(subjects):
        brain = generate_brain(IN_DISTRIBUTION_SEED + i)
        output = model.predict({"t1n": (brain["t1n"], brain["affine"])})["t2w"]
        synthesized = np.asarray(output.dataobj, np.float32)
        inside = brain["t1n"] > 0
        rows.append({"model T2": pearson(synthesized[inside], brain["t2w"][inside]),
                     "inverted T1": pearson(-brain["t1n"][inside], brain["t2w"][inside])})
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("model T2", "inverted T1")}
    return {"seeds": [IN_DISTRIBUTION_SEED + i for i in range(subjects)], "subjects": rows, "mean": mean,
            "pass": mean["model T2"] > mean["inverted T1"]}


def run_model(model, item: RealInput, real: RealSet) -> dict[str, np.ndarray]:
    """The model's T2 and FLAIR from the input's T1 alone, on the avg152 grid."""
    out = model.predict({"t1n": (item.t1, item.affine)})
    return {m: resample(np.asarray(out[m].dataobj, np.float32), out[m].affine, real.shape, real.affine)
            for m in ("t2w", "t2f")}


def evaluate(model, real: RealSet, figure: Path | None = None) -> dict[str, dict]:
    """Every number of the check, per input (see the module docstring); `figure`: also draw the slices."""
    sim = simulator_images(real)
    sim_on = {m: resample(sim[m], sim["affine"], real.shape, real.affine) for m in ("t1n", "t2w", "t2f")}
    inputs = dict(real.inputs)
    inputs[SIMULATED] = RealInput(SIMULATED, sim["t1n"], sim["affine"], sim["mask"])
    results: dict[str, dict] = {}
    slices: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, item in inputs.items():
        own = item.on(real.shape, real.affine, item.mask.astype(np.float32)) > 0.5
        mask = real.mask & own
        t1 = item.on(real.shape, real.affine)
        synthesized = run_model(model, item, real)
        oracle = np.zeros_like(t1)
        oracle[mask] = oracle_polynomial(t1[mask], real.t2[mask])
        candidates = {"model T2": synthesized["t2w"], "inverted T1": -t1, "oracle poly3(T1)": oracle,
                      "sim. T2 (MNI 2009)": sim_on["t2w"], "real T2": real.t2}
        rows = {k: compare(v, real.t2, real.tissues, mask) for k, v in candidates.items()}
        flair = {"model FLAIR": tissue_contrasts(synthesized["t2f"], real.tissues, mask),
                 "simulator FLAIR": tissue_contrasts(sim_on["t2f"], real.tissues, mask)}
        results[name] = {"voxels": int(mask.sum()), "real": name != SIMULATED, "t2": rows, "flair": flair,
                         "pass": rows["model T2"]["pearson"] > rows["inverted T1"]["pearson"]}
        if name == SIMULATED:  # in distribution: against the simulator's own T2 of the same anatomy
            results[name]["vs simulator T2"] = {k: compare(candidates[k], sim_on["t2w"], real.tissues, mask)
                                                for k in ("model T2", "inverted T1")}
        slices[name] = (t1, synthesized["t2w"])
    if figure:
        draw(figure, slices, real, sim_on["t2w"])
    return results


def draw(path: Path, slices: dict[str, tuple[np.ndarray, np.ndarray]], real: RealSet,
         sim_t2: np.ndarray) -> None:
    """One row per input: its T1, the model's T2, the real T2 and the simulator's T2 (axial, z = 0 mm)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z = int(round(np.linalg.inv(real.affine)[2, 3]))  # the voxel plane at MNI z = 0
    columns = ("input T1", "model T2", "real T2 (avg152)", "simulator T2")
    fig, axes = plt.subplots(len(slices), 4, figsize=(8, 2.3 * len(slices)), squeeze=False)
    for row, (name, (t1, t2)) in enumerate(slices.items()):
        for col, volume in enumerate((t1, t2, real.t2, sim_t2)):
            ax = axes[row, col]
            ax.imshow(np.rot90(volume[::-1, :, z]), cmap="gray")  # LAS array: flip x, right on the right
            ax.set_axis_off()
            ax.set_title(columns[col] if row == 0 else "", fontsize=8)
        axes[row, 0].text(-0.05, 0.5, name, transform=axes[row, 0].transAxes, rotation=90, va="center",
                          ha="right", fontsize=7)
    fig.tight_layout()
    from p2gmed.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def print_table(results: dict[str, dict], calibrated: dict[str, dict[str, float]]) -> None:
    print("simulator signal model on the TPM anatomy vs the real avg152 averages (no model involved):")
    print(f"  {'contrast':<9} {'pearson':>8} {'GM/WM sim':>10} {'real':>6} {'CSF/WM sim':>11} {'real':>6}")
    for contrast, v in calibrated.items():
        print(f"  {contrast.upper():<9} {v['pearson']:8.3f} {v['simulated gm/wm']:10.2f} "
              f"{v['real gm/wm']:6.2f} "
              f"{v['simulated csf/wm']:11.2f} {v['real csf/wm']:6.2f}")
    print(f"  (inverted avg152 T1 vs real T2: pearson {calibrated['t2']['inverted T1 pearson']:.3f})")
    for name, res in results.items():
        verdict = ("PASS" if res["pass"] else "FAIL") + ("" if res["real"] else " (calibration, not real)")
        print(f"\n{name}  ({res['voxels']} voxels)  model T2 vs inverted T1: {verdict}")
        print(f"  {'T2 candidate':<18} {'pearson':>8} {'spearman':>9} {'GM/WM':>7} {'CSF/WM':>7}")
        for row, v in res["t2"].items():
            print(f"  {row:<18} {v['pearson']:8.3f} {v['spearman']:9.3f} {v['gm/wm']:7.2f} "
                  f"{v['csf/wm']:7.2f}")
        for row, v in res.get("vs simulator T2", {}).items():
            print(f"  {row + ' vs sim T2':<18} {v['pearson']:8.3f} {v['spearman']:9.3f} {v['gm/wm']:7.2f} "
                  f"{v['csf/wm']:7.2f}")
        for row, v in res["flair"].items():
            print(f"  {row:<18} (GM-WM)/sd {v['(gm-wm)/sd']:6.2f}  (CSF-WM)/sd {v['(csf-wm)/sd']:6.2f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="synthesis checkpoint (training or exported)")
    p.add_argument("--out", type=Path, default=Path("real_transfer.json"), help="JSON file of every number")
    p.add_argument("--spacing", type=float, default=None,
                   help=f"training spacing (mm) for a checkpoint that does not record it (default "
                        f"{BUILTIN_SPACING}, the built-in data's)")
    p.add_argument("--figure", type=Path, default=None, help="also draw one axial slice per input (PNG)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)

    import torch

    import p2gmed
    from p2gmed.errors import InputError

    torch.set_num_threads(args.threads)
    for path in (args.out, args.figure):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
    try:
        real = load_real()
        model = p2gmed.load(args.model, device=args.device)
    except (RealDataMissing, InputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    synth = next((m for m in model.models if m.synthesizes), None)
    if synth is None or "t1n" not in synth.modalities or "t2w" not in synth.modalities:
        print(f"error: {args.model} is not a synthesis model that reads T1 and writes T2", file=sys.stderr)
        return 2
    if synth.spacing is None or args.spacing is not None:
        synth.spacing = (args.spacing or BUILTIN_SPACING,) * 3
        print(f"working spacing {synth.spacing} mm (the checkpoint does not record its training spacing)"
              if args.spacing is None else f"working spacing {synth.spacing} mm (--spacing)")
    with torch.no_grad():
        results = evaluate(model, real, args.figure)
        simulated = in_distribution(model)
    calibrated = calibration(real)
    print_table(results, calibrated)
    print(f"\nsimulated held-out brains (in distribution), mean Pearson with their own T2: model "
          f"{simulated['mean']['model T2']:.3f}, inverted T1 {simulated['mean']['inverted T1']:.3f} "
          f"({'PASS' if simulated['pass'] else 'FAIL'})")
    report = {"model": str(args.model), "working_spacing_mm": list(synth.spacing), "reference": "avg152T2",
              "spm_runtime": SPM_INSTALL, "simulator_calibration": calibrated, "in_distribution": simulated,
              "inputs": results}
    from p2gmed.io import atomic_path

    with atomic_path(args.out) as tmp:
        Path(tmp).write_text(json.dumps(report, indent=2) + "\n")
    real_rows = [r for r in results.values() if r["real"]]
    passed = sum(r["pass"] for r in real_rows)
    print(f"\n{passed}/{len(real_rows)} real T1 inputs pass; numbers in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
