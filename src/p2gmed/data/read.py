"""Read a data set folder in any supported layout into `Subject` records.

Every reader returns subjects sorted by id, with modalities identified by name (never by channel position) and
missing modalities simply absent from `Subject.images`. File naming comes from `layouts.py`.

Layouts (see layouts.py for the file names): brats23, brats21, brats18 (also under HGG/LGG or one wrapper
folder), autopet (`PETCT_<id>/<study>/...`, study names may hold double spaces), nnunet (`dataset.json` +
`imagesTr`/`imagesTs`), nac, decathlon (a JSON datalist, or a folder holding one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from p2gmed.data import layouts
from p2gmed.data.layouts import NIFTI_ENDINGS
from p2gmed.data.manifests import datalist_file, read_decathlon, read_nnunet
from p2gmed.data.records import Subject, patient_id_of, safe_id
from p2gmed.errors import DataError, InputError
from p2gmed.modalities import canonical

AUTOPET_FILES = ("CTres.nii.gz", "SUV.nii.gz", "SEG.nii.gz", "CT.nii.gz", "PET.nii.gz")


def _nifti(folder: Path, stem: str) -> Path | None:
    """`folder/stem.nii.gz` or `folder/stem.nii`, whichever exists."""
    for ending in NIFTI_ENDINGS:
        if (p := folder / f"{stem}{ending}").is_file():
            return p
    return None


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


# ------------------------------------------------------------------------------------------------ BraTS


def _brats_flavour(case_dir: Path) -> str | None:
    """brats23 / brats21 / brats18 if `case_dir` holds BraTS files named after the folder, else None."""
    name = case_dir.name
    if any(_nifti(case_dir, f"{name}-{s}") for s in (*layouts.MODALITY_FILES["brats23"].values(), "seg")):
        return "brats23"
    if any(_nifti(case_dir, f"{name}_{s}") for s in (*layouts.MODALITY_FILES["brats21"].values(), "seg")):
        return "brats18" if name.lower().startswith("brats18") else "brats21"
    return None


def _read_brats_case(case_dir: Path, layout: str) -> Subject:
    name = case_dir.name
    sep = "-" if layout == "brats23" else "_"
    images = {}
    for modality, suffix in layouts.MODALITY_FILES[layout].items():
        if (path := _nifti(case_dir, f"{name}{sep}{suffix}")) is not None:
            images[modality] = path
    return Subject(
        subject_id=name,
        patient_id=patient_id_of(name),
        images=images,
        label=_nifti(case_dir, f"{name}{sep}{layouts.LABEL_FILES[layout]}"),
        layout=layout,
        labels=layouts.LABEL_CONVENTION[layout],
    )


def _brats_case_dirs(root: Path) -> list[tuple[Path, str]]:
    """Case folders directly under `root` or one level deeper (BraTS 2018 HGG/LGG, an unpacked wrapper)."""
    found = []
    for sub in _subdirs(root):
        if flavour := _brats_flavour(sub):
            found.append((sub, flavour))
        else:
            found.extend((d, f) for d in _subdirs(sub) if (f := _brats_flavour(d)))
    return found


def _read_brats(root: Path, layout: str) -> list[Subject]:
    # brats21 and brats18 share file naming and labels: an explicit one reads the other's folders too
    same = {"brats23": {"brats23"}, "brats21": {"brats21", "brats18"}, "brats18": {"brats21", "brats18"}}[
        layout
    ]
    return [_read_brats_case(d, layout) for d, flavour in _brats_case_dirs(root) if flavour in same]


# ------------------------------------------------------------------------------------------------ AutoPET


def _is_autopet_study(folder: Path) -> bool:
    return any((folder / f).is_file() for f in AUTOPET_FILES)


def _read_autopet_study(study_dir: Path, patient: str) -> Subject:
    files = {m: study_dir / f for m, f in layouts.MODALITY_FILES["autopet"].items()}
    extra = {k: study_dir / f for k, f in layouts.AUTOPET_EXTRA.items() if (study_dir / f).is_file()}
    label = study_dir / layouts.LABEL_FILES["autopet"]
    return Subject(
        subject_id=safe_id(f"{patient}_{study_dir.name}"),
        patient_id=patient,
        images={m: p for m, p in files.items() if p.is_file()},
        label=label if label.is_file() else None,
        layout="autopet",
        labels=layouts.LABEL_CONVENTION["autopet"],
        extra=extra,
    )


def _read_autopet(root: Path) -> list[Subject]:
    subjects = []
    for patient_dir in _subdirs(root):
        if patient_dir.name.startswith("PETCT_"):
            subjects += [
                _read_autopet_study(s, patient_dir.name)
                for s in _subdirs(patient_dir)
                if _is_autopet_study(s)
            ]
    return subjects


# ------------------------------------------------------------------------------------------------ NAC


def _is_nac_subject(folder: Path) -> bool:
    return any((folder / f).is_file() for f in layouts.MODALITY_FILES["nac"].values())


def _read_nac_subject(folder: Path) -> Subject:
    images = {m: folder / f for m, f in layouts.MODALITY_FILES["nac"].items() if (folder / f).is_file()}
    return Subject(subject_id=folder.name, patient_id=folder.name, images=images, layout="nac")


def _read_nac(root: Path) -> list[Subject]:
    return [_read_nac_subject(d) for d in _subdirs(root) if _is_nac_subject(d)]


def detect_layout(root: str | Path) -> str:
    """The layout of a data set folder (or datalist file).

    Raises:
        DataError: naming the folder when nothing recognisable is found, or when it mixes BraTS releases.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root} does not exist.")
    if root.is_file():
        if root.suffix == ".json":
            return "decathlon"
        raise DataError(f"{root} is a file, not a data set folder or a JSON datalist.")
    if (root / "dataset.json").is_file() and ((root / "imagesTr").is_dir() or (root / "imagesTs").is_dir()):
        return "nnunet"
    subdirs = _subdirs(root)
    if any(d.name.startswith("PETCT_") and any(_is_autopet_study(s) for s in _subdirs(d)) for d in subdirs):
        return "autopet"
    flavours = sorted({flavour for _, flavour in _brats_case_dirs(root)})
    if len(flavours) > 1:
        raise DataError(f"{root} mixes BraTS layouts {', '.join(flavours)}; give --layout or separate them.")
    if flavours:
        return flavours[0]
    if any(_is_nac_subject(d) for d in subdirs):
        return "nac"
    if datalist_file(root) is not None:
        return "decathlon"
    raise DataError(
        f"{root} holds no recognisable data set: expected BraTS case folders, "
        f"PETCT_<id>/<study> folders (AutoPET), "
        f"an nnU-Net folder with dataset.json, <subject>/CT,PET_AC,PET_NAC.nii.gz (nac) or a JSON datalist."
    )


_READERS: dict[str, Callable[[Path], list[Subject]]] = {
    "brats23": lambda r: _read_brats(r, "brats23"),
    "brats21": lambda r: _read_brats(r, "brats21"),
    "brats18": lambda r: _read_brats(r, "brats18"),
    "autopet": _read_autopet,
    "nnunet": read_nnunet,
    "nac": _read_nac,
    "decathlon": read_decathlon,
}


def _select(subjects: Iterable[Subject], modalities: Iterable[str] | None) -> list[Subject]:
    if modalities is None:
        return list(subjects)
    wanted = [canonical(m) for m in modalities]
    return [
        Subject(
            s.subject_id,
            s.patient_id,
            {m: s.images[m] for m in wanted if m in s.images},
            s.label,
            s.layout,
            s.labels,
            s.extra,
        )
        for s in subjects
    ]


def read_dataset(
    root: str | Path,
    layout: str = "auto",
    modalities: Iterable[str] | None = None,
    channels: dict[int, str] | None = None,
) -> list[Subject]:
    """All subjects of a data set, sorted by subject id.

    Args:
        root: the data set folder (a JSON datalist file for `decathlon`); a single case folder works too.
        layout: one of `layouts.LAYOUTS`, or "auto" to detect it.
        modalities: keep only these modalities (any accepted spelling) in `Subject.images`; None keeps all.
        channels: nnU-Net channel index -> modality, instead of dataset.json's names (`--channels 0=ct,1=pet`
            for data sets such as AutoPET-II whose dataset.json names both channels "CT").

    Raises:
        InputError: unknown layout name. DataError: nothing readable, naming the folder.
    """
    root = Path(root)
    if layout not in (*layouts.LAYOUTS, "auto"):
        raise InputError(f"unknown layout '{layout}'; known layouts are auto, {', '.join(layouts.LAYOUTS)}")
    if layout == "auto" and root.is_dir() and _case_layout(root) is not None:
        return _select([read_case_dir(root)], modalities)
    if layout == "auto":
        layout = detect_layout(root)
    elif not root.exists():
        raise DataError(f"{root} does not exist.")
    if channels is not None and layout != "nnunet":
        raise InputError(f"--channels applies to nnU-Net data sets, but {root} is in the {layout} layout")
    reader = _READERS[layout]
    found = read_nnunet(root, channels) if layout == "nnunet" else reader(root)
    subjects = sorted(found, key=lambda s: s.subject_id)
    if not subjects:
        raise DataError(f"{root} holds no {layout} subjects.")
    ids = [s.subject_id for s in subjects]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        raise DataError(f"{root} has several cases with the same id: {', '.join(dupes[:5])}.")
    return _select(subjects, modalities)


def _case_layout(path: Path) -> str | None:
    """Layout of a single case folder, or None."""
    if flavour := _brats_flavour(path):
        return flavour
    if (path / layouts.MODALITY_FILES["nac"]["pet_nac"]).is_file() or (path / "PET_AC.nii.gz").is_file():
        return "nac"
    if _is_autopet_study(path):
        return "autopet"
    return None


def read_case_dir(path: str | Path, layout: str = "auto") -> Subject:
    """One case folder: a BraTS case, an AutoPET study folder (`PETCT_<id>/<study>`) or a NAC subject folder.

    Raises:
        DataError: naming the folder when it is not a case folder of a supported layout.
    """
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path} is not a folder.")
    found = _case_layout(path) if layout == "auto" else layout
    if found in ("brats23", "brats21", "brats18") and _brats_flavour(path):
        return _read_brats_case(path, found)
    if found == "autopet":
        patient = path.parent.name if path.parent.name.startswith("PETCT_") else patient_id_of(path.name)
        return _read_autopet_study(path, patient)
    if found == "nac":
        return _read_nac_subject(path)
    raise DataError(
        f"{path} is not a case folder of a supported layout (BraTS case, AutoPET study or NAC subject)."
    )
