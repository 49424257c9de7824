"""File names of prediction outputs, in p2g's own scheme and in the field's (nnU-Net, BraTS submissions).

| naming | modality | segmentation |
|---|---|---|
| p2g | `<case>_<modality>.nii.gz` | `<case>_seg.nii.gz` |
| nnunet | `<case>_<modality>.nii.gz` | `<case>.nii.gz` |
| brats | `<case>-<modality>.nii.gz` (as BraSyn submissions) | `<case>.nii.gz` |

Every scheme writes the sidecar `<case>.json`. `p2g evaluate` reads all three (`split_name`).
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

from p2gmed.errors import InputError
from p2gmed.modalities import ALIASES, canonical

SEG = "seg"
#: output file naming schemes: p2g `<case>_<what>`, nnU-Net (segmentation `<case>`), BraTS submissions
#: (segmentation `<case>`, synthesized modalities `<case>-<modality>` as BraSyn expects)
NAMINGS = ("p2g", "nnunet", "brats")


def output_name(case: str, what: str, naming: str = "p2g") -> str:
    """File name of one prediction output.

    p2g: `<case>_<modality>.nii.gz`, `<case>_seg.nii.gz`; nnunet: `<case>_<modality>.nii.gz`, `<case>.nii.gz`;
    brats: `<case>-<modality>.nii.gz`, `<case>.nii.gz`.
    """
    if naming not in NAMINGS:
        raise InputError(f"--naming must be one of {', '.join(NAMINGS)}, got '{naming}'")
    if what == SEG and naming != "p2g":
        return f"{case}.nii.gz"
    return f"{case}{'-' if naming == 'brats' else '_'}{what}.nii.gz"


def case_name_from_inputs(inputs: dict[str, Path]) -> str:
    """A case name from the first input file: its name without extension and a trailing modality tag.

    "BraTS-GLI-00002-000-t1n.nii.gz" -> "BraTS-GLI-00002-000"; "sub01_flair.nii" -> "sub01"; "t1.nii.gz" -> "case".
    """
    stem = Path(next(iter(inputs.values()))).name
    for ext in (".nii.gz", ".nii"):
        if stem.endswith(ext):
            stem = stem[: -len(ext)]
    for sep in ("-", "_", "."):
        head, found, tail = stem.rpartition(sep)
        if found and head:
            with contextlib.suppress(InputError):
                canonical(tail)
                return head
    try:
        canonical(stem)
        return "case"
    except InputError:
        return stem or "case"


#: file-name keys after the last `_<key>` or `-<key>`, longest first so that `_pet_nac` wins over `_nac`
_KEYS = sorted([*ALIASES, SEG], key=len, reverse=True)


def split_name(file_name: str) -> tuple[str, str]:
    """(case, key) of a prediction file in any of the `NAMINGS`; key "seg" for a bare `<case>.nii[.gz]`.

    "c1_t1n.nii.gz" -> ("c1", "t1n"); "BraTS-GLI-00002-000-t2f.nii.gz" -> ("BraTS-GLI-00002-000", "t2f");
    "c1_seg.nii.gz" and "c1.nii.gz" -> ("c1", "seg"); ("", "") for a name that is not NIfTI.
    """
    match = re.match(r"^(.*)\.nii(\.gz)?$", file_name, flags=re.IGNORECASE)
    if not match or not match.group(1):
        return "", ""
    stem = match.group(1)
    for key in _KEYS:
        for sep in ("_", "-"):
            if stem.lower().endswith(sep + key) and len(stem) > len(key) + 1:
                return stem[: -len(key) - 1], key
    return stem, SEG


def subset_folder(modalities, order) -> str:
    """Folder of the predictions made from a subset of modalities, as `p2g evaluate` reads them: `from-t1n+t2f`.

    Args:
        modalities: canonical names of the subset (any order).
        order: the models' modality order, which fixes the order in the name.
    """
    return "from-" + "+".join(m for m in order if m in modalities)
