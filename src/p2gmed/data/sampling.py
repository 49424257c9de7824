"""Train/validation splits by patient and step-indexed training batches.

Under torchrun each rank holds only its shard of the training subjects (`shard_subjects`, MONAI's
`partition_dataset`), so host memory per rank shrinks with the number of ranks. A batch is a pure function of
(seed, step, rank): resuming at step s needs no iterator state, and two runs with the same seed and number of
ranks see the same crops. Each rank draws its subjects by cycling through a per-epoch permutation of its shard
(every subject once per epoch), crops and augmentations from `np.random.default_rng([seed, step, rank])`. All
volumes are already in memory: no file I/O per step. `StepLoader` builds the batches of the coming steps in
DataLoader worker processes (`data.num_workers`); being pure functions of the step, they are the same batches.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from p2gmed.data.records import Subject
from p2gmed.errors import DataError, InputError

log = logging.getLogger(__name__)


def split_subjects(
    subjects: Sequence[Subject], data_cfg: Any, seed: int
) -> tuple[list[Subject], list[Subject]]:
    """Split into (train, val) by patient, so no individual is on both sides.

    `data.split_file` (JSON with "train" and "val" lists of subject ids; "test" and others ignored) overrides
    `data.val_fraction`; subjects it does not list are left out of both. Otherwise round(val_fraction x
    patients) patients (at least one when the fraction is > 0 and there are two or more) go to validation,
    chosen by a permutation of the sorted patient ids seeded with `seed`.

    Raises:
        InputError: unreadable split file, or ids it lists that the data set lacks (named).
    """
    if data_cfg.split_file:
        return _split_from_file(subjects, Path(data_cfg.split_file))
    patients = sorted({s.patient_id for s in subjects})
    n_val = round(data_cfg.val_fraction * len(patients))
    if data_cfg.val_fraction > 0 and len(patients) > 1:
        n_val = min(max(n_val, 1), len(patients) - 1)
    order = np.random.default_rng(seed).permutation(len(patients))
    val_patients = {patients[i] for i in order[:n_val]}
    train = [s for s in subjects if s.patient_id not in val_patients]
    val = [s for s in subjects if s.patient_id in val_patients]
    return train, val


def _split_from_file(subjects: Sequence[Subject], path: Path) -> tuple[list[Subject], list[Subject]]:
    try:
        split = json.loads(path.read_text())
        train_ids, val_ids = list(split["train"]), list(split.get("val", []))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"split file {path} must be JSON with 'train' and 'val' lists of subject ids ({exc})."
        ) from None
    by_id = {s.subject_id: s for s in subjects}
    unknown = [i for i in train_ids + val_ids if i not in by_id]
    if unknown:
        raise InputError(
            f"split file {path} names subjects the data set lacks: {', '.join(map(str, unknown[:5]))}."
        )
    shared = {by_id[i].patient_id for i in train_ids} & {by_id[i].patient_id for i in val_ids}
    if shared:
        log.warning("split file %s puts patients %s on both sides", path, sorted(shared)[:5])
    return [by_id[i] for i in train_ids], [by_id[i] for i in val_ids]


def shard_subjects(subjects: Sequence[Subject], rank: int, world: int, seed: int) -> list[Subject]:
    """This rank's share of the training subjects (MONAI `partition_dataset`, shuffled by `seed`).

    Shards have equal length: when the subjects do not divide evenly (or are fewer than the ranks), a few are
    repeated in the short shards, so every rank runs the same number of steps per epoch. One rank (world 1) gets
    every subject, in order.
    """
    if world <= 1:
        return list(subjects)
    from monai.data import partition_dataset

    items = list(subjects)
    if len(items) < world:  # fewer subjects than ranks: every rank still gets one
        log.warning("%d training subjects for %d ranks: some ranks train on the same subject", len(items), world)
        items = (items * world)[:world]
    return list(partition_dataset(items, num_partitions=world, shuffle=True, seed=seed, even_divisible=True)[rank])


def steps_per_epoch(n_train: int, batch_size: int, world: int = 1) -> int:
    """Optimizer steps for every training subject to be seen once: ceil(n / (batch_size x world))."""
    return max(1, math.ceil(n_train / (batch_size * world)))


def crop_start(
    shape: Sequence[int], roi: Sequence[int], center: Sequence[int] | None, rng: np.random.Generator
) -> list[int]:
    """Corner of a `roi` window inside `shape` (already >= roi): around `center` (clamped), else uniform."""
    if center is None:
        return [int(rng.integers(0, s - r + 1)) for s, r in zip(shape, roi)]
    return [int(min(max(c - r // 2, 0), s - r)) for c, s, r in zip(center, shape, roi)]


def _random_voxel(mask: torch.Tensor, rng: np.random.Generator) -> tuple[int, ...] | None:
    """Index of a uniformly drawn True voxel of `mask` (D, H, W), or None when it has none."""
    voxels = torch.nonzero(mask.reshape(-1)).flatten()
    if not len(voxels):
        return None
    return tuple(int(i) for i in np.unravel_index(int(voxels[rng.integers(len(voxels))]), tuple(mask.shape)))


def bias_field_augment(
    image: torch.Tensor, foreground: torch.Tensor, background: torch.Tensor, coeff: float, seed: int
) -> torch.Tensor:
    """A smooth multiplicative bias field on the intensities above the background, as a scanner's would be.

    The volumes are normalised (z-scores, windowed CT), so the field multiplies the signal measured from each
    channel's background value b: x' = b + (x - b) exp(f) inside the foreground; outside it nothing changes.

    Args:
        image: (M, D, H, W) normalised crop.
        foreground: (1, D, H, W) bool.
        background: (M,) each channel's normalised background value.
        coeff: the field's polynomial coefficients are uniform in [-coeff, coeff].
        seed: seeds the field (the batches are pure functions of the step).

    Returns:
        (M, D, H, W) float32; one field f (MONAI RandBiasField, degree 3) shared by the M channels.
    """
    from monai.transforms import RandBiasField

    field = RandBiasField(degree=3, coeff_range=(-coeff, coeff), prob=1.0)
    field.set_random_state(seed=seed)
    gain = torch.as_tensor(np.asarray(field(np.ones((1, *image.shape[1:]), np.float32))), dtype=torch.float32)
    b = background.to(torch.float32).view(-1, 1, 1, 1)
    biased = b + (image.float() - b) * gain
    return torch.where(foreground, biased, image.float())


class TrainBatches:
    """Deterministic training batches from this rank's loaded subjects.

    Args:
        loaded: this rank's training subjects (`volumes.LoadedSubject`; its shard from `shard_subjects`).
        cfg: full `Config` (train.batch_size, data.roi_size, crops_per_subject, flip_prob, rot90_prob).
        seed: run seed.
        rank, world: this process's rank and the number of processes (DDP).
        keep_rotation_plane: pre-training: leave the (D, H) plane of the equivariance rotations phi
            (models/rotation.py) as stored -- no rot90 and flips along W only -- so that phi's k, the label of
            Eq. 5, is the crop's true rotation. A rot90 in that plane would add to k unseen, and a flip of D or H
            mirrors the plane (on a near-symmetric brain, a D flip then an H flip looks like a 180-degree turn).
        bias_field: segmentation tuning: multiply each crop's intensities above the background by a smooth
            random field with probability `data.bias_field_prob` (`bias_field_augment`).
    """

    def __init__(
        self, loaded: Sequence[Any], cfg: Any, seed: int, rank: int = 0, world: int = 1,
        *, keep_rotation_plane: bool = False, bias_field: bool = False,
    ):
        if not len(loaded):
            raise DataError("no training subjects to draw batches from.")
        if not 0 <= rank < world:
            raise InputError(f"rank {rank} is outside world size {world}")
        self.loaded, self.cfg, self.seed, self.rank, self.world = loaded, cfg, int(seed), rank, world
        self.keep_rotation_plane = keep_rotation_plane
        self.bias_field = bias_field and cfg.data.bias_field_prob > 0
        self.roi = tuple(int(r) for r in cfg.data.roi_size)
        if self.roi[0] != self.roi[1]:
            raise InputError(f"data.roi_size must have equal first two axes for rot90, got {self.roi}")
        labelled = [item.label is not None for item in (loaded[i] for i in range(len(loaded)))]
        self.has_labels = all(labelled)
        if any(labelled) and not self.has_labels:
            log.warning(
                "%d of %d training subjects have no label: batches carry no labels",
                labelled.count(False),
                len(labelled),
            )
        self.steps_per_epoch = steps_per_epoch(len(loaded), cfg.train.batch_size)

    def subject_indices(self, step: int) -> list[int]:
        """Indices into `loaded` (this rank's shard) of the subjects at `step` (batch_size of them)."""
        n, b = len(self.loaded), self.cfg.train.batch_size
        epoch, within = divmod(step, self.steps_per_epoch)
        order = np.random.default_rng([self.seed, epoch, self.rank]).permutation(n)
        return [int(order[(within * b + i) % n]) for i in range(b)]

    def _crop(
        self, item: Any, rng: np.random.Generator, intensity_rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One augmented ROI crop: image (M, *roi), foreground (1, *roi), label (1, *roi) | None.

        `intensity_rng` draws the bias field apart from `rng`, so that switching it on leaves the crops as they
        were."""
        image, fg, label = item.image, item.foreground, item.label if self.has_labels else None
        shape = tuple(image.shape[1:])
        pad = [max(r - s, 0) for s, r in zip(shape, self.roi)]
        if any(
            pad
        ):  # pad symmetrically with each channel's background so small volumes still give a full ROI
            before = [p // 2 for p in pad]
            full = tuple(max(s, r) for s, r in zip(shape, self.roi))
            slices = tuple(slice(b, b + s) for b, s in zip(before, shape))
            padded = item.background.view(-1, 1, 1, 1).expand(image.shape[0], *full).clone()
            padded[(slice(None), *slices)] = image
            fg_p = torch.zeros((1, *full), dtype=torch.bool)
            fg_p[(slice(None), *slices)] = fg
            if label is not None:
                label_p = torch.zeros((1, *full), dtype=label.dtype)
                label_p[(slice(None), *slices)] = label
                label = label_p
            image, fg, shape = padded, fg_p, full
        center = None
        positive = self.cfg.data.label_crop_fraction
        if label is not None and positive > 0 and rng.random() < positive:
            center = _random_voxel(label[0] > 0, rng)  # a "positive" crop (MONAI RandCropByPosNegLabeld)
        if center is None and rng.random() < 0.5:
            center = _random_voxel(fg[0], rng)
        start = crop_start(shape, self.roi, center, rng)
        window = (slice(None), *(slice(a, a + r) for a, r in zip(start, self.roi)))
        tensors = [image[window], fg[window]] + ([label[window]] if label is not None else [])
        if self.bias_field and intensity_rng.random() < self.cfg.data.bias_field_prob:
            tensors[0] = bias_field_augment(tensors[0], tensors[1], item.background, self.cfg.data.bias_field_coeff,
                                            int(intensity_rng.integers(2**31)))
        return self._augment(tensors, rng)

    def _augment(self, tensors: list[torch.Tensor], rng: np.random.Generator):
        """Random flips per spatial axis, then rot90 in the plane of the first two spatial axes (phi's plane);
        with `keep_rotation_plane`, only the flip along W (it commutes with every phi)."""
        data = self.cfg.data
        flips = [axis + 1 for axis in range(3) if rng.random() < data.flip_prob]
        k = int(rng.integers(1, 4)) if rng.random() < data.rot90_prob else 0
        if self.keep_rotation_plane:
            flips, k = [axis for axis in flips if axis == 3], 0
        out = []
        for t in tensors:
            t = torch.flip(t, flips) if flips else t
            t = torch.rot90(t, k, dims=(1, 2)) if k else t
            out.append(t.contiguous())
        return out[0], out[1], (out[2] if len(out) > 2 else None)

    def batch(self, step: int) -> dict[str, Any]:
        """The batch of `step` for this rank.

        Returns:
            image (N, M, D, H, W) float32, available (N, M) bool, foreground (N, 1, D, H, W) bool,
            label (N, 1, D, H, W) int64 when every training subject has one, subject list[str] of length N;
            N = batch_size x crops_per_subject, the crops of one subject consecutive.
        """
        rng = np.random.default_rng([self.seed, int(step), self.rank])
        intensity_rng = np.random.default_rng([self.seed, int(step), self.rank, 1])
        images, fgs, labels, available, names = [], [], [], [], []
        for index in self.subject_indices(step):
            item = self.loaded[index]
            for _ in range(self.cfg.data.crops_per_subject):
                image, fg, label = self._crop(item, rng, intensity_rng)
                images.append(image)
                fgs.append(fg)
                labels.append(label)
                available.append(item.available)
                names.append(item.subject.subject_id)
        out = {
            "image": torch.stack(images).float(),
            "available": torch.stack(available).bool(),
            "foreground": torch.stack(fgs).bool(),
            "subject": names,
        }
        if self.has_labels:
            out["label"] = torch.stack(labels).long()
        return out


class _StepDataset(torch.utils.data.Dataset):
    """Index = step: lets a DataLoader's workers build the batches of coming steps."""

    def __init__(self, batches: TrainBatches, length: int):
        self.batches, self.length = batches, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, step: int) -> dict[str, Any]:
        return self.batches.batch(step)


class StepLoader:
    """`step -> batch` like `TrainBatches.batch`, with the batches of the coming steps built ahead by workers.

    With `workers` > 0, a DataLoader (worker processes, `prefetch` batches each) walks the steps from the first
    one asked for; asking for a step out of that order (a resume, a test) starts a new walk there. Since each
    batch is a pure function of (seed, step, rank), the batches are identical with any number of workers.

    Args:
        batches: the rank's `TrainBatches`.
        workers: worker processes; 0 builds every batch in the calling process.
        max_steps: the last step + 1 a walk goes to.
        prefetch: batches each worker prepares ahead.
    """

    def __init__(self, batches: TrainBatches, workers: int, max_steps: int, prefetch: int = 2):
        self.batches, self.workers, self.max_steps, self.prefetch = batches, int(workers), int(max_steps), prefetch
        self._iterator: Any = None
        self._next = -1

    def __call__(self, step: int) -> dict[str, Any]:
        if self.workers <= 0:
            return self.batches.batch(step)
        if self._iterator is None or step != self._next:
            self._iterator = self._walk_from(step)
        self._next = step + 1
        return next(self._iterator)

    def _walk_from(self, start: int):
        loader = torch.utils.data.DataLoader(
            _StepDataset(self.batches, max(self.max_steps, start + 1)),
            batch_size=None,
            sampler=range(start, max(self.max_steps, start + 1)),
            num_workers=self.workers,
            prefetch_factor=self.prefetch,
            persistent_workers=False,
        )
        return iter(loader)
