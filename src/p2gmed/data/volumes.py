"""Load one subject for training: geometry checks, RAS orientation, optional resampling, normalisation,
foreground mask and a crop to the foreground, with MONAI transforms.

`load_subjects` loads many, cached in memory (MONAI `CacheDataset`, `data.cache_rate`) or on disk (MONAI
`PersistentDataset`, `data.cache_dir`), behind a list-like `LoadedSubjects`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.data import CacheDataset, MetaTensor, PersistentDataset
from monai.transforms import Compose, CropForegroundd, LoadImage, Orientationd, Spacingd, Transform
from scipy.ndimage import binary_fill_holes
from tqdm import tqdm

from p2gmed.data.check import geometry_mismatch, label_value_problem, read_geometry
from p2gmed.data.normalization import NormStats, normalize
from p2gmed.data.records import Subject
from p2gmed.errors import DataError, InputError
from p2gmed.modalities import KIND

log = logging.getLogger(__name__)

#: bump when the cached content of a loaded subject changes meaning (invalidates PersistentDataset caches)
CACHE_FORMAT = 2


@dataclass
class LoadedSubject:
    """One subject in memory, ready for cropping.

    Attributes:
        image: (M, D, H, W) float32, normalised, in `modalities` order; zeros for missing modalities.
        available: (M,) bool, which channels hold a real image.
        foreground: (1, D, H, W) bool.
        label: (1, D, H, W) uint8 in the file's convention (`subject.labels`), or None (every supported
            convention's values fit a byte; a cached subject holds 1/8 of an int64 label).
        affine: (4, 4) float64, voxel -> mm of the (RAS, resampled, cropped) array.
        stats: modality -> `NormStats` for `normalization.denormalize` (available modalities only).
        subject: the record it came from.
        modalities: channel names (== `data.modalities`).
    """

    image: torch.Tensor
    available: torch.Tensor
    foreground: torch.Tensor
    label: torch.Tensor | None
    affine: np.ndarray
    stats: dict[str, NormStats]
    subject: Subject
    modalities: tuple[str, ...]

    @property
    def background(self) -> torch.Tensor:
        """(M,) float32: each channel's normalised value of empty space (the padding value for crops)."""
        return torch.tensor([self.stats[m].background if m in self.stats else 0.0 for m in self.modalities])

    def to_dict(self) -> dict[str, Any]:
        """Tensors and plain Python only (`torch.load(weights_only=True)` safe); no subject."""
        return {
            "image": self.image,
            "available": self.available,
            "foreground": self.foreground,
            "label": self.label,
            "affine": torch.as_tensor(self.affine),
            "stats": {m: s.to_dict() for m, s in self.stats.items()},
            "modalities": list(self.modalities),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], subject: Subject) -> LoadedSubject:
        return cls(
            d["image"],
            d["available"],
            d["foreground"],
            d["label"],
            np.asarray(d["affine"], np.float64),
            {m: NormStats.from_dict(s) for m, s in d["stats"].items()},
            subject,
            tuple(d["modalities"]),
        )


def _check_geometry(files: dict[str, Any]) -> None:
    """Same shape and affine for all of a subject's files (headers only), else DataError naming both files."""
    ref = None
    for path in files.values():
        _, geom = read_geometry(path)
        if ref is None:
            ref = (path, geom)
        elif mismatch := geometry_mismatch(path, geom, *ref):
            raise DataError(mismatch + ".")


def _load_arrays(files: dict[str, Any], data_cfg: Any) -> dict[str, Any]:
    """MONAI: load each file as a (1, D, H, W) MetaTensor, reorient to RAS, resample if `data.spacing`."""

    with warnings.catch_warnings():  # MONAI builds every reader it knows; with pydicom installed its DICOM
        warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader")  # reader warns, and we read NIfTI only
        loader = LoadImage(reader="NibabelReader", image_only=True, ensure_channel_first=True, dtype=np.float32)
    arrays = {}
    for key, path in files.items():
        try:
            arrays[key] = loader(str(path))
        except Exception as exc:  # truncated gzip, unreadable data: name the file
            raise DataError(
                f"{path} cannot be read ({str(exc).splitlines()[-1] if str(exc) else type(exc).__name__})."
            ) from None
        if not torch.isfinite(arrays[key]).all():
            raise DataError(f"{path} holds {int((~torch.isfinite(arrays[key])).sum())} NaN/Inf voxels.")
    keys = list(files)
    # explicit labels: RAS in nibabel's (RAS+) world whatever the MetaTensor's "space" says
    steps = [Orientationd(keys=keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))]
    if data_cfg.spacing is not None:
        modes = ["nearest" if k == "label" else "bilinear" for k in keys]
        steps.append(Spacingd(keys=keys, pixdim=tuple(data_cfg.spacing), mode=modes))
    return Compose(steps)(arrays)


def _plain(t: torch.Tensor) -> torch.Tensor:
    """A MONAI MetaTensor as a plain tensor (no metadata travels into batches)."""
    return t.as_tensor() if hasattr(t, "as_tensor") else t


def _fill_slicewise(mask: np.ndarray) -> np.ndarray:
    """Fill enclosed holes in every 2-D slice along each axis: lungs that touch the top or bottom of a cropped
    field of view are not enclosed in 3-D, but they are in every axial slice (whichever axis is axial)."""
    filled = mask.copy()
    for axis in range(3):
        structure = np.zeros((3, 3, 3), dtype=bool)
        index = [slice(None)] * 3
        index[axis] = 1
        structure[tuple(index)] = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)
        filled |= binary_fill_holes(mask, structure=structure)
    return filled


def subject_foreground(raw: dict[str, Any], body_hu: float = -500.0) -> np.ndarray:
    """(D, H, W) bool: where a subject is (the `foreground: auto` rule), from its raw volumes by modality.

    MRI: non-zero voxels (BraTS volumes are skull-stripped, background 0); CT: the body, HU > `body_hu` with the
    enclosed air (lungs, bowel gas) filled; PET defines it only when no MRI or CT is given (SUV > 0.05), since
    uptake noise covers the whole field of view.
    """
    volumes = {m: np.asarray(v) for m, v in raw.items()}
    structural = [m for m in volumes if KIND[m] in ("mri", "ct")]
    masks = []
    for m in structural or list(volumes):
        if KIND[m] == "mri":
            masks.append(volumes[m] != 0)
        elif KIND[m] == "ct":
            masks.append(_fill_slicewise(volumes[m] > body_hu))
        else:
            masks.append(volumes[m] > 0.05)
    return np.logical_or.reduce(masks)


def load_subject(subject: Subject, data_cfg: Any, *, with_label: bool = True) -> LoadedSubject:
    """Load, check and normalise one subject.

    Args:
        subject: the record (files by modality name).
        data_cfg: `Config.data` (modalities, spacing, normalisation, foreground, crop_margin).
        with_label: also load the label file when the subject has one.

    Returns:
        LoadedSubject: image (M, D, H, W), available (M,), foreground (1, D, H, W), label (1, D, H, W) | None.

    Raises:
        DataError: naming the file(s): unreadable, NaN/Inf, shape/affine mismatch, label values outside the
            layout's convention, or none of the model's modalities present.
    """
    modalities = tuple(data_cfg.modalities)
    files = {m: subject.images[m] for m in modalities if m in subject.images}
    if not files:
        raise DataError(f"subject {subject.subject_id} has none of the modalities {', '.join(modalities)}.")
    if with_label and subject.label is not None:
        files["label"] = subject.label
    _check_geometry(files)
    arrays = _load_arrays(files, data_cfg)

    ref = arrays[next(iter(files))]
    spatial = tuple(ref.shape[1:])
    image = torch.zeros((len(modalities), *spatial), dtype=torch.float32)
    foreground = torch.zeros((1, *spatial), dtype=torch.bool)
    raw_volumes = {}
    stats = {}
    for c, m in enumerate(modalities):
        if m not in arrays:
            continue
        raw = arrays[m].as_tensor()[0]
        normalised, stats[m] = normalize(raw, m, data_cfg)
        image[c] = normalised
        raw_volumes[m] = raw
        if data_cfg.foreground == "nonzero":
            foreground[0] |= raw != 0
        elif data_cfg.foreground == "threshold":
            foreground[0] |= normalised > data_cfg.foreground_threshold
    if data_cfg.foreground == "auto":
        raw_numpy = {m: v.numpy() for m, v in raw_volumes.items()}
        foreground[0] = torch.from_numpy(subject_foreground(raw_numpy, data_cfg.body_hu))

    label = None
    if "label" in arrays:
        label_f = arrays["label"].as_tensor()
        values = torch.unique(label_f).numpy()
        if problem := label_value_problem(values, subject.labels):
            raise DataError(f"{subject.label} {problem}.")
        if values.min() < 0 or values.max() > 255:
            raise DataError(f"{subject.label} holds label values outside 0-255 ({values.min():g} to {values.max():g}).")
        label = label_f.round().to(torch.uint8)

    data = {"image": MetaTensor(image, affine=ref.affine), "foreground": foreground}
    if label is not None:
        data["label"] = label
    if foreground.any():
        crop = CropForegroundd(
            keys=list(data),
            source_key="foreground",
            margin=int(data_cfg.crop_margin),
            allow_smaller=True,
            select_fn=lambda x: x > 0,
        )
        data = crop(data)
    else:
        log.warning("%s: empty foreground, kept the whole volume", subject.subject_id)
    affine = np.asarray(data["image"].affine, dtype=np.float64)
    return LoadedSubject(
        image=_plain(data["image"]).contiguous(),
        available=torch.tensor([m in files for m in modalities]),
        foreground=_plain(data["foreground"]).bool().contiguous(),
        label=_plain(data["label"]).to(torch.uint8).contiguous() if label is not None else None,
        affine=affine,
        stats=stats,
        subject=subject,
        modalities=modalities,
    )


# ---------------------------------------------------------------------------------------------- many subjects


def _unwrap(exc: BaseException) -> BaseException:
    """MONAI wraps transform errors in RuntimeError; find our InputError/DataError underneath."""
    seen = exc
    while seen is not None:
        if isinstance(seen, InputError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return exc


def _fingerprint(subject: Subject, data_cfg: Any, with_label: bool) -> str:
    """Cache key: every file (path, size, mtime) and every setting that changes the loaded arrays."""
    files = {**subject.images, **({"label": subject.label} if with_label and subject.label else {})}
    stat = {k: [str(p), p.stat().st_size, p.stat().st_mtime_ns] for k, p in files.items() if p.exists()}
    settings = {
        k: getattr(data_cfg, k)
        for k in (
            "modalities",
            "spacing",
            "mri_norm",
            "ct_window",
            "pet_scale",
            "foreground",
            "foreground_threshold",
            "body_hu",
            "crop_margin",
        )
    }
    text = json.dumps(
        [CACHE_FORMAT, subject.subject_id, stat, settings, with_label], default=str, sort_keys=True
    )
    return hashlib.sha256(text.encode()).hexdigest()


class _LoadSubjectd(Transform):
    """MONAI dict transform, cached by CacheDataset: {"subject", "key"} -> `LoadedSubject.to_dict()`."""

    def __init__(self, data_cfg: Any, with_label: bool):
        self.data_cfg, self.with_label = data_cfg, with_label

    def __call__(self, item: dict) -> dict:
        return load_subject(item["subject"], self.data_cfg, with_label=self.with_label).to_dict()


class LoadedSubjects(Sequence):
    """List-like access to loaded subjects (`len`, indexing, slicing, iteration) over a MONAI dataset."""

    def __init__(self, subjects: Sequence[Subject], dataset: Any):
        self.subjects, self.dataset = list(subjects), dataset

    def __len__(self) -> int:
        return len(self.subjects)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        try:
            return LoadedSubject.from_dict(self.dataset[index], self.subjects[index])
        except RuntimeError as exc:
            raise _unwrap(exc) from None


def load_subjects(
    subjects: Sequence[Subject], data_cfg: Any, progress: bool = True, *, with_label: bool = True
) -> LoadedSubjects:
    """Load many subjects, cached as `data.cache_rate` (in memory) or `data.cache_dir` (on disk) say.

    Args:
        subjects: records to load (their order is kept).
        data_cfg: `Config.data`.
        progress: show a tqdm bar while caching.

    Returns:
        `LoadedSubjects`, indexable like a list of `LoadedSubject`.

    Raises:
        DataError: the first bad subject's problem, naming its file.
    """
    transform = Compose([_LoadSubjectd(data_cfg, with_label)])
    items = [{"subject": s, "key": _fingerprint(s, data_cfg, with_label)} for s in subjects]
    try:
        if data_cfg.cache_dir:
            dataset = PersistentDataset(
                items, transform, cache_dir=data_cfg.cache_dir, hash_func=lambda item: item["key"].encode()
            )
            _precompute(dataset, progress)
        else:
            dataset = CacheDataset(
                items,
                transform,
                cache_rate=data_cfg.cache_rate,
                num_workers=data_cfg.num_workers or 1,
                progress=progress,
                copy_cache=False,
            )
    except RuntimeError as exc:
        raise _unwrap(exc) from None
    return LoadedSubjects(subjects, dataset)


def _precompute(dataset: Any, progress: bool) -> None:
    """Fill the on-disk cache once, so later steps only read it."""
    for i in tqdm(range(len(dataset)), desc="Caching subjects", disable=not progress):
        dataset._cachecheck(dataset.data[i])
