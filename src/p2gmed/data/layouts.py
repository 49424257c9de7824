"""File naming and label values of every supported dataset layout: the single source both the writers
(built-in data) and the readers use, and the conversion of label values to the classes a network predicts.

| layout    | files                                                                        | labels        |
|-----------|------------------------------------------------------------------------------|---------------|
| brats23   | BraTS-GLI-XXXXX-YYY/BraTS-GLI-XXXXX-YYY-{t1n,t1c,t2w,t2f,seg}.nii.gz           | 1 NCR 2 ED 3 ET |
| brats21   | BraTS2021_XXXXX/BraTS2021_XXXXX_{t1,t1ce,t2,flair,seg}.nii.gz                 | 1 NCR 2 ED 4 ET |
| brats18   | Brats18_<site>_<id>_1/Brats18_<site>_<id>_1_{t1,t1ce,t2,flair,seg}.nii.gz      | 1 NCR 2 ED 4 ET |
| autopet   | PETCT_<id>/<study>/{CT,CTres,PET,SUV,SEG}.nii.gz (ct = CTres, pet = SUV)      | 1 lesion      |
| nnunet    | imagesTr/<case>_<XXXX>.nii.gz, labelsTr/<case>.nii.gz, dataset.json channels | from json     |
| nac       | <subject>/{CT,PET_AC,PET_NAC}.nii.gz                                         | none          |
| decathlon | JSON datalist: {"training": [{"t1n": path, ..., "label": path}, ...]}         | per --labels  |
"""

from __future__ import annotations

import torch

from p2gmed.errors import InputError

NIFTI_ENDINGS = (".nii.gz", ".nii")

LAYOUTS = ("brats23", "brats21", "brats18", "autopet", "nnunet", "nac", "decathlon")

#: per layout: canonical modality -> file-name suffix (BraTS) or file name (AutoPET, NAC)
MODALITY_FILES: dict[str, dict[str, str]] = {
    "brats23": {"t1n": "t1n", "t1c": "t1c", "t2w": "t2w", "t2f": "t2f"},
    "brats21": {"t1n": "t1", "t1c": "t1ce", "t2w": "t2", "t2f": "flair"},
    "brats18": {"t1n": "t1", "t1c": "t1ce", "t2w": "t2", "t2f": "flair"},
    "autopet": {"ct": "CTres.nii.gz", "pet": "SUV.nii.gz"},
    "nac": {"ct": "CT.nii.gz", "pet": "PET_AC.nii.gz", "pet_nac": "PET_NAC.nii.gz"},
}
LABEL_FILES = {"brats23": "seg", "brats21": "seg", "brats18": "seg", "autopet": "SEG.nii.gz"}
#: AutoPET files that are not model inputs but belong to the layout
AUTOPET_EXTRA = {"ct_original": "CT.nii.gz", "pet_activity": "PET.nii.gz"}

#: label convention implied by a layout
LABEL_CONVENTION = {"brats23": "brats2023", "brats21": "brats2018", "brats18": "brats2018", "autopet": "autopet"}

#: legal label values per convention; regions as label sets (BraTS: WT, TC, ET)
LABEL_VALUES = {"brats2023": (0, 1, 2, 3), "brats2018": (0, 1, 2, 4), "autopet": (0, 1)}
#: what each label value means, for legends and reports
LABEL_NAMES = {
    "brats2023": {1: "NCR (necrosis)", 2: "ED (edema)", 3: "ET (enhancing)"},
    "brats2018": {1: "NCR/NET (necrosis)", 2: "ED (edema)", 4: "ET (enhancing)"},
    "autopet": {1: "lesion"},
}
REGIONS = {
    "brats2023": {"wt": (1, 2, 3), "tc": (1, 3), "et": (3,)},
    "brats2018": {"wt": (1, 2, 4), "tc": (1, 4), "et": (4,)},
    "autopet": {"lesion": (1,)},
}


def brats_file(case: str, layout: str, modality_or_seg: str) -> str:
    """File name of a BraTS case's modality ("t1n", ...) or of its label ("seg") in the given layout."""
    key = "seg" if modality_or_seg == "seg" else MODALITY_FILES[layout][modality_or_seg]
    sep = "-" if layout == "brats23" else "_"
    return f"{case}{sep}{key}.nii.gz"


def nnunet_file(case: str, channel: int) -> str:
    return f"{case}_{channel:04d}.nii.gz"


# --------------------------------------------------------------------------------------------------
# label values <-> class indices and evaluation regions (BraTS 2018/21 ET 4 is class 3; BraTS 2023 labels are
# already classes 0..3; AutoPET (0, 1) is two classes)


def num_classes(convention: str) -> int:
    """Number of classes (background included) of a label convention: 4 for BraTS, 2 for AutoPET."""
    if convention not in LABEL_VALUES:
        raise InputError(f"unknown label convention '{convention}'; known: {', '.join(LABEL_VALUES)}")
    return len(LABEL_VALUES[convention])


def labels_to_classes(label: torch.Tensor, convention: str) -> torch.Tensor:
    """Map label values to class indices 0..K-1 (the i-th legal label value becomes class i).

    Args:
        label: integer tensor of label values, any shape (e.g. (B, 1, D, H, W)).
        convention: "brats2023", "brats2018" or "autopet".

    Returns:
        int64 tensor of the same shape with values in 0..K-1.

    Raises:
        InputError: an unknown convention, or a voxel holding a value the convention does not allow.
    """
    num_classes(convention)  # an unknown convention is an InputError
    values = torch.tensor(LABEL_VALUES[convention], dtype=torch.int64, device=label.device)
    label = label.long()
    classes = torch.searchsorted(values, label.contiguous())
    ok = (classes < values.numel()) & (values[classes.clamp(max=values.numel() - 1)] == label)
    if not bool(ok.all()):
        bad = sorted(set(label[~ok].unique().tolist()))
        raise InputError(
            f"label values {bad} are not legal for the {convention} convention {LABEL_VALUES[convention]}"
        )
    return classes


def classes_to_labels(classes: torch.Tensor, convention: str) -> torch.Tensor:
    """Inverse of `labels_to_classes`: class indices (any shape) -> label values of the convention."""
    values = torch.tensor(LABEL_VALUES[convention], dtype=torch.int64, device=classes.device)
    return values[classes.long()]


def region_masks(label: torch.Tensor, convention: str) -> dict[str, torch.Tensor]:
    """Evaluation regions (BraTS WT/TC/ET, AutoPET lesion) of a label-value tensor as boolean masks."""
    return {
        name: torch.isin(label, torch.tensor(values, device=label.device))
        for name, values in REGIONS[convention].items()
    }
