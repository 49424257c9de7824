"""Downstream tuning, the paper's Algorithm 2 (Sec. 3.3, Eq. 8): L_down = L_ori + L_inv.

One model serves every subset of modalities. At each step one non-empty subset S of a subject's available
modalities (those of `tune.sources`, default all) is drawn uniformly (15 subsets for 4 modalities; the crops of a
subject share it). For P2GNet:

    for i in S (in a random order):                                   [Algorithm 2, inner loop]
        z_i, skips_i = E(X_i repeated over the M channels)
        X'_i = conv(z_i ⊕ Attn(z_i, O, O))
        L_inv(X'_i, anchor) from the 2nd modality on; anchor <- update(X'_i)     [Eq. 3, running anchor]
    subset_mean (default):  Y' = D(mean_S X'_i, mean_S skips_i); L_ori(Y', Y)       -> one loss dict
    per_modality:           Y'_i = D(X'_i, skips_i); L_ori(Y'_i, Y) for every i     -> one loss dict per i
                            (Algorithm 2 as written)
    L_down = w_o L_ori + w_i L_inv                                                    [Eq. 8]

`subset_mean` trains exactly what `P2GNet.forward_subset` computes at prediction time (and equals Algorithm 2
when |S| = 1); `per_modality` keeps one modality's graph in memory at a time. Baselines (stock SwinUNETR /
UNETR) read the stacked modalities with the channels outside S zeroed and have no invariance term.

L_ori: synthesis -- MSE (or L1) over every available modality of the subject (the sources included; only
`tune.targets` when set) on foreground voxels (the paper excludes the background for generation, App. B.2.1); segmentation -- soft Dice +
weighted cross-entropy (mmFormer, losses/segmentation.py).
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from p2gmed.config import Config
from p2gmed.data.layouts import labels_to_classes
from p2gmed.errors import DataError
from p2gmed.losses.decomposition import masked_mean_error
from p2gmed.losses.invariance import InvarianceLoss, RunningAnchor
from p2gmed.losses.objective import weighted_total
from p2gmed.losses.segmentation import mmformer_dice, weighted_cross_entropy
from p2gmed.losses.structural import StructuralSimilarityLoss
from p2gmed.models.baselines import mask_missing
from p2gmed.models.network import stack_modalities


def modality_mask(cfg: Config, names: tuple[str, ...]) -> Tensor:
    """(M,) bool over cfg.data.modalities: True for `names`; every modality when `names` is empty."""
    order = tuple(cfg.data.modalities)
    return torch.tensor([not names or m in names for m in order], dtype=torch.bool)


def draw_subsets(available: Tensor, subjects: list[str], generator: torch.Generator) -> Tensor:
    """One uniformly drawn non-empty subset of each subject's available modalities.

    Args:
        available: (N, M) bool, per crop.
        subjects: N subject ids; crops of one subject (consecutive) get the same subset.
        generator: CPU generator.

    Returns:
        (N, M) bool, a non-empty subset of `available` per crop (empty only where nothing is available).
    """
    chosen = torch.zeros_like(available, dtype=torch.bool)
    previous: tuple[str, Tensor] | None = None
    for row in range(available.shape[0]):
        if previous is not None and previous[0] == subjects[row] and torch.equal(previous[1], available[row]):
            chosen[row] = chosen[row - 1]
            continue
        present = available[row].nonzero().flatten()
        if present.numel():
            # a uniform integer in [1, 2^k) is a uniform non-empty subset of the k present modalities
            code = int(torch.randint(1, 2 ** present.numel(), (1,), generator=generator))
            bits = torch.tensor([(code >> j) & 1 for j in range(present.numel())], dtype=torch.bool)
            chosen[row, present[bits]] = True
        previous = (subjects[row], available[row])
    return chosen


class FinetuneTask(abc.ABC):
    """Algorithm 2 for any model p2gmed builds; subclasses compute the task loss L_ori.

    Args:
        model: P2GNet or a MonaiBaseline.
        cfg: run configuration (loss weights, tune.train_decode, loss.anchor).
        architecture: "p2g", "swinunetr" or "unetr".
    """

    def __init__(self, model: nn.Module, cfg: Config, architecture: str) -> None:
        self.model, self.cfg, self.architecture = model, cfg, architecture
        # a baseline reads the stacked modalities: it has no per-modality X' to make invariant
        self.sources = modality_mask(cfg, cfg.tune.sources)
        invariance = cfg.loss.invariance if architecture == "p2g" else 0.0
        weights = {**self.task_weights(cfg), "invariance": invariance}
        self.weights = {name: weight for name, weight in weights.items() if weight > 0}
        self.terms = (*self.weights, "loss")
        self.invariance = InvarianceLoss()

    @abc.abstractmethod
    def task_weights(self, cfg: Config) -> dict[str, float]:
        """Task-loss term name -> weight (the terms of L_ori in Eq. 8)."""

    @abc.abstractmethod
    def task_terms(self, prediction: Tensor, batch: Mapping[str, Any], rows: Tensor) -> dict[str, Tensor]:
        """The active unweighted L_ori terms of the prediction (R, out, D, H, W) for the crops `rows` (R,)."""

    def run_step(self, batch: Mapping[str, Any], generator: torch.Generator) -> Iterator[dict[str, Tensor]]:
        """The losses of one step (see the module docstring).

        Args:
            batch: image (N, M, D, H, W), available (N, M) bool, foreground (N, 1, D, H, W) bool, subject
                (N ids), label (N, 1, D, H, W) for segmentation.
            generator: drives the subset draw and the modality order.

        Yields:
            The active unweighted terms and their weighted sum `loss`: once per step, or once per modality of
            the subset with `tune.train_decode: per_modality`.
        """
        device = next(self.model.parameters()).device
        batch = {
            **batch,
            "image": batch["image"].to(device).float(),
            "foreground": batch["foreground"].to(device).bool(),
        }
        available = torch.as_tensor(batch["available"], dtype=torch.bool).cpu()
        sources = available & self.sources
        subset = draw_subsets(sources, list(batch.get("subject", [""] * len(available))), generator)
        rows = subset.any(1).nonzero().flatten()
        if rows.numel() == 0:
            raise DataError(
                f"no source modality ({', '.join(self.cfg.tune.sources) or 'any'}) is available in any crop of "
                f"{', '.join(map(str, batch.get('subject', [])))}"
            )
        if self.architecture != "p2g":
            prediction = self.model(mask_missing(batch["image"][rows.to(device)], subset[rows]))
            losses = iter([self._total(self.task_terms(prediction, batch, rows))])
        elif self.cfg.tune.train_decode == "per_modality":
            losses = self._decode_each_modality(batch, subset, generator)
        else:
            losses = iter([self._decode_subset_mean(batch, subset, generator)])
        # nothing to learn from (e.g. only invariance on and a one-modality subset): no dict, no backward
        yield from (terms for terms in losses if len(terms) > 1)

    def _total(self, terms: dict[str, Tensor]) -> dict[str, Tensor]:
        return {**terms, "loss": weighted_total(terms, self.weights)}

    def _encode(
        self, image: Tensor, modality: int, rows: Tensor, anchor: RunningAnchor
    ) -> tuple[Tensor, list[Tensor], Tensor | None]:
        """X'_i and the skips of modality `modality` on the crops `rows`, and its invariance term against the
        anchor (None for the crops' first modality or when the term is off); the anchor is updated."""
        m = image.shape[1]
        z, skips = self.model.encode(
            image[rows.to(image.device), modality : modality + 1].expand(-1, m, -1, -1, -1)
        )
        fused = self.model.fuse(z)
        invariance = None
        if "invariance" in self.weights:
            seen = anchor.seen(rows)
            if bool(seen.any()):
                invariance = self.invariance(fused[seen.to(fused.device)], anchor.get(rows[seen]))
            anchor.update(fused, rows)
        return fused, skips, invariance

    def _decode_each_modality(
        self, batch: Mapping[str, Any], subset: Tensor, generator: torch.Generator
    ) -> Iterator[dict[str, Tensor]]:
        """Algorithm 2 as written: Y'_i = D(X'_i, skips_i) and L_ori(Y'_i, Y) for every i of the subset."""
        anchor = RunningAnchor(subset.shape[0], self.cfg.loss.anchor)
        for modality in torch.randperm(subset.shape[1], generator=generator).tolist():
            rows = subset[:, modality].nonzero().flatten()
            if rows.numel():
                yield self._one_modality(batch, modality, rows, anchor)

    def _one_modality(
        self, batch: Mapping[str, Any], modality: int, rows: Tensor, anchor: RunningAnchor
    ) -> dict[str, Tensor]:
        fused, skips, invariance = self._encode(batch["image"], modality, rows, anchor)
        terms = self.task_terms(self.model.decode(fused, skips), batch, rows)
        if invariance is not None:
            terms["invariance"] = invariance
        return self._total(terms)

    def _decode_subset_mean(
        self, batch: Mapping[str, Any], subset: Tensor, generator: torch.Generator
    ) -> dict[str, Tensor]:
        """Y' = D(mean_S X'_i, mean_S skips_i) as `P2GNet.forward_subset` predicts; L_ori(Y', Y) + L_inv."""
        image = batch["image"]
        n = subset.shape[0]
        anchor = RunningAnchor(n, self.cfg.loss.anchor)
        fused_sum: Tensor | None = None
        stages: list[list[Tensor | None]] = [[None] * subset.shape[1] for _ in range(4)]
        invariance: list[Tensor] = []
        for modality in torch.randperm(subset.shape[1], generator=generator).tolist():
            rows = subset[:, modality].nonzero().flatten()
            if rows.numel() == 0:
                continue
            fused, skips, term = self._encode(image, modality, rows, anchor)
            if term is not None:
                invariance.append(term)
            # differentiable per-crop sums / stacks over the subset (index_add is out of place: the graph is kept)
            rows_dev = rows.to(image.device)
            fused_sum = fused_sum if fused_sum is not None else fused.new_zeros((n, *fused.shape[1:]))
            fused_sum = fused_sum.index_add(0, rows_dev, fused)
            for stage, feature in zip(stages, skips[1:], strict=True):
                stage[modality] = feature.new_zeros((n, *feature.shape[1:])).index_add(0, rows_dev, feature)
        assert fused_sum is not None
        rows = subset.any(1).nonzero().flatten()
        rows_dev = rows.to(image.device)
        count = subset.sum(1).clamp(min=1).to(image.device, torch.float32)
        mask = subset[rows].to(image.device)
        fused = (fused_sum / count.view(-1, *([1] * (fused_sum.ndim - 1))).to(fused_sum.dtype))[rows_dev]
        skips = self.model.subset_fusion(image[rows_dev], mask, [stack_modalities(s)[rows_dev] for s in stages])
        terms = self.task_terms(self.model.decode(fused, skips), batch, rows)
        if invariance:
            terms["invariance"] = torch.stack(invariance).sum()
        return self._total(terms)


class SynthesisTask(FinetuneTask):
    """Any-subset synthesis: every modality from whichever subset was drawn (MSE or L1 [+ 1 - SSIM] + invariance)."""

    def __init__(self, model: nn.Module, cfg: Config, architecture: str) -> None:
        super().__init__(model, cfg, architecture)
        self.structural = StructuralSimilarityLoss()

    def task_weights(self, cfg: Config) -> dict[str, float]:
        return {cfg.loss.synthesis_loss: cfg.loss.mse, "ssim": cfg.loss.ssim}

    def task_terms(self, prediction: Tensor, batch: Mapping[str, Any], rows: Tensor) -> dict[str, Tensor]:
        rows_dev = rows.to(prediction.device)
        target, foreground = batch["image"][rows_dev], batch["foreground"][rows_dev]
        targets = modality_mask(self.cfg, self.cfg.tune.targets)
        available = torch.as_tensor(batch["available"], dtype=torch.bool).cpu()[rows] & targets
        terms: dict[str, Tensor] = {}
        name = self.cfg.loss.synthesis_loss
        if name in self.weights:
            terms[name] = masked_mean_error(prediction, target, available, foreground, kind=name)
        if "ssim" in self.weights:
            terms["ssim"] = self.structural(prediction, target, available)
        return terms


class SegmentationTask(FinetuneTask):
    """Missing-modality segmentation: Dice + weighted CE (mmFormer) + invariance.

    Args:
        labels: label convention of the data ("brats2023", "brats2018", "autopet"); labels become classes.
    """

    def __init__(self, model: nn.Module, cfg: Config, architecture: str, labels: str) -> None:
        super().__init__(model, cfg, architecture)
        self.labels = labels
        self.dice = mmformer_dice()

    def task_weights(self, cfg: Config) -> dict[str, float]:
        return {"dice": cfg.loss.dice, "ce": cfg.loss.ce}

    def task_terms(self, prediction: Tensor, batch: Mapping[str, Any], rows: Tensor) -> dict[str, Tensor]:
        if batch.get("label") is None:
            subjects = ", ".join(map(str, batch.get("subject", [])))
            raise DataError(f"segmentation needs labels; {subjects} has none")
        label = batch["label"][rows.to(batch["label"].device)]
        target = labels_to_classes(label, self.labels).to(prediction.device)
        terms: dict[str, Tensor] = {}
        if "dice" in self.weights:
            terms["dice"] = self.dice(prediction, target)
        if "ce" in self.weights:
            terms["ce"] = weighted_cross_entropy(prediction, target, self.cfg.loss.ce_weighting)
        return terms
