"""Pictures of one's own results (`p2g figure`), as nnU-Net's overlay PNGs: per case, every given, synthesized and
reference modality and the segmentation overlays on three orthogonal slices through the lesion.

One row per volume: each prediction (titled "given" or "synthesized" from the `p2g predict` sidecar when there is
one), the reference of each synthesized modality right below it (each on its own grey window: synthesized MRI is on
the given scans' scale, not the reference's), then the predicted and
reference segmentations over the first image. The slices go through the centre of the largest reference lesion
(else the largest predicted one, else the centre of the image content). Volumes are shown in RAS orientation
(`nibabel.as_closest_canonical`) whatever their voxel order. `case_figure` draws from arrays and returns the
matplotlib figure, which is what a TensorBoard hook needs (`SummaryWriter.add_figure`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from p2gmed.errors import InputError
from p2gmed.report.figures import VIEWS, _pyplot, _save, _window, centre_index, draw_slice_row


def lesion_centre(*segmentations: np.ndarray | None, fallback: np.ndarray | None = None) -> tuple[int, int, int]:
    """Centre (voxel) of the largest connected lesion of the first non-empty segmentation, else of `fallback`."""
    for seg in segmentations:
        if seg is None or not np.any(seg):
            continue
        components, count = ndimage.label(np.asarray(seg) != 0)
        sizes = np.bincount(components.ravel())[1:]
        largest = components == (int(np.argmax(sizes)) + 1)
        return tuple(int(round(v)) for v in ndimage.center_of_mass(largest))  # type: ignore[return-value]
    if fallback is None:
        raise InputError("nothing to centre the slices on")
    return centre_index(fallback)


def case_figure(
    images: Sequence[tuple[str, np.ndarray]],
    segmentations: Sequence[tuple[str, np.ndarray]] = (),
    references: Mapping[str, np.ndarray] | None = None,
    index: Sequence[int] | None = None,
    title: str | None = None,
):
    """The case figure from arrays (all (D, H, W) in RAS order, one grid).

    Args:
        images: (row title, volume) of each image row, e.g. ("t2w synthesized", array); the row title's first word
            names the modality, whose reference (if in `references`) is drawn right below it.
        segmentations: (row title, label volume) drawn over the first image.
        references: modality -> reference volume.
        index: (x, y, z) the slices go through; default `lesion_centre` of the segmentations (reference first).
        title: figure title.

    Returns:
        the matplotlib Figure (the caller saves or logs and closes it).
    """
    if not images:
        raise InputError("a case figure needs at least one image")
    references = dict(references or {})
    shape = np.shape(images[0][1])
    rows: list[tuple[str, np.ndarray, tuple[float, float], np.ndarray | None]] = []
    for name, volume in images:
        window = _window(np.asarray(volume))
        rows.append((name, np.asarray(volume), window, None))
        modality = name.split()[0]
        if modality in references and "given" not in name:
            reference = np.asarray(references[modality])
            rows.append((f"{modality} reference", reference, _window(reference), None))
    base = np.asarray(images[0][1])
    for name, seg in segmentations:
        rows.append((name, base, _window(base), np.asarray(seg)))
    for name, volume, _, seg in rows:
        for what, array in ((name, volume), (f"{name} labels", seg)):
            if array is not None and np.shape(array) != shape:
                raise InputError(f"{what} has shape {np.shape(array)}, but the first image has {shape}")
    if index is None:
        segs = [s for _, s in sorted(segmentations, key=lambda item: "reference" not in item[0])]
        index = lesion_centre(*segs, fallback=base)
    plt = _pyplot()
    fig, axes = plt.subplots(len(rows), len(VIEWS), figsize=(2.4 * len(VIEWS), 2.2 * len(rows) + 0.4), squeeze=False,
                             layout="constrained")
    for r, (name, volume, window, seg) in enumerate(rows):
        draw_slice_row(axes[r], volume, index, window, seg, titles=r == 0)
        axes[r, 0].set_ylabel(name, fontsize=9)
    fig.suptitle(title or f"slices through voxel {tuple(int(i) for i in index)}", fontsize=10)
    return fig


def _load_ras(path: Path) -> np.ndarray:
    import nibabel as nib

    try:
        img = nib.as_closest_canonical(nib.load(str(path)))
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel raises many types for broken files
        raise InputError(f"{path} cannot be read as NIfTI: {exc}") from None
    return data[..., 0] if data.ndim == 4 and data.shape[-1] == 1 else data


def _sources(folder: Path, case: str) -> dict[str, str]:
    """Output -> "given" / "synthesized" / ... from the `p2g predict` sidecar, if there is one."""
    try:
        meta = json.loads((folder / f"{case}.json").read_text())
        return {key: str(value.get("source", "")) for key, value in meta.get("outputs", {}).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def write_case_figures(
    pred_dir: str | Path, out_dir: str | Path, ref_dir: str | Path | None = None, cases: Sequence[str] | None = None
) -> list[Path]:
    """One PNG per predicted case (`<out>/<case>.png`, `<out>/<from-...>/<case>.png` for subset folders).

    Raises:
        InputError: no predictions, an unknown `cases` entry, unreadable files or volumes on different grids.
    """
    from p2gmed.evaluation.matching import scan_predictions, scan_reference
    from p2gmed.modalities import ALL

    pred_dir, out_dir = Path(pred_dir), Path(out_dir)
    refs = scan_reference(ref_dir) if ref_dir is not None else {}
    written = []
    for source, predictions in scan_predictions(pred_dir).items():
        folder = pred_dir / source if source else pred_dir
        wanted = sorted(predictions) if cases is None else list(cases)
        unknown = [c for c in wanted if c not in predictions]
        if unknown:
            raise InputError(f"{folder} has no predictions for case(s) {', '.join(unknown)}")
        for case in wanted:
            files, sources = predictions[case], _sources(folder, case)
            ref = refs.get(case)
            order = sorted(files.images, key=lambda m: (sources.get(m) != "given", ALL.index(m)))
            images = [(f"{m} {sources.get(m, 'predicted')}", _load_ras(files.images[m])) for m in order]
            references = {m: _load_ras(p) for m, p in (ref.images.items() if ref else []) if m in files.images}
            segmentations = []
            if files.seg is not None:
                segmentations.append(("seg predicted", _load_ras(files.seg)))
            if ref is not None and ref.seg is not None:
                segmentations.append(("seg reference", _load_ras(ref.seg)))
            if not images:
                if ref is None or not ref.images:
                    raise InputError(f"case {case} has a segmentation but no image to draw it on; give --ref")
                modality = sorted(ref.images, key=ALL.index)[0]
                images = [(f"{modality} reference image", _load_ras(ref.images[modality]))]
            fig = case_figure(images, segmentations, references, title=f"{case}" + (f" ({source})" if source else ""))
            written.append(_save(fig, (out_dir / source if source else out_dir) / f"{case}.png", _atomic()))
    return written


def _atomic():
    from p2gmed.io import atomic_path

    return atomic_path


def log_case_figure(writer, tag: str, step: int, *args, **kwargs) -> None:
    """Draw `case_figure(*args, **kwargs)` into TensorBoard (`SummaryWriter.add_figure`) and close it.

    The hook for validation during training: one held-out subject's given, synthesized and reference modalities
    (or its predicted and reference segmentation) at each validation step.
    """
    writer.add_figure(tag, case_figure(*args, **kwargs), global_step=step, close=True)
