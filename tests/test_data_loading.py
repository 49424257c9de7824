"""Normalisation inverses, load_subject (shapes, RAS, errors), caching, splits and step-indexed batches."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch

from p2gmed.config import DataConfig, load_config
from p2gmed.data.normalization import denormalize, normalize
from p2gmed.data.records import Subject
from p2gmed.data.sampling import (
    StepLoader,
    TrainBatches,
    bias_field_augment,
    shard_subjects,
    split_subjects,
    steps_per_epoch,
)
from p2gmed.data.volumes import load_subject, load_subjects
from p2gmed.errors import DataError, InputError

CONFIG = Path(__file__).parents[1] / "configs" / "tiny-cpu.yaml"


# ---------------------------------------------------------------------------------------------- normalisation


def test_ct_window_maps_to_unit_range_and_round_trips_inside_window():
    cfg = DataConfig(ct_window=(-1000.0, 1000.0))
    hu = np.array([-2000.0, -1000.0, -500.0, 0.0, 400.0, 1000.0, 3000.0])
    y, stats = normalize(hu, "ct", cfg)
    np.testing.assert_allclose(y, [-1, -1, -0.5, 0, 0.4, 1, 1])
    np.testing.assert_allclose(denormalize(y, stats), np.clip(hu, -1000, 1000), atol=1e-9)
    # an out-of-range prediction comes back clipped to the window
    np.testing.assert_allclose(denormalize(np.array([1.7, -3.0]), stats.to_dict()), [1000, -1000])


def test_mri_zscore_nonzero_by_hand_and_inverse_with_torch():
    x = torch.tensor([0.0, 0.0, 2.0, 4.0])  # non-zero mean 3, std 1
    y, stats = normalize(x, "t1n", DataConfig(mri_norm="nonzero"))
    torch.testing.assert_close(y, torch.tensor([0.0, 0.0, -1.0, 1.0]))
    assert (stats.shift, stats.scale, stats.background) == (3.0, 1.0, 0.0)
    torch.testing.assert_close(denormalize(y, stats), x)
    # a synthesised image with a near-zero background: the mask zeroes it
    pred = torch.tensor([0.01, -0.02, -1.0, 1.0])
    out = denormalize(pred, stats, foreground=x != 0)
    torch.testing.assert_close(out, x)


def test_mri_zscore_whole_volume_like_the_authors():
    x = np.array([0.0, 0.0, 2.0, 6.0])  # mean 2, population std 2.449...
    y, stats = normalize(x, "t2f", DataConfig(mri_norm="volume"))
    std = np.sqrt(((x - 2) ** 2).mean())
    np.testing.assert_allclose(y, (x - 2) / std)
    assert stats.background == pytest.approx(-2 / std)
    np.testing.assert_allclose(denormalize(y, stats), x, atol=1e-12)


def test_pet_scale_and_constant_volume():
    y, stats = normalize(np.array([0.0, 5.0, 25.0]), "pet", DataConfig(pet_scale=10.0))
    np.testing.assert_allclose(y, [0, 0.5, 2.5])
    np.testing.assert_allclose(denormalize(y, stats), [0, 5, 25])
    y, stats = normalize(np.full(4, 7.0), "t1c", DataConfig(mri_norm="volume"))
    assert stats.scale == 1.0 and np.all(y == 0)


# ------------------------------------------------------------------------------------------------ loading


def save(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def brain_subject(
    root: Path, shape=(12, 10, 8), affine=None, mods=("t1n", "t1c", "t2w"), seed=0, name="S1", label_value=3
) -> Subject:
    """A box of tissue inside zero background, one file per modality, a label inside the box."""
    affine = np.eye(4) if affine is None else affine
    rng = np.random.default_rng(seed)
    images = {}
    for m in mods:
        data = np.zeros(shape, np.float32)
        data[2:-2, 2:-2, 1:-1] = rng.uniform(50, 150, (shape[0] - 4, shape[1] - 4, shape[2] - 2))
        images[m] = save(root / name / f"{m}.nii.gz", data, affine)
    seg = np.zeros(shape, np.uint8)
    seg[4:6, 4:6, 3:5] = label_value
    label = save(root / name / "seg.nii.gz", seg, affine)
    return Subject(name, name, images, label, "brats23", "brats2023")


@pytest.fixture
def cfg():
    c = load_config(CONFIG)
    c.data.crop_margin = 1
    return c


def test_load_subject_shapes_missing_channel_and_crop(tmp_path, cfg):
    item = load_subject(brain_subject(tmp_path), cfg.data)
    # the box [2:-2, 2:-2, 1:-1] of (12, 10, 8) plus a margin of 1 voxel
    assert item.image.shape == (4, 10, 8, 8) and item.image.dtype == torch.float32
    assert item.available.tolist() == [True, True, True, False]
    assert torch.all(item.image[3] == 0)  # t2f missing: zeros, not invented
    assert item.foreground.shape == (1, 10, 8, 8) and item.foreground.dtype == torch.bool
    assert int(item.foreground.sum()) == 8 * 6 * 6
    assert item.label.dtype == torch.uint8 and set(item.label.unique().tolist()) == {0, 3}  # cached as bytes
    fg = item.foreground[0]
    for c in range(3):  # nonzero z-score: brain mean 0, std 1, background 0
        assert abs(float(item.image[c][fg].mean())) < 1e-5 and float(
            item.image[c][fg].std(unbiased=False)
        ) == pytest.approx(1, abs=1e-4)
        assert torch.all(item.image[c][~fg] == 0)
    assert set(item.stats) == {"t1n", "t1c", "t2w"}
    # the crop moves the origin: voxel (0,0,0) of the crop is voxel (1,1,0) of the file
    np.testing.assert_allclose(item.affine[:3, 3], [1, 1, 0])


def test_lps_file_comes_out_ras(tmp_path, cfg):
    shape = (6, 5, 4)
    lps = np.diag([-2.0, -2.0, 3.0, 1.0])
    lps[:3, 3] = [10, 20, 30]
    data = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) + 1
    path = save(tmp_path / "s" / "t1n.nii.gz", data, lps)
    item = load_subject(Subject("s", "s", {"t1n": path}), dataclasses.replace(cfg.data, modalities=("t1n",)))
    assert item.affine[0, 0] == 2 and item.affine[1, 1] == 2 and item.affine[2, 2] == 3  # RAS: positive axes
    # every voxel keeps its world position: find the raw max voxel in both arrays
    raw_idx = np.array([*np.unravel_index(np.argmax(data), shape), 1])
    new_idx = np.array([*np.unravel_index(int(item.image[0].argmax()), item.image.shape[1:]), 1])
    np.testing.assert_allclose(item.affine @ new_idx, lps @ raw_idx)
    np.testing.assert_allclose(
        item.image[0].numpy(), (np.flip(data, (0, 1)) - data.mean()) / data.std(), atol=1e-5
    )


def test_spacing_resamples(tmp_path, cfg):
    subject = brain_subject(tmp_path, shape=(16, 16, 8))
    data_cfg = dataclasses.replace(cfg.data, spacing=(2.0, 2.0, 1.0), crop_margin=100)
    item = load_subject(subject, data_cfg)
    assert item.image.shape[1:] == (8, 8, 8)
    np.testing.assert_allclose(np.diag(item.affine)[:3], [2, 2, 1])


def test_load_errors_name_files(tmp_path, cfg):
    subject = brain_subject(tmp_path)
    bad = np.ones((12, 10, 8), np.float32)
    bad[0, 0, 0] = np.nan
    save(subject.images["t1c"], bad, np.eye(4))
    with pytest.raises(DataError, match=r"t1c\.nii\.gz holds 1 NaN"):
        load_subject(subject, cfg.data)
    subject = brain_subject(tmp_path / "b")
    save(subject.images["t2w"], np.ones((12, 10, 7), np.float32), np.eye(4))
    with pytest.raises(DataError, match=r"t2w\.nii\.gz has shape .* but .*t1n\.nii\.gz"):
        load_subject(subject, cfg.data)
    subject = brain_subject(tmp_path / "c", label_value=4)  # ET = 4 in a BraTS 2023 (ET = 3) label
    with pytest.raises(DataError, match=r"seg\.nii\.gz holds label values \[4\]"):
        load_subject(subject, cfg.data)
    assert load_subject(subject, cfg.data, with_label=False).label is None
    with pytest.raises(DataError, match="none of the modalities"):
        load_subject(Subject("e", "e", {}), cfg.data)


def test_foreground_threshold_mode(tmp_path, cfg):
    data_cfg = dataclasses.replace(
        cfg.data, foreground="threshold", foreground_threshold=0.0, mri_norm="volume"
    )
    item = load_subject(brain_subject(tmp_path), data_cfg)
    expected = (item.image[:3] > 0).any(0, keepdim=True)  # union over available modalities
    assert torch.equal(item.foreground, expected)


def test_cache_on_disk_matches_memory(tmp_path, cfg):
    subjects = [brain_subject(tmp_path, name=f"S{i}", seed=i) for i in range(2)]
    in_memory = load_subjects(subjects, cfg.data, progress=False)
    disk_cfg = dataclasses.replace(cfg.data, cache_dir=str(tmp_path / "cache"))
    on_disk = load_subjects(subjects, disk_cfg, progress=False)
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2
    partial = load_subjects(subjects, dataclasses.replace(cfg.data, cache_rate=0.5), progress=False)
    for a, b, c in zip(in_memory, on_disk, partial):
        assert a.subject.subject_id == b.subject.subject_id == c.subject.subject_id
        assert (
            torch.equal(a.image, b.image) and torch.equal(a.label, b.label) and torch.equal(a.image, c.image)
        )
        assert a.stats == b.stats
    assert [s.subject.subject_id for s in in_memory[0:2]] == ["S0", "S1"]


def test_load_subjects_raises_data_error_not_runtime_error(tmp_path, cfg):
    subject = brain_subject(tmp_path, label_value=7)
    with pytest.raises(DataError, match="label values"):
        load_subjects([subject], cfg.data, progress=False)


# ------------------------------------------------------------------------------------------------ splits


def _subjects(patients: dict[str, int]) -> list[Subject]:
    return [Subject(f"{p}_{k}", p, {}) for p, n in patients.items() for k in range(n)]


def test_split_by_patient_is_disjoint_and_deterministic():
    subjects = _subjects({f"P{i}": 1 + i % 3 for i in range(10)})
    data_cfg = DataConfig(val_fraction=0.3)
    train, val = split_subjects(subjects, data_cfg, seed=1)
    assert {s.patient_id for s in train}.isdisjoint({s.patient_id for s in val})
    assert len({s.patient_id for s in val}) == 3 and len(train) + len(val) == len(subjects)
    assert split_subjects(subjects, data_cfg, seed=1) == (train, val)
    assert split_subjects(subjects, data_cfg, seed=2) != (train, val)


def test_split_file_overrides_fraction(tmp_path):
    subjects = _subjects({"A": 1, "B": 1, "C": 1})
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"train": ["C_0", "A_0"], "val": ["B_0"]}))
    train, val = split_subjects(subjects, DataConfig(split_file=str(path), val_fraction=0.9), seed=0)
    assert [s.subject_id for s in train] == ["C_0", "A_0"] and [s.subject_id for s in val] == ["B_0"]
    path.write_text(json.dumps({"train": ["Z_9"], "val": []}))
    with pytest.raises(InputError, match="Z_9"):
        split_subjects(subjects, DataConfig(split_file=str(path)), seed=0)


# ------------------------------------------------------------------------------------------------ batches


@pytest.fixture
def loaded(tmp_path, cfg):
    subjects = [brain_subject(tmp_path, shape=(40, 36, 20), name=f"S{i}", seed=i) for i in range(4)]
    return load_subjects(subjects, cfg.data, progress=False)


def test_batch_shapes_determinism_and_consecutive_crops(loaded, cfg):
    cfg.train.batch_size = 2
    batches = TrainBatches(loaded, cfg, seed=5)
    b = batches.batch(3)
    n = 2 * cfg.data.crops_per_subject
    assert b["image"].shape == (n, 4, 32, 32, 64) and b["image"].dtype == torch.float32
    assert b["available"].shape == (n, 4) and b["available"][:, 3].sum() == 0
    assert b["foreground"].shape == (n, 1, 32, 32, 64) and b["foreground"].dtype == torch.bool
    assert b["label"].shape == (n, 1, 32, 32, 64) and b["label"].dtype == torch.int64
    assert b["subject"][0] == b["subject"][1] and b["subject"][2] == b["subject"][3] != b["subject"][0]
    again = TrainBatches(loaded, cfg, seed=5).batch(3)  # a fresh object: resume needs no state
    assert (
        all(torch.equal(b[k], again[k]) for k in ("image", "foreground", "label"))
        and b["subject"] == again["subject"]
    )
    other = batches.batch(4)
    assert not torch.equal(b["image"], other["image"])


def test_epoch_covers_every_subject_of_the_shard_once(loaded, cfg):
    cfg.train.batch_size = 1
    assert steps_per_epoch(4, 1, world=2) == 2 and steps_per_epoch(5, 1, world=2) == 3
    batches = TrainBatches(loaded, cfg, seed=0, rank=1, world=2)  # `loaded` is this rank's shard
    assert batches.steps_per_epoch == 4
    for epoch in range(2):
        seen = [i for s in range(4 * epoch, 4 * epoch + 4) for i in batches.subject_indices(s)]
        assert sorted(seen) == [0, 1, 2, 3]
    other_rank = TrainBatches(loaded, cfg, seed=0, rank=0, world=2)
    assert [other_rank.subject_indices(s) for s in range(8)] != [batches.subject_indices(s) for s in range(8)]


@pytest.mark.parametrize("n, world", [(4, 2), (5, 2), (7, 3), (2, 4)])
def test_shards_cover_every_subject_with_equal_lengths(n, world):
    subjects = [f"S{i}" for i in range(n)]
    shards = [shard_subjects(subjects, r, world, seed=3) for r in range(world)]
    assert {len(s) for s in shards} == {math.ceil(n / world)}  # every rank runs as many steps per epoch
    assert set().union(*map(set, shards)) == set(subjects)
    if n % world == 0:
        assert sorted(x for s in shards for x in s) == subjects  # disjoint when they divide evenly
    assert shard_subjects(subjects, 0, 1, seed=3) == subjects
    assert shards == [shard_subjects(subjects, r, world, seed=3) for r in range(world)]  # resume: same shards


def test_step_loader_workers_give_the_same_batches_in_any_order(loaded, cfg):
    batches = TrainBatches(loaded, cfg, seed=2)
    loader = StepLoader(batches, workers=2, max_steps=6)
    got = {s: loader(s) for s in (0, 1, 2, 4, 5)}  # 4 after 2: a jump starts a new walk, as a resume does
    for step, batch in got.items():
        expected = batches.batch(step)
        assert batch["subject"] == expected["subject"]
        assert all(torch.equal(batch[k], expected[k]) for k in ("image", "foreground", "label", "available"))


def test_small_volume_is_padded_with_background(tmp_path, cfg):
    cfg.data.flip_prob = cfg.data.rot90_prob = 0.0
    cfg.data.mri_norm = "volume"  # background is then -mean/std, not 0: padding must use it
    small = load_subjects([brain_subject(tmp_path, shape=(12, 10, 8))], cfg.data, progress=False)
    item = small[0]
    b = TrainBatches(small, cfg, seed=0).batch(0)
    image, fg = b["image"][0], b["foreground"][0]
    # the whole (10, 8, 8) volume lies inside the (32, 32, 64) ROI, centred
    assert int(fg.sum()) == int(item.foreground.sum())
    d, h, w = item.image.shape[1:]
    start = [(32 - d) // 2, (32 - h) // 2, (64 - w) // 2]
    inner = (slice(None), *(slice(s, s + n) for s, n in zip(start, (d, h, w))))
    assert torch.equal(image[inner], item.image)
    outside = torch.ones((32, 32, 64), dtype=torch.bool)
    outside[inner[1:]] = False
    for c in range(3):
        assert torch.allclose(
            image[c][outside], torch.tensor(item.stats[("t1n", "t1c", "t2w")[c]].background)
        )
    assert torch.all(image[3][outside] == 0)
    assert int(b["label"][0].eq(3).sum()) == 8


def _lopsided_subject(seed: int) -> SimpleNamespace:
    """A volume with no symmetry (random values plus a ramp along every axis); its foreground and label are
    functions of the image, so any transform they do not share with the image breaks the relation."""
    g = torch.Generator().manual_seed(seed)
    d, h, w = 40, 40, 70
    ramp = (torch.arange(d)[:, None, None] / d + torch.arange(h)[None, :, None] / (2 * h)
            + torch.arange(w)[None, None, :] / (3 * w))
    image = torch.rand(2, d, h, w, generator=g) + ramp
    return SimpleNamespace(
        image=image,
        foreground=_foreground_of(image[None])[0],
        label=_label_of(image[None])[0],
        available=torch.ones(2, dtype=torch.bool),
        background=torch.zeros(2),
        subject=SimpleNamespace(subject_id=f"s{seed}"),
    )


def _foreground_of(image: torch.Tensor) -> torch.Tensor:
    return image[:, :1] > 0.9


def _label_of(image: torch.Tensor) -> torch.Tensor:
    return (image[:, :1] > 1.3).long() + 2 * (image[:, 1:2] > 1.6).long()


def test_augmentation_applies_same_transform_to_image_label_and_foreground(cfg):
    cfg.data.modalities = ("t1n", "t2w")
    subjects = [_lopsided_subject(i) for i in range(2)]
    cfg.data.flip_prob = cfg.data.rot90_prob = 1.0
    augmented = TrainBatches(subjects, cfg, seed=3).batch(0)
    cfg.data.flip_prob = cfg.data.rot90_prob = 0.0
    plain = TrainBatches(subjects, cfg, seed=3).batch(0)
    # the first crop of a step lies at the same place in both (the augmentation draws come after the crop's)
    assert not torch.equal(augmented["image"][0], plain["image"][0])  # the augmentation did something
    for b in (augmented, plain):
        assert torch.equal(b["foreground"], _foreground_of(b["image"]))
        assert torch.equal(b["label"], _label_of(b["image"]))
        assert b["label"].gt(0).any() and (~b["foreground"]).any()  # both relations are tested on both values


def test_demo_petct_loads_and_batches(demo_petct, cfg):
    from p2gmed.data.read import read_dataset

    cfg.data.modalities = ("ct", "pet")
    subjects = read_dataset(demo_petct)
    train, val = split_subjects(subjects, cfg.data, seed=0)
    assert {s.patient_id for s in train}.isdisjoint({s.patient_id for s in val})
    loaded = load_subjects(train, cfg.data, progress=False)
    ct = loaded[0].image[0]
    assert float(ct.min()) >= -1 and float(ct.max()) <= 1 and loaded[0].available.tolist() == [True, True]
    b = TrainBatches(loaded, cfg, seed=0).batch(0)
    assert b["image"].shape == (2, 2, 32, 32, 64) and set(b["label"].unique().tolist()) <= {0, 1}


def test_demo_brain_labels_keep_brats2023_values(demo_brain, cfg):
    from p2gmed.data.read import read_dataset

    item = load_subject(read_dataset(demo_brain)[0], cfg.data)
    assert set(item.label.unique().tolist()) <= {0, 1, 2, 3} and int((item.label == 3).sum()) > 0
    assert item.available.all()


def test_autopet_pretraining_foreground_is_the_body_not_the_air(tmp_path):
    """CT in HU has air at -1000, not 0: the AutoPET preset's foreground (loss and crop box) is the body."""
    from p2gmed.config import load_config

    preset = load_config(Path(CONFIG).parent / "autopet-pretrain.yaml")
    shape = (16, 16, 12)
    ct = np.full(shape, -1000.0, np.float32)
    ct[4:12, 5:11, 3:9] = 40.0  # soft tissue
    pet = np.where(ct > -500, 1.5, 0.02).astype(np.float32)  # scatter: small, non-zero uptake in the air
    images = {"ct": save(tmp_path / "ct.nii.gz", ct, np.eye(4)), "pet": save(tmp_path / "pet.nii.gz", pet, np.eye(4))}
    data_cfg = dataclasses.replace(preset.data, crop_margin=1)
    item = load_subject(Subject("p", "p", images), data_cfg)
    assert tuple(item.image.shape[1:]) == (10, 8, 8)  # the body's box plus the one-voxel margin
    assert int(item.foreground.sum()) == 8 * 6 * 6  # the body, no air


def _in_plane_turn(x: torch.Tensor) -> int | None:
    """Quarter turns r in the (D, H) plane that map the stored orientation onto `x` (D, H, W), for a volume whose
    values grow fastest along D and then along H; None when no rotation does (a reflection in the plane)."""
    for r in range(4):
        y = torch.rot90(x, -r, dims=(0, 1))
        d_step, h_step = float((y[1:] - y[:-1]).mean()), float((y[:, 1:] - y[:, :-1]).mean())
        if d_step > 0 and h_step > 0 and d_step > h_step:
            return r
    return None


def test_pretraining_crops_keep_phis_plane_so_the_rotation_label_is_the_true_rotation(tmp_path, cfg):
    """Eq. 5's label k must be the crop's rotation relative to the stored orientation: during pre-training the
    data-level augmentation may not turn or mirror phi's (D, H) plane (models/rotation.py)."""
    from p2gmed.models.rotation import rotate

    d, h, w = np.meshgrid(np.arange(40), np.arange(36), np.arange(70), indexing="ij")
    coords = (1 + 10000 * d + 100 * h + w).astype(np.float32)
    subject = Subject("c", "c", {"t1n": save(tmp_path / "c" / "t1n.nii.gz", coords, np.eye(4))})
    cfg.data.modalities = ("t1n",)
    cfg.data.flip_prob = cfg.data.rot90_prob = 1.0
    cfg.data.crops_per_subject = 4
    loaded = load_subjects([subject], cfg.data, progress=False)
    pretraining = TrainBatches(loaded, cfg, seed=1, keep_rotation_plane=True)
    labels_checked = 0
    for step in range(3):
        for crop in pretraining.batch(step)["image"]:
            for k in range(4):
                x = rotate(crop[None], torch.tensor([k]))[0, 0]  # phi_k of PretrainTask
                assert _in_plane_turn(x) == k
                labels_checked += 1
    assert labels_checked == 48
    tuning = TrainBatches(loaded, cfg, seed=1)  # tuning keeps the full augmentation (no rotation label there)
    turns = {_in_plane_turn(crop[0]) for step in range(3) for crop in tuning.batch(step)["image"]}
    assert turns - {0}
def test_label_crop_fraction_centres_crops_on_the_lesion(tmp_path, cfg):
    cfg.data.flip_prob = cfg.data.rot90_prob = 0.0
    cfg.data.crops_per_subject = 4
    # a 2 x 2 x 2 lesion in a 96 x 96 x 96 box of tissue: a 32 x 32 x 64 crop drawn otherwise mostly misses it
    subject = brain_subject(tmp_path, shape=(100, 100, 100))
    loaded = load_subjects([subject], cfg.data, progress=False)

    def positive_crops(fraction: float) -> list[bool]:
        cfg.data.label_crop_fraction = fraction
        batches = TrainBatches(loaded, cfg, seed=1)
        return [bool(label.gt(0).any()) for step in range(10) for label in batches.batch(step)["label"]]

    assert all(positive_crops(1.0))
    assert not all(positive_crops(0.0))  # without it some crops miss the lesion: the test can fail


def test_label_crop_fraction_outside_unit_interval_is_rejected():
    with pytest.raises(InputError, match="label_crop_fraction"):
        load_config(CONFIG, ["data.label_crop_fraction=1.5"])


# ---------------------------------------------------------------------------------------------- bias field


def test_bias_field_multiplies_the_signal_above_background_by_one_smooth_field_per_crop():
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.normal(2.0, 1.0, (3, 16, 16, 24)).astype(np.float32))
    foreground = torch.zeros((1, 16, 16, 24), dtype=torch.bool)
    foreground[:, 2:14, 2:14, 3:21] = True
    background = torch.tensor([-1.5, 0.0, -0.5])
    out = bias_field_augment(image, foreground, background, coeff=0.2, seed=7)
    assert torch.equal(out[:, ~foreground[0]], image[:, ~foreground[0]])  # outside the subject: untouched
    gain = (out - background.view(-1, 1, 1, 1)) / (image - background.view(-1, 1, 1, 1))
    inside = gain[:, foreground[0]]
    # one field for every modality (a scanner's bias is the session's), positive, not the identity
    torch.testing.assert_close(inside[0], inside[1], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(inside[0], inside[2], rtol=1e-4, atol=1e-4)
    assert bool((inside > 0).all()) and float(inside.std()) > 1e-3
    # smooth: neighbouring voxels differ far less than the field varies over the crop
    field = gain[0, 2:14, 2:14, 3:21]
    assert float(field.diff(dim=-1).abs().max()) < 0.2 * float(field.max() - field.min()) + 1e-6
    # a pure function of the seed; no coefficient range, no change
    assert torch.equal(out, bias_field_augment(image, foreground, background, coeff=0.2, seed=7))
    assert not torch.equal(out, bias_field_augment(image, foreground, background, coeff=0.2, seed=8))
    torch.testing.assert_close(bias_field_augment(image, foreground, background, coeff=0.0, seed=7), image)


def test_bias_field_reaches_segmentation_batches_only(loaded, cfg):
    cfg.data.flip_prob = cfg.data.rot90_prob = 0.0
    cfg.data.bias_field_prob = 1.0
    plain = TrainBatches(loaded, cfg, seed=3).batch(0)
    pretrain = TrainBatches(loaded, cfg, seed=3, keep_rotation_plane=True).batch(0)
    segmentation = TrainBatches(loaded, cfg, seed=3, bias_field=True).batch(0)
    assert torch.equal(plain["image"], pretrain["image"])
    assert not torch.equal(plain["image"], segmentation["image"])
    # the same crops (labels, foreground): only the intensities inside the subject changed
    assert torch.equal(plain["label"], segmentation["label"])
    assert torch.equal(plain["foreground"], segmentation["foreground"])
    outside = ~segmentation["foreground"].expand_as(segmentation["image"])
    assert torch.equal(plain["image"][outside], segmentation["image"][outside])
    cfg.data.bias_field_prob = 0.0
    assert torch.equal(TrainBatches(loaded, cfg, seed=3, bias_field=True).batch(0)["image"], plain["image"])


@pytest.mark.parametrize("key, value", [("bias_field_prob", 1.5), ("flip_prob", -0.1), ("bias_field_coeff", 2.0)])
def test_augmentation_settings_out_of_range_are_refused(cfg, key, value):
    setattr(cfg.data, key, value)
    with pytest.raises(InputError, match=f"data.{key} must lie in"):
        cfg.validate()
