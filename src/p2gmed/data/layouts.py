"""File naming of every supported dataset layout: the single source both the writers (built-in data) and
the readers use; README.md ("Your data") describes them for users.

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
