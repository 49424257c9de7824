"""Read a data set folder in any supported layout into `Subject` records.

Every reader returns subjects sorted by id, with modalities identified by name (never by channel position) and
missing modalities simply absent from `Subject.images`. File naming comes from `layouts.py`.

Layouts (see layouts.py for the file names): brats23, brats21, brats18 (also under HGG/LGG or one wrapper
folder), autopet (`PETCT_<id>/<study>/...`, study names may hold double spaces), nnunet (`dataset.json` +
`imagesTr`/`imagesTs`), nac, decathlon (a JSON datalist, or a folder holding one).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path

from p2gmed.data import layouts
from p2gmed.data.records import Subject
from p2gmed.errors import DataError, InputError
from p2gmed.modalities import ALIASES, canonical

NIFTI_ENDINGS = (".nii.gz", ".nii")
AUTOPET_FILES = ("CTres.nii.gz", "SUV.nii.gz", "SEG.nii.gz", "CT.nii.gz", "PET.nii.gz")
_LABEL_KEYS = ("label", "seg", "mask")
_ID_KEYS = ("current_case", "case", "id", "subject", "subject_id", "name")


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


# ------------------------------------------------------------------------------------------------ conventions


def label_convention(labels: dict | str | None) -> str | None:
    """Guess the label convention from a dataset.json / datalist `labels` entry, or None when unsure.

    Accepts nnU-Net v2 (`{"name": value}`), v1 / Decathlon (`{"value": "name"}`) or a convention name.
    Region lists (nnU-Net region training) and unknown naming give None: no convention beats a wrong one.
    """
    if labels is None:
        return None
    if isinstance(labels, str):
        return labels if labels in layouts.LABEL_VALUES else None
    names: dict[int, str] = {}
    for key, value in labels.items():
        if str(key).isdigit() and isinstance(value, str):
            names[int(key)] = value.lower()
        elif isinstance(value, int) and not isinstance(value, bool):
            names[value] = str(key).lower()
        else:
            return None
    values = tuple(sorted(names))

    def says(value: int, *words: str) -> bool:
        return any(w in names[value] for w in words)

    if values == (0, 1):
        return "autopet"
    brats_core = (
        values[:3] == (0, 1, 2)
        and says(1, "necro", "ncr", "netc", "non-enh", "core")
        and says(2, "edema", "ed", "snfh")
    )
    if values == (0, 1, 2, 3) and brats_core and says(3, "enhanc", "et"):
        return "brats2023"
    if values == (0, 1, 2, 4) and brats_core and says(4, "enhanc", "et"):
        return "brats2018"
    return None


# ------------------------------------------------------------------------------------------------ nnU-Net


def _nnunet_channels(dataset_json: Path, meta: dict) -> dict[int, str]:
    raw = meta.get("channel_names") or meta.get("modality")
    if not isinstance(raw, dict) or not raw:
        raise DataError(f"{dataset_json} has no 'channel_names' (nnU-Net v2) or 'modality' (v1) mapping.")
    try:
        channels = {int(k): canonical(str(v)) for k, v in raw.items()}
    except (InputError, ValueError) as exc:
        raise DataError(
            f"{dataset_json} channel names {raw} are not all modality names ({exc}); name each channel "
            f"by its modality (e.g. 'CT', 'PET', 'T1', 'FLAIR')."
        ) from None
    if len(set(channels.values())) != len(channels):
        raise DataError(
            f"{dataset_json} channel names {raw} do not name distinct modalities (nnU-Net normalisation "
            f"schemes such as 'CT' for a PET channel cannot be told apart); rename the channels by modality, "
            f"e.g. 'CT', 'PET'."
        )
    return channels


def _read_nnunet(root: Path) -> list[Subject]:
    dataset_json = root / "dataset.json"
    try:
        meta = json.loads(dataset_json.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{dataset_json} cannot be read as JSON ({exc}).") from None
    channels = _nnunet_channels(dataset_json, meta)
    ending = meta.get("file_ending", ".nii.gz")
    convention = label_convention(meta.get("labels"))
    pattern = re.compile(rf"^(.+)_(\d{{4}}){re.escape(ending)}$")
    subjects = []
    for images_dir, labels_dir in (("imagesTr", "labelsTr"), ("imagesTs", "labelsTs")):
        if not (root / images_dir).is_dir():
            continue
        cases: dict[str, dict[str, Path]] = {}
        for path in sorted((root / images_dir).iterdir()):
            if path.name.startswith("."):
                continue
            if not (m := pattern.match(path.name)):
                raise DataError(f"{path} is not named <case>_<XXXX>{ending} as nnU-Net expects.")
            if int(m.group(2)) not in channels:
                raise DataError(f"{path} has channel {m.group(2)}, which {dataset_json} does not name.")
            cases.setdefault(m.group(1), {})[channels[int(m.group(2))]] = path
        for case, images in cases.items():
            label = root / labels_dir / f"{case}{ending}"
            subjects.append(
                Subject(
                    subject_id=case,
                    patient_id=patient_id_of(case),
                    images=images,
                    label=label if label.is_file() else None,
                    layout="nnunet",
                    labels=convention,
                )
            )
    return subjects


# ------------------------------------------------------------------------------------------------ Decathlon


def _datalist_file(root: Path) -> Path | None:
    if root.is_file():
        return root
    for path in sorted(root.glob("*.json")):
        try:
            if isinstance(json.loads(path.read_text()).get("training"), list):
                return path
        except (OSError, ValueError, AttributeError):
            continue
    return None


def _case_from_file(path: str) -> str:
    stem = Path(path).name
    for ending in NIFTI_ENDINGS:
        stem = stem.removesuffix(ending)
    head, sep, tail = max(stem.rpartition("-"), stem.rpartition("_"), key=lambda t: len(t[0]))
    return head if sep and tail.lower() in ALIASES else stem


def _read_decathlon(root: Path) -> list[Subject]:
    datalist = _datalist_file(root)
    if datalist is None:
        raise DataError(f"{root} holds no JSON datalist with a 'training' list.")
    try:
        meta = json.loads(datalist.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{datalist} cannot be read as JSON ({exc}).") from None
    entries = meta.get("training")
    if not isinstance(entries, list):
        lists = [v for v in meta.values() if isinstance(v, list) and v and isinstance(v[0], dict)]
        entries = lists[0] if lists else []
    convention = label_convention(meta.get("labels"))
    index_names = (
        {int(k): v for k, v in meta.get("modality", {}).items()}
        if isinstance(meta.get("modality"), dict)
        else {}
    )
    base = datalist.parent
    subjects = []
    for n, entry in enumerate(entries):
        images, label, case = {}, None, None
        for key, value in entry.items():
            low = key.lower()
            if low in _LABEL_KEYS:
                label = base / value
            elif low in _ID_KEYS:
                case = str(value)
            elif low in ALIASES:
                images[ALIASES[low]] = base / value
            elif low == "image" and isinstance(value, list) and len(index_names) == len(value):
                images.update({canonical(index_names[i]): base / v for i, v in enumerate(value)})
            elif low == "image":
                raise DataError(
                    f"entry {n} of {datalist} gives 'image' without modality names; name each file by its "
                    f"modality (keys t1n, t1c, t2w, t2f, ct, pet, pet_nac)."
                )
        if not images:
            raise DataError(f"entry {n} of {datalist} names no modality file.")
        case = safe_id(case or _case_from_file(str(next(iter(images.values())))))
        subjects.append(Subject(case, patient_id_of(case), images, label, "decathlon", convention))
    return subjects


# ------------------------------------------------------------------------------------------------ public API


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
    if _datalist_file(root) is not None:
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
    "nnunet": _read_nnunet,
    "nac": _read_nac,
    "decathlon": _read_decathlon,
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
    root: str | Path, layout: str = "auto", modalities: Iterable[str] | None = None
) -> list[Subject]:
    """All subjects of a data set, sorted by subject id.

    Args:
        root: the data set folder (a JSON datalist file for `decathlon`); a single case folder works too.
        layout: one of `layouts.LAYOUTS`, or "auto" to detect it.
        modalities: keep only these modalities (any accepted spelling) in `Subject.images`; None keeps all.

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
    subjects = sorted(_READERS[layout](root), key=lambda s: s.subject_id)
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
