"""The per-subject record every reader produces and every consumer uses."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Subject:
    """One imaging session of one individual, with its modalities by name.

    A subject may lack modalities: `images` then simply has no entry for them, and `missing(...)` says which.

    Attributes:
        subject_id: case identifier as the layout spells it (e.g. "BraTS-GLI-00002-000", "PETCT_0af7ffe12a_study1").
        patient_id: the individual; splits are made by patient (AutoPET has several studies per patient).
        images: canonical modality name -> NIfTI file.
        label: segmentation file, or None.
        layout: the layout the subject was read from.
        labels: label convention of `label`: "brats2023" (ET=3), "brats2018" (ET=4), "autopet" (lesion=1) or None.
    """

    subject_id: str
    patient_id: str
    images: dict[str, Path]
    label: Path | None = None
    layout: str = ""
    labels: str | None = None
    extra: dict[str, Path] = field(default_factory=dict)
    """Files the layout has besides the model's inputs (e.g. AutoPET's original CT and PET activity)."""

    def missing(self, modalities: tuple[str, ...] | list[str]) -> list[str]:
        return [m for m in modalities if m not in self.images]


def safe_id(text: str) -> str:
    """A filesystem-safe identifier: runs of characters other than letters, digits, '.', '-' -> one '_'."""
    return re.sub(r"[^\w.-]+", "_", text).strip("_")


def patient_id_of(case_id: str) -> str:
    """The individual a case belongs to: AutoPET `PETCT_<id>_<study>` -> `PETCT_<id>`; BraTS 2023+
    `BraTS-GLI-XXXXX-YYY` (YYY = time point) -> `BraTS-GLI-XXXXX`; otherwise the case id itself."""
    if m := re.match(r"^(PETCT_[0-9A-Za-z]+)_", case_id):
        return m.group(1)
    if m := re.match(r"^(BraTS-[A-Za-z]+-\d+)-\d+$", case_id):
        return m.group(1)
    return case_id
