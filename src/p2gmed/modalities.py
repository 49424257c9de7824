"""Modality names. Modalities are always identified by name, never by channel position.

Canonical names follow BraTS 2023 for MRI (`t1n`, `t1c`, `t2w`, `t2f`) and `ct`, `pet` (SUV, attenuation
corrected), `pet_nac` for PET/CT. Older spellings map onto them through `ALIASES`.
"""

from __future__ import annotations

from p2gmed.errors import InputError

MRI = ("t1n", "t1c", "t2w", "t2f")
PETCT = ("ct", "pet")
NAC = ("ct", "pet", "pet_nac")
ALL = ("t1n", "t1c", "t2w", "t2f", "ct", "pet", "pet_nac")

#: the intensity family of each modality decides its normalisation (z-score, HU window, SUV scale)
KIND = {"t1n": "mri", "t1c": "mri", "t2w": "mri", "t2f": "mri", "ct": "ct", "pet": "pet", "pet_nac": "pet"}

ALIASES = {
    "t1": "t1n", "t1n": "t1n", "t1w": "t1n", "t1ce": "t1c", "t1c": "t1c", "t1gd": "t1c",
    "t2": "t2w", "t2w": "t2w", "flair": "t2f", "t2f": "t2f", "t2-flair": "t2f",
    "ct": "ct", "ctres": "ct", "pet": "pet", "suv": "pet", "pet_ac": "pet", "ac": "pet",
    "pet_nac": "pet_nac", "nac": "pet_nac", "nac_pet": "pet_nac",
}

#: display names for tables and figures
DISPLAY = {"t1n": "T1", "t1c": "T1ce", "t2w": "T2", "t2f": "FLAIR", "ct": "CT", "pet": "PET", "pet_nac": "NAC-PET"}


def canonical(name: str) -> str:
    """Map any accepted spelling (case-insensitive) to the canonical modality name.

    Raises:
        InputError: for an unknown name, listing the accepted ones.
    """
    key = name.strip().lower()
    if key not in ALIASES:
        raise InputError(f"unknown modality '{name}'; known modalities are {', '.join(ALL)}")
    return ALIASES[key]
