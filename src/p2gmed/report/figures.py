"""Paper-style figures (matplotlib, Agg backend): synthesized modalities against the ground truth with
difference maps on three orthogonal slices (as the paper's Figs. 3 and 6-8), and segmentation overlays.

Arrays are in the (D, H, W) = (x, y, z) order of RAS-reoriented volumes (docs/design.md); slices are shown
radiologically upright: sagittal (fixed x), coronal (fixed y), axial (fixed z), each transposed so that the
second shown axis runs upwards.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from p2gmed.errors import InputError

VIEWS = ("sagittal", "coronal", "axial")
#: RGBA colours of label values in overlays (BraTS 2023: 1 NETC, 2 SNFH, 3 ET; BraTS 2018 ET = 4; AutoPET 1)
LABEL_COLOURS = {1: (0.9, 0.2, 0.2, 0.55), 2: (0.2, 0.8, 0.2, 0.45), 3: (1.0, 0.85, 0.1, 0.6),
                 4: (1.0, 0.85, 0.1, 0.6)}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # figures are files; never open a window
    import matplotlib.pyplot as plt

    return plt


def centre_index(volume: np.ndarray) -> tuple[int, int, int]:
    """Centre of the bounding box of the non-zero voxels (or of the volume when all are zero)."""
    nonzero = np.argwhere(volume != 0)
    if nonzero.size == 0:
        return tuple(s // 2 for s in volume.shape)  # type: ignore[return-value]
    return tuple(int(v) for v in (nonzero.min(0) + nonzero.max(0)) // 2)  # type: ignore[return-value]


def orthogonal_slices(volume: np.ndarray, index: Sequence[int]) -> list[np.ndarray]:
    """Sagittal, coronal and axial 2D slices of a (D, H, W) volume through `index`, ready for `imshow`."""
    x, y, z = index
    return [volume[x, :, :].T, volume[:, y, :].T, volume[:, :, z].T]


def _window(volume: np.ndarray) -> tuple[float, float]:
    """Display range: 0.5 and 99.5 percentiles of the non-zero voxels (robust to hot spots)."""
    values = volume[volume != 0]
    if values.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(values, (0.5, 99.5))
    return float(low), float(high if high > low else low + 1.0)


def _check_volumes(named: Mapping[str, np.ndarray], shape: tuple[int, ...] | None = None) -> tuple[int, ...]:
    for name, volume in named.items():
        if volume.ndim != 3:
            raise InputError(f"{name} must be a 3D volume, got shape {volume.shape}")
        shape = shape or volume.shape
        if volume.shape != shape:
            raise InputError(f"{name} has shape {volume.shape}, expected {shape}")
    return shape or ()


def plot_synthesis_case(
    gt: Mapping[str, np.ndarray],
    pred: Mapping[str, np.ndarray],
    out_png: str | Path,
    index: Sequence[int] | None = None,
    title: str | None = None,
) -> Path:
    """Ground truth, prediction and difference (prediction - truth) of every modality on three orthogonal slices.

    One row per modality; per view three panels: GT, prediction (same grey window as GT), difference
    (red positive, blue negative, symmetric range at the 99th percentile of |difference|).

    Args:
        gt: modality -> (D, H, W) ground-truth volume.
        pred: modality -> (D, H, W) predicted volume (a subset of `gt`'s modalities, or all).
        out_png: the PNG to write (atomically).
        index: (x, y, z) voxel the slices go through; default the centre of the first GT's non-zero region.
        title: figure title.

    Returns:
        the written path.
    """
    from p2gmed.io import atomic_path
    from p2gmed.modalities import DISPLAY

    modalities = [m for m in gt if m in pred]
    if not modalities:
        raise InputError("plot_synthesis_case needs at least one modality present in both gt and pred")
    gt = {m: np.asarray(gt[m], dtype=np.float32) for m in modalities}
    pred = {m: np.asarray(pred[m], dtype=np.float32) for m in modalities}
    shape = _check_volumes({f"gt[{m}]": gt[m] for m in modalities})
    _check_volumes({f"pred[{m}]": pred[m] for m in modalities}, shape)
    index = tuple(index) if index is not None else centre_index(gt[modalities[0]])
    plt = _pyplot()
    rows, cols = len(modalities), 3 * len(VIEWS)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.0 * rows + 0.6), squeeze=False)
    for r, m in enumerate(modalities):
        low, high = _window(gt[m])
        diff = pred[m] - gt[m]
        limit = float(np.percentile(np.abs(diff), 99)) or 1.0
        panels = zip(orthogonal_slices(gt[m], index), orthogonal_slices(pred[m], index), orthogonal_slices(diff, index))
        for v, (g, p, d) in enumerate(panels):
            ax_g, ax_p, ax_d = axes[r, 3 * v: 3 * v + 3]
            ax_g.imshow(g, cmap="gray", vmin=low, vmax=high, origin="lower")
            ax_p.imshow(p, cmap="gray", vmin=low, vmax=high, origin="lower")
            shown = ax_d.imshow(d, cmap="RdBu_r", vmin=-limit, vmax=limit, origin="lower")
            if r == 0:
                ax_g.set_title(f"{VIEWS[v]}\nground truth", fontsize=8)
                ax_p.set_title(f"{VIEWS[v]}\nprediction", fontsize=8)
                ax_d.set_title(f"{VIEWS[v]}\npred - truth", fontsize=8)
        axes[r, 0].set_ylabel(DISPLAY.get(m, m), fontsize=10)
        fig.colorbar(shown, ax=axes[r, -1], fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title or f"slices through voxel {index}", fontsize=10)
    return _save(fig, out_png, atomic_path)


def plot_segmentation_overlay(
    image: np.ndarray,
    ref_seg: np.ndarray,
    pred_seg: np.ndarray,
    out_png: str | Path,
    index: Sequence[int] | None = None,
    title: str | None = None,
    label_names: dict[int, str] | None = None,
) -> Path:
    """Reference and predicted labels over the image on three orthogonal slices (two rows).

    Args:
        image: (D, H, W) intensity volume shown in grey.
        ref_seg: (D, H, W) reference label volume.
        pred_seg: (D, H, W) predicted label volume.
        out_png: the PNG to write (atomically).
        index: (x, y, z) voxel the slices go through; default the centre of the reference (else prediction,
            else image) non-zero region.
        title: figure title.
        label_names: legend text per label value, e.g. `p2gmed.data.layouts.LABEL_NAMES["brats2023"]`;
            values without a name show as "label <value>".

    Returns:
        the written path.
    """
    from matplotlib.patches import Patch

    from p2gmed.io import atomic_path

    image = np.asarray(image, dtype=np.float32)
    ref_seg, pred_seg = np.asarray(ref_seg), np.asarray(pred_seg)
    shape = _check_volumes({"image": image})
    _check_volumes({"ref_seg": ref_seg, "pred_seg": pred_seg}, shape)
    if index is None:
        source = ref_seg if ref_seg.any() else pred_seg if pred_seg.any() else image
        index = centre_index(source)
    low, high = _window(image)
    plt = _pyplot()
    fig, axes = plt.subplots(2, len(VIEWS), figsize=(3.0 * len(VIEWS), 6.4), squeeze=False)
    for r, (name, seg) in enumerate((("reference", ref_seg), ("prediction", pred_seg))):
        draw_slice_row(axes[r], image, index, (low, high), seg, titles=r == 0)
        axes[r, 0].set_ylabel(name, fontsize=10)
    present = sorted((set(np.unique(ref_seg).tolist()) | set(np.unique(pred_seg).tolist())) - {0})
    handles = [Patch(color=LABEL_COLOURS.get(int(v), (0.5, 0.5, 1.0, 0.5)), label=text)
               for v, text in zip(present, legend_entries(present, label_names))]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8)
    fig.suptitle(title or f"slices through voxel {tuple(index)}", fontsize=10)
    return _save(fig, out_png, atomic_path)


def legend_entries(values: Sequence[float], names: dict[int, str] | None = None) -> list[str]:
    """Legend text for label values (read from NIfTI as floats): their name, else "label <integer value>"."""
    names = names or {}
    return [names.get(int(v), f"label {int(v)}") for v in values]


def draw_slice_row(
    axes_row: Sequence, volume: np.ndarray, index: Sequence[int], window: tuple[float, float],
    seg: np.ndarray | None = None, titles: bool = False,
) -> None:
    """The three orthogonal slices of `volume` through `index` on one row of axes, with `seg` overlaid if given
    and the view names as titles if `titles`."""
    low, high = window
    labels = orthogonal_slices(seg, index) if seg is not None else [None] * len(VIEWS)
    for v, (img, lab) in enumerate(zip(orthogonal_slices(volume, index), labels)):
        ax = axes_row[v]
        ax.imshow(img, cmap="gray", vmin=low, vmax=high, origin="lower")
        if lab is not None:
            ax.imshow(_label_rgba(lab), origin="lower", interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if titles:
            ax.set_title(VIEWS[v], fontsize=9)


def _label_rgba(labels: np.ndarray) -> np.ndarray:
    """(h, w) labels -> (h, w, 4) colours, transparent background."""
    rgba = np.zeros((*labels.shape, 4), dtype=np.float32)
    for value in np.unique(labels):
        if value != 0:
            rgba[labels == value] = LABEL_COLOURS.get(int(value), (0.5, 0.5, 1.0, 0.5))
    return rgba


def _save(fig, out_png: str | Path, atomic_path) -> Path:
    import matplotlib.pyplot as plt

    out_png = Path(out_png)
    with atomic_path(out_png, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return out_png
