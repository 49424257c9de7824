"""Layouts described by a JSON manifest: nnU-Net (`dataset.json` naming the channels, `imagesTr/<case>_<XXXX>`,
`labelsTr`) and decathlon-style datalists (`{"training": [{"t1n": path, ..., "label": path}, ...]}`).

Channels and datalist keys are mapped to modalities by NAME (modalities.canonical), never by position.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from p2gmed.data import layouts
from p2gmed.data.layouts import NIFTI_ENDINGS
from p2gmed.data.records import Subject, patient_id_of, safe_id
from p2gmed.errors import DataError, InputError
from p2gmed.modalities import ALIASES, canonical

_LABEL_KEYS = ("label", "seg", "mask")
_ID_KEYS = ("current_case", "case", "id", "subject", "subject_id", "name")


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
            f"e.g. 'CT', 'PET', or name them with --channels 0=ct,1=pet."
        )
    return channels


def parse_channels(text: str) -> dict[int, str]:
    """"0=ct,1=pet" -> {0: "ct", 1: "pet"} (canonical names); InputError for a malformed or repeated entry."""
    channels: dict[int, str] = {}
    for item in str(text).split(","):
        index, sep, name = item.strip().partition("=")
        if not sep or not index.strip().isdigit() or not name.strip():
            raise InputError(f"--channels expects INDEX=MODALITY[,INDEX=MODALITY...] (e.g. 0=ct,1=pet), got '{text}'")
        modality = canonical(name.strip())
        if int(index) in channels or modality in channels.values():
            raise InputError(f"--channels '{text}' names a channel or a modality twice")
        channels[int(index)] = modality
    return channels


def read_nnunet(root: Path, channels: dict[int, str] | None = None) -> list[Subject]:
    """Subjects of an nnU-Net raw data set; `channels` (index -> modality) overrides dataset.json's names."""
    dataset_json = root / "dataset.json"
    try:
        meta = json.loads(dataset_json.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{dataset_json} cannot be read as JSON ({exc}).") from None
    if channels is None:
        channels = _nnunet_channels(dataset_json, meta)
    else:
        channels = {int(k): canonical(v) for k, v in channels.items()}
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


def datalist_file(root: Path) -> Path | None:
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


def read_decathlon(root: Path) -> list[Subject]:
    datalist = datalist_file(root)
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
