"""All settings of p2gmed, typed, in one place.

A run's configuration is a tree of dataclasses (`Config`). YAML presets in `configs/` override only the fields
they name (and may `extends:` another preset); `--set section.field=value` overrides single fields on the
command line. Unknown keys and values of the wrong type are an `InputError` naming the key, never ignored.
The resolved configuration is written to every run folder as `config.yaml`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from p2gmed.config_loading import RETIRED_KEYS, from_dict, names_setting, parse_override, preset_settings
from p2gmed.errors import InputError
from p2gmed.modalities import canonical

__all__ = [
    "Config", "DataConfig", "ModelConfig", "LossConfig", "TrainConfig", "TuneConfig", "InferenceConfig",
    "RETIRED_KEYS", "load_config", "names_setting", "parse_override", "replace_fields", "config_from_dict",
    "config_from_checkpoint",
    "config_to_dict", "dump_config",
]


#: the largest float32: a learning rate above it cannot even be applied to float32 parameters
FLOAT32_MAX = 3.4028234663852886e38


@dataclass
class DataConfig:
    layout: str = "auto"
    """Dataset layout: auto, brats23, brats21, brats18, autopet, nnunet, nac, decathlon."""
    modalities: tuple[str, ...] = ("t1n", "t1c", "t2w", "t2f")
    """Modality names the model reads and writes, in channel order (canonical names, see modalities.py)."""
    channels: str = ""
    """nnU-Net data sets only: channel index -> modality as "0=ct,1=pet", instead of dataset.json's names (which
    AutoPET-II gives as CT for both channels); empty reads dataset.json (`--channels`)."""
    roi_size: tuple[int, int, int] = (96, 96, 96)
    """Training sub-volume (D, H, W); each divisible by 32, and D == H (rotations about the last axis)."""
    spacing: tuple[float, float, float] | None = None
    """Resample every subject to this voxel spacing in mm; None keeps the native grid."""
    mri_norm: Literal["nonzero", "volume"] = "nonzero"
    """MRI z-score over the non-zero (brain) voxels, or over the whole volume as the authors' code does."""
    ct_window: tuple[float, float] = (-1000.0, 1000.0)
    """CT HU range mapped linearly to [-1, 1] (clipped outside)."""
    pet_scale: float = 10.0
    """PET SUV divided by this (no clipping), so typical uptake lies in [0, 1] and lesions above."""
    foreground: Literal["auto", "nonzero", "threshold"] = "auto"
    """Foreground mask of the decomposition loss (union over the available modalities). auto: MRI non-zero
    voxels, CT the body (HU > `body_hu`, enclosed air such as lungs filled), PET only when a subject has neither
    (SUV > 0.05); nonzero: raw voxels != 0; threshold: the authors' rule, normalised value >
    `foreground_threshold` (-0.35 for z-scored BraTS)."""
    body_hu: float = -500.0
    foreground_threshold: float = -0.35
    crop_margin: int = 8
    """Voxels kept around the foreground bounding box when a loaded subject is cropped to it."""
    crops_per_subject: int = 2
    """Sub-volumes drawn per subject and step; > 1 gives the contrastive loss negatives at batch size 1."""
    label_crop_fraction: float = 0.0
    """Segmentation: fraction of crops centred on a random labelled (lesion) voxel, as the positive crops of
    MONAI's RandCropByPosNegLabeld; the others are centred on the foreground or drawn uniformly (half each)."""
    flip_prob: float = 0.2
    rot90_prob: float = 0.2
    bias_field_prob: float = 0.0
    """Segmentation tuning only: probability that a crop's intensities above the background are multiplied by
    a smooth random field exp(f), one polynomial f per crop shared by its modalities (MONAI's RandBiasField,
    degree 3). Teaches the network that a scanner's bias brightening tissue in every sequence is not a lesion
    (docs/results.md). Pre-training and synthesis never get it: their targets are the images themselves."""
    bias_field_coeff: float = 0.2
    """Largest absolute coefficient of the field's Legendre polynomials (uniform in [-c, c])."""
    cache_rate: float = 1.0
    """Fraction of subjects kept pre-processed in memory (MONAI CacheDataset)."""
    cache_dir: str | None = None
    """If set, pre-processed subjects are cached on disk here instead (MONAI PersistentDataset)."""
    num_workers: int = 0
    """Worker processes that load subjects into the cache and, during training, build the batches of the coming
    steps (crops, flips, rot90); 0 builds them in the training process. Batches are the same with any number."""
    val_fraction: float = 0.2
    """Subjects held out for validation (split by patient, deterministic in `seed`)."""
    split_file: str | None = None
    """JSON with "train"/"val"/"test" lists of subject ids; overrides val_fraction."""


@dataclass
class ModelConfig:
    feature_size: int = 48
    """SwinUNETR feature size F (multiple of 12); the bottleneck has 16F channels."""
    depths: tuple[int, int, int, int] = (2, 2, 2, 2)
    num_heads: tuple[int, int, int, int] = (3, 6, 12, 24)
    window_size: int = 7
    drop_path_rate: float = 0.0
    use_prior: bool = True
    """Learnable prior O with attention retrieval; False removes O, the attention and the fusion conv."""
    prior_heads: int = 3
    """Attention heads for the retrieval (reduced to the largest divisor of the bottleneck voxel count)."""
    fusion: Literal["paper", "code"] = "paper"
    """paper: X' = conv(z ⊕ z'); code: two 3x3x3 convs on z' then conv(z ⊕ z' ⊕ z) as the authors' release."""
    head_placement: Literal["paper", "code"] = "paper"
    """Rotation and projection heads on the encoder bottleneck z (paper) or on the fused X' (authors' code)."""
    projection_dim: int = 512
    activation_checkpointing: bool = False
    subset_skips: Literal["mean", "attention"] = "attention"
    """How several modalities' skip features are combined before one decode (docs/method.md §4): a learned
    per-voxel softmax weighting over the subset (zero-initialised, so it starts as the mean), or the mean."""
    input_skip: Literal["mean", "channels"] = "channels"
    """The decoder's full-resolution input skip for a subset: the modalities in their own channels with the
    missing ones filled by the subset's mean image, or that mean in every channel (what averaging the repeated
    single-modality inputs gives); both are the modality itself for one modality."""


@dataclass
class LossConfig:
    contrast: float = 1.0
    """Weight of the contrastive loss (Eq. 2); 0 removes the term and its computation."""
    equivariance: float = 1.0
    """Weight of the rotation-prediction loss (Eq. 5)."""
    invariance: float = 1.0
    """Weight of the invariance loss (Eq. 3), in pre-training and tuning (Eq. 8)."""
    decomposition: float = 1.0
    """Weight of the decomposition loss (Eq. 6)."""
    rotate_inputs: bool = True
    """Apply phi (a random quarter turn, models/rotation.py) to each pre-training input and phi^-1 to its decoding
    (Algorithm 1). false feeds the crops as stored: the ablations without equivariance set it, since with phi
    the decomposition alone is an equivariance constraint (Sec. 3.2). Needs true when equivariance > 0."""
    temperature: float = 0.5
    """NT-Xent temperature (Tang et al. 2022 use 0.5; the authors' code 0.1 on unnormalised products)."""
    gather_negatives: bool = True
    """Gather contrastive embeddings across ranks (DDP) for more negatives."""
    background_weight: float = 0.0
    """Weight of background voxels in the decomposition loss; 0 excludes them (paper), the code uses ~0.1."""
    anchor: Literal["mean", "halving"] = "mean"
    """Invariance anchor: running mean of the modalities seen (Eq. 3) or (anchor + X')/2 (Algorithm 1, code)."""
    # tuning
    mse: float = 1.0
    """Synthesis task loss weight (MSE, or L1 with synthesis_loss: l1)."""
    synthesis_loss: Literal["mse", "l1"] = "mse"
    ssim: float = 0.0
    """Synthesis tuning: weight of 1 - SSIM per decoded modality (not in the paper; 0 removes it, docs/method.md)."""
    dice: float = 1.0
    ce: float = 1.0
    """Cross-entropy weight (weighted as `ce_weighting` says)."""
    ce_weighting: Literal["mmformer", "uniform"] = "mmformer"
    """mmformer: each class weighted by 1 - its voxel fraction in the sample (mmFormer/M2FTrans, the paper's
    App. B.2.2), which nearly ignores background; uniform: plain cross-entropy (nnU-Net's Dice + CE), fewer
    false-positive voxels at the tumour's edge (docs/method.md §5.12)."""


@dataclass
class TrainConfig:
    max_steps: int = 100000
    """Steps of the run; one step = one batch of subjects through all their modalities (`--max-steps`)."""
    epochs: int = 0
    """If > 0, the run takes epochs x ceil(training subjects / (batch_size x GPUs)) steps instead of max_steps,
    as the paper counts."""
    batch_size: int = 1
    """Subjects per step and per GPU."""
    lr: float = 2e-4
    weight_decay: float = 1e-5
    schedule: Literal["constant", "warmup_cosine"] = "constant"
    warmup_steps: int = 0
    grad_clip: float = 0.0
    """Clip the global gradient norm to this value; 0 disables."""
    update: Literal["per_step", "per_modality"] = "per_step"
    """per_step: accumulate over the modalities, one update (paper); per_modality: an update after each
    modality without clearing gradients (authors' code)."""
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"
    """Mixed precision: bf16 or fp16 autocast (fp16 with a GradScaler), on CUDA and CPU; auto: bf16 where it is
    fast (a GPU with bf16, a CPU with AVX512_BF16 or AMX), fp32 elsewhere (on other CPUs bf16 is slower, 20-40x
    without AVX-512: docs/performance.md)."""
    seed: int = 20
    log_every: int = 1
    checkpoint_every: int = 50
    val_every: int = 0
    """Validate every N steps (0: only at the end); keeps best.pt by the task's metric."""
    val_subjects: int = 0
    """Validate on at most this many held-out subjects (0: all)."""
    early_stopping: int = 0
    """Stop after this many validations without improvement (0: never)."""
    device: str = "auto"
    """auto (CUDA if available), cpu, cuda, cuda:N."""


@dataclass
class TuneConfig:
    task: Literal["synthesis", "segmentation"] = "synthesis"
    train_decode: Literal["subset_mean", "per_modality"] = "subset_mean"
    """P2GNet tuning: decode the mean of the subset's X' once, exactly as prediction does (subset_mean), or decode
    every modality's X' and apply the task loss to each, as Algorithm 2 writes it (per_modality)."""
    sources: tuple[str, ...] = ()
    """Modalities the tuning subsets are drawn from (empty: every modality). Table 6 (App. B.4): [pet_nac]."""
    targets: tuple[str, ...] = ()
    """Synthesis: the modalities the task loss and the validation compare (empty: every modality, the sources
    included). Table 6: [ct, pet], i.e. NAC-PET -> CT and NAC-PET -> AC-PET only."""
    init: Literal["full", "encoder", "scratch", "swinvit"] = "full"
    architecture: Literal["p2g", "swinunetr", "unetr"] = "p2g"
    allow_mismatch: bool = False
    """Load weights even when keys or shapes disagree (the report is still printed)."""


@dataclass
class InferenceConfig:
    overlap: float = 0.5
    sw_batch_size: int = 2
    mode: Literal["gaussian", "constant"] = "gaussian"
    lesions: Literal["all", "largest", "core"] = "all"
    """Segmentation post-processing (inference/postprocess.py): keep every lesion (all), only the largest
    connected lesion (largest), or the one holding the most predicted tumour core (core; BraTS labels only).
    The filters assume one lesion per subject: true of the built-in brains, not of metastases or AutoPET."""
    stitch_device: Literal["auto", "cpu", "same"] = "auto"
    """Where sliding-window outputs are accumulated; cpu bounds GPU memory for whole-body volumes."""


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)

    @property
    def bottleneck_size(self) -> tuple[int, int, int]:
        """Spatial size of the encoder bottleneck (and of O) for the configured ROI: ROI / 32."""
        return tuple(s // 32 for s in self.data.roi_size)  # type: ignore[return-value]

    @property
    def bottleneck_channels(self) -> int:
        return 16 * self.model.feature_size

    def validate(self) -> Config:
        """Check cross-field constraints; raise InputError with a sentence naming the field."""
        self.data.modalities = tuple(canonical(m) for m in self.data.modalities)
        if len(set(self.data.modalities)) != len(self.data.modalities):
            raise InputError(f"data.modalities has duplicates: {list(self.data.modalities)}")
        if any(s % 32 for s in self.data.roi_size):
            raise InputError(f"data.roi_size must be divisible by 32 on every axis, got {self.data.roi_size}")
        if self.data.roi_size == (32, 32, 32):
            raise InputError(
                "data.roi_size (32, 32, 32) gives a 1-voxel bottleneck, on which SwinUNETR's instance norm fails; "
                "use e.g. [32, 32, 64]"
            )
        if self.data.roi_size[0] != self.data.roi_size[1]:
            raise InputError(
                f"data.roi_size must have equal first two axes (rotations turn them into each other), "
                f"got {self.data.roi_size}"
            )
        if self.model.feature_size % 12:
            raise InputError(f"model.feature_size must be a multiple of 12, got {self.model.feature_size}")
        if not (math.isfinite(self.train.lr) and 0 < self.train.lr <= FLOAT32_MAX):
            raise InputError(
                f"train.lr must be a positive finite number (at most {FLOAT32_MAX:.3g}), got {self.train.lr}"
            )
        for name in ("label_crop_fraction", "flip_prob", "rot90_prob", "bias_field_prob"):
            if not 0.0 <= getattr(self.data, name) <= 1.0:
                raise InputError(f"data.{name} must lie in [0, 1], got {getattr(self.data, name)}")
        if not 0.0 <= self.data.bias_field_coeff <= 1.0:
            raise InputError(f"data.bias_field_coeff must lie in [0, 1], got {self.data.bias_field_coeff}")
        if self.train.batch_size < 1 or self.data.crops_per_subject < 1:
            raise InputError("train.batch_size and data.crops_per_subject must be at least 1")
        for name in ("contrast", "equivariance", "invariance", "decomposition", "mse", "ssim", "dice", "ce"):
            if getattr(self.loss, name) < 0:
                raise InputError(f"loss.{name} must be >= 0, got {getattr(self.loss, name)}")
        for name in ("sources", "targets"):
            names = tuple(canonical(m) for m in getattr(self.tune, name))
            unknown = [m for m in names if m not in self.data.modalities]
            if unknown:
                raise InputError(
                    f"tune.{name} names {unknown}, which data.modalities {list(self.data.modalities)} lacks"
                )
            setattr(self.tune, name, names)
        if self.loss.equivariance > 0 and not self.loss.rotate_inputs:
            raise InputError("loss.equivariance > 0 predicts the rotation phi: it needs loss.rotate_inputs: true")
        return self


# --------------------------------------------------------------------------------------------------
# Loading and writing (the strict field-by-field conversion is in config_loading.py)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults <- YAML preset (with `extends`) <- `--set` overrides, validated."""
    return config_from_dict(preset_settings(path, overrides))


def replace_fields(cfg: Config, **sections: dict[str, Any]) -> Config:
    """A new `Config` with typed fields replaced, e.g. `replace_fields(cfg, train={"device": "cpu"})`; `cfg`
    itself is left as it is. This is how command-line flags become settings."""
    for name, fields in sections.items():
        known = {f.name for f in dataclasses.fields(getattr(cfg, name))}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"{name} has no fields {unknown}")
    return dataclasses.replace(
        cfg, **{name: dataclasses.replace(getattr(cfg, name), **fields) for name, fields in sections.items()}
    )


#: keys that were renamed: old (section, key) -> new key and how an old value maps to a new one
RENAMED = {
    ("inference", "keep_largest_component"): ("lesions", lambda keep: "largest" if keep else "all"),
}


def _renamed(data: dict) -> dict:
    """`data` with renamed keys of older presets and checkpoints written under their new names."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for (section, old), (new, convert) in RENAMED.items():
        values = data.get(section)
        if isinstance(values, dict) and old in values:
            value = values.pop(old)
            if new in values:
                raise InputError(f"{section}.{old} is the old name of {section}.{new}; set only {section}.{new}")
            values[new] = convert(value)
    return data


def config_from_dict(data: dict) -> Config:
    return from_dict(Config, _renamed(data)).validate()


#: what a checkpoint's stored configuration meant for a key it lacks (it was written before the key existed)
CHECKPOINT_DEFAULTS = {("model", "subset_skips"): "mean", ("model", "input_skip"): "mean"}


def config_from_checkpoint(data: dict) -> Config:
    """The configuration stored in a checkpoint; keys added since it was written keep their behaviour then."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for (section, key), value in CHECKPOINT_DEFAULTS.items():
        if isinstance(data.get(section), dict):
            data[section].setdefault(key, value)
    return config_from_dict(data)


def config_to_dict(cfg: Config) -> dict:
    def convert(obj: Any) -> Any:
        if isinstance(obj, tuple):
            return [convert(v) for v in obj]
        if isinstance(obj, dict):
            return {k: convert(v) for k, v in obj.items()}
        return obj

    return convert(dataclasses.asdict(cfg))


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
