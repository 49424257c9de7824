"""Built-in multi-modal data: simulated, offline, deterministic, in every real layout.

Three kinds (each a documented simulation, see the modules):

- "brain": BraTS-like T1, T1ce, T2, FLAIR + glioma labels (NCR 1, ED 2, ET 3) from the real MNI152 tissue maps
  nilearn ships (`brain.py`), 3 mm, 64 x 76 x 64 voxels by default.
- "petct": AutoPET-like CT (HU) + FDG PET (SUV) + lesion mask of a procedural torso (`torso.py`), 5 mm,
  72 x 56 x 96 voxels by default; about 30 % of studies have no lesion.
- "nac": the same plus a non-attenuation-corrected PET (`pet_nac`).

`make_demo` writes a data set; `generate_brain` / `generate_torso` give one individual in memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from p2gmed.data.synthetic.brain import generate_brain
from p2gmed.data.synthetic.torso import generate_torso
from p2gmed.errors import InputError

__all__ = ["DEFAULT_LAYOUT", "generate_brain", "generate_torso", "individual_seed", "make_demo"]

DEFAULT_LAYOUT = {"brain": "brats23", "petct": "autopet", "nac": "nac"}


def individual_seed(seed: int, index: int) -> int:
    """Seed of the `index`-th individual of a data set made with `seed` (independent streams)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def autopet_patients(subjects: int) -> list[int]:
    """Patient index of each study: with 3+ studies, the first one or two patients have two studies each."""
    repeats = min(2, max(0, (subjects - 1) // 2))
    patients = [p for p in range(repeats) for _ in range(2)]
    return patients + list(range(repeats, repeats + subjects - len(patients)))


def make_demo(
    out: str | Path,
    kind: str = "brain",
    subjects: int = 8,
    layout: str | None = None,
    seed: int = 0,
    spacing: float | None = None,
) -> list[Path]:
    """Write the built-in data set: `subjects` simulated subjects (studies) of `kind` in `layout` under `out`.

    Args:
        out: new (or empty) folder.
        kind: "brain", "petct" or "nac".
        subjects: number of subjects (for AutoPET: studies; a couple of patients get two studies).
        layout: default brats23 (brain), autopet (petct), nac (nac); nnunet and decathlon hold any kind.
        seed: the same seed gives byte-identical files.
        spacing: isotropic voxel size in mm (default 3 mm brain, 5 mm torso).

    Returns:
        One path per subject (see `p2gmed.data.write.write_subjects`).

    Raises:
        InputError: unknown kind/layout, impossible combination (e.g. petct in brats23), subjects < 1,
            spacing out of range, or `out` not empty.
    """
    from p2gmed.data.write import _check_target, write_subjects

    if kind not in DEFAULT_LAYOUT:
        raise InputError(f"--kind '{kind}' is unknown; use one of {', '.join(DEFAULT_LAYOUT)}")
    if not isinstance(subjects, int) or subjects < 1:
        raise InputError(f"--subjects must be a positive integer, got {subjects!r}")
    layout = layout or DEFAULT_LAYOUT[kind]
    out = Path(out)
    _check_target(out, kind, layout)  # fail before spending time on generation

    patients = None
    if kind == "brain":
        individuals = [generate_brain(individual_seed(seed, i), spacing) for i in range(subjects)]
    else:
        patients = autopet_patients(subjects) if layout == "autopet" else list(range(subjects))
        study_of, individuals = {}, []
        for patient in patients:
            study = study_of.get(patient, 0)
            study_of[patient] = study + 1
            individuals.append(generate_torso(individual_seed(seed, patient), kind, spacing, study=study))
    return write_subjects(individuals, out, layout, kind=kind, patients=patients, seed=seed)
