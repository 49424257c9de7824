"""Building blocks of the plans of `p2g reproduce` and `p2g demo`: presets, patient splits, `p2g predict` lines."""

from __future__ import annotations

from pathlib import Path

from p2gmed.errors import InputError

#: the 15 MRI subsets in the mmFormer/RFNet table order (Table 10); names are canonical modality names
MRI_SUBSETS: tuple[tuple[str, ...], ...] = (
    ("t2w",), ("t1c",), ("t1n",), ("t2f",), ("t1c", "t2w"), ("t1c", "t1n"), ("t2f", "t1n"), ("t1n", "t2w"),
    ("t2f", "t2w"), ("t2f", "t1c"), ("t2f", "t1c", "t1n"), ("t2f", "t1n", "t2w"), ("t2f", "t1c", "t2w"),
    ("t1c", "t1n", "t2w"), ("t2f", "t1c", "t1n", "t2w"),
)

#: train.seed of the first seed (TrainConfig's default); seed k of `p2g reproduce --seeds` uses BASE_SEED + k
BASE_SEED = 20

#: the demo's settings per run kind on top of configs/demo-cpu.yaml, chosen from the learning curves of
#: docs/results.md; `p2g demo` and `p2g reproduce --scale small` both use them
CPU_RUN_KINDS: dict[str, dict] = {
    # 2 crops per step (the contrastive loss needs > 1): with the preset's 4, a pre-training step cost 8x a
    # segmentation step
    "pretrain": {"data": {"crops_per_subject": 2}},
    # segmentation learns faster at this rate than at the preset's 3e-3
    "segmentation": {"train": {"lr": 1.0e-2}},
    # Algorithm 2 as written (each source decoded alone): every step trains the single-source transfers;
    # decoding the subset mean spends most steps on multi-source inputs
    "synthesis": {"tune": {"train_decode": "per_modality"}},
}


def configs_dir() -> Path:
    """The folder of the YAML presets (`configs/` at the repository root of this installation)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "configs" / "tiny-cpu.yaml").is_file():
            return parent / "configs"
    raise InputError("the configs/ folder with the presets was not found next to this installation of p2gmed")


def subset_name(modalities: tuple[str, ...] | list[str], order: tuple[str, ...]) -> str:
    """Folder name of a source subset as `p2g evaluate` expects it: `from-t1n+t2f` (model modality order)."""
    from p2gmed.inference.naming import subset_folder

    return subset_folder(modalities, order)


def parse_source(text: str) -> frozenset[str]:
    """`from-t1n+t2f`, `t1n+t2f` or `t1n` -> frozenset of canonical modality names."""
    from p2gmed.modalities import canonical

    text = text.strip()
    text = text[5:] if text.startswith("from-") else text
    return frozenset(canonical(m) for m in text.split("+") if m)


def merge_mappings(base: dict, over: dict) -> dict:
    """Nested dict update (a new dict): `over` wins, sub-mappings are merged key by key."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merge_mappings(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


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
    """One `p2g predict --subsets` per test subject, predicting every source subset in one pass:
    `out/from-<subset>/<case>_*.nii.gz`.

    The case name is given explicitly (`--case`): AutoPET/NAC file names (CTres.nii.gz) do not carry it.
    `reconstruct` writes the model's reconstruction of the given modalities (the paper's T1 -> T1 entries)
    instead of copies of the inputs.
    """
    # the inputs in the models' order, so that the one-pass folders are named as `subset_name` names them
    named = [m for s in subsets for m in s]
    used = list(dict.fromkeys([*(m for m in order if m in named), *named]))
    commands = []
    for subject in subjects:
        for subset in subsets:
            missing = [m for m in subset if m not in subject.images]
            if missing:
                raise InputError(f"test subject {subject.subject_id} lacks {', '.join(missing)} needed for {subset}")
        argv = ["predict"]
        for model in models:
            argv += ["--model", str(model)]
        argv += ["--out", str(out), "--case", subject.subject_id]
        argv += ["--input", *(f"{m}={subject.images[m]}" for m in used)]
        argv += ["--subsets", *("+".join(subset) for subset in subsets)]
        if reconstruct:
            argv.append("--reconstruct-given")
        commands.append(argv)
    return commands


def checkpoint_of(run_dir: Path) -> Path:
    """best.pt when the run validated, else last.pt."""
    best = run_dir / "checkpoints" / "best.pt"
    return best if best.is_file() else run_dir / "checkpoints" / "last.pt"
