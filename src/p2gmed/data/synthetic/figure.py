"""A one-page picture of one individual: every modality and the labels in three orthogonal slices.

Used to eyeball the built-in data (docs/images/demo-*.png) and by anyone checking a subject folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from p2gmed.errors import InputError
from p2gmed.modalities import ALIASES, ALL, DISPLAY

#: display window per modality family: CT in HU, PET in SUV, MRI by percentiles
_CT_WINDOW = (-400.0, 600.0)
_PET_MAX_SUV = 10.0
_LABEL_STEMS = ("seg", "label", "labels")


def _read_folder(folder: Path) -> dict[str, np.ndarray]:
    """Arrays of a subject folder by canonical modality name (file stems matched case-insensitively)."""
    import nibabel as nib

    arrays: dict[str, np.ndarray] = {}
    for path in sorted(folder.rglob("*.nii*")):
        stem = path.name.split(".")[0].lower()
        key = stem.rsplit("-", 1)[-1].rsplit("_", 1)[-1] if not stem.startswith("pet_") else stem
        if stem in ALIASES or key in ALIASES:
            name = ALIASES.get(stem, ALIASES.get(key))
            arrays.setdefault(name, np.asarray(nib.load(path).dataobj, dtype=np.float32))
        elif key in _LABEL_STEMS:
            arrays["label"] = np.asarray(nib.load(path).dataobj).astype(np.uint8)
    if not arrays:
        raise InputError(f"{folder} holds no NIfTI file named after a modality")
    return arrays


def _window(name: str, volume: np.ndarray) -> tuple[float, float]:
    if name == "ct":
        return _CT_WINDOW
    if name in ("pet", "pet_nac"):
        return 0.0, max(float(np.percentile(volume, 99.5)), 1e-3) if name == "pet_nac" else _PET_MAX_SUV
    nonzero = volume[volume > 0]
    return 0.0, float(np.percentile(nonzero, 99.5)) if nonzero.size else 1.0


def plot_individual(arrays_or_folder: Mapping[str, np.ndarray] | str | Path, out_png: str | Path) -> Path:
    """Save a grid of axial, coronal and sagittal slices (rows) of every modality and the labels (columns).

    Slices pass through the centre of the largest labelled component (the tumour / the largest lesion), or the volume
    centre when there is none.

    Args:
        arrays_or_folder: a dict as `generate_brain` / `generate_torso` return ({modality: (D, H, W)},
            "label", "affine"), or a subject folder of NIfTI files named after modalities.
        out_png: output image; its folder is created.

    Returns:
        The written path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from p2gmed.io import atomic_path

    arrays = _read_folder(Path(arrays_or_folder)) if isinstance(arrays_or_folder, (str, Path)) else arrays_or_folder
    modalities = [m for m in ALL if m in arrays]
    label = arrays.get("label")
    shape = arrays[modalities[0]].shape
    if label is not None and label.any():
        from scipy import ndimage

        components, count = ndimage.label(label > 0)
        largest = 1 + int(np.argmax(ndimage.sum_labels(label > 0, components, range(1, count + 1))))
        centre = np.round(np.argwhere(components == largest).mean(0)).astype(int)
    else:
        centre = np.array(shape) // 2

    columns = modalities + (["label"] if label is not None else [])
    fig, axes = plt.subplots(3, len(columns), figsize=(2.2 * len(columns), 6.6), squeeze=False)
    views = [("axial", 2), ("coronal", 1), ("sagittal", 0)]
    for col, name in enumerate(columns):
        volume = arrays[name]
        for row, (view, axis) in enumerate(views):
            image = np.take(volume, centre[axis], axis=axis).T  # rows = second remaining axis, up = superior/anterior
            ax = axes[row, col]
            if name == "label":
                ax.imshow(image, origin="lower", cmap="magma", vmin=0, vmax=max(1, int(volume.max())),
                          interpolation="nearest")
            else:
                lo, hi = _window(name, volume)
                ax.imshow(image, origin="lower", cmap="hot" if "pet" in name else "gray", vmin=lo, vmax=hi)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(DISPLAY.get(name, name), fontsize=9)
            if col == 0:
                ax.set_ylabel(view, fontsize=9)
    fig.tight_layout()
    out_png = Path(out_png)
    with atomic_path(out_png, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90, format="png")
        tmp.chmod(0o644)  # mkstemp creates 0600 files
    plt.close(fig)
    return out_png
