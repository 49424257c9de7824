"""One pre-training step: the paper's Algorithm 1 (Appendix B.1) as a task the engine drives.

For a batch of N crops (see docs/design.md, batch contract) and each modality i, in an order shuffled by the
step's generator (Algorithm 1 line numbers in brackets, docs/method.md maps them in full):

    phi ~ Phi, x = phi(X_h^i repeated over M channels)                      [X_h^i ~ X, phi^i ~ Phi]
    x+, x- = Augment(x)                                                      [Augment(phi^i(X_h^i))]
    z, skips = E(x); p+, p- = proj(E(x+)), proj(E(x-))                       [E(.) three times]
    L_contrast(p+, p-)                                                        [Eq. 2]
    L_equ(F(z), phi)                                                          [Eq. 5]
    X'_i = conv(z ⊕ Attn(z, O, O))                                            [Sec. 3.1]
    L_inv(X'_i, anchor) from the 2nd modality on; anchor <- update(X'_i)      [Eq. 3]
    L_decom(phi^{-1}(D(X'_i, skips)), all available modalities)               [Eq. 6]
    yield the terms and L_pre = sum_t w_t L_t                                 [Eq. 7]

Every modality's graph is freed by its own backward, so memory does not grow with M. A zero weight means the
term is not computed at all: contrast 0 skips both augmented views, equivariance 0 skips the rotation head
(the input is still rotated unless `loss.rotate_inputs` is false: phi also makes the decomposition of Eq. 6 an
equivariance constraint), invariance 0 skips the anchor, decomposition 0 skips the decoder.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

from p2gmed.config import Config
from p2gmed.errors import DataError, InputError
from p2gmed.losses.contrastive import ContrastiveLoss
from p2gmed.losses.decomposition import DecompositionLoss
from p2gmed.losses.equivariance import RotationLoss
from p2gmed.losses.invariance import InvarianceLoss, RunningAnchor
from p2gmed.losses.objective import PRETRAIN_TERMS, weighted_total
from p2gmed.models.network import P2GNet
from p2gmed.models.rotation import rotate, sample_rotations, unrotate
from p2gmed.train import distributed


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    """Uniform integer in [low, high) (numpy's `randint` convention, as Tang's code)."""
    return int(torch.randint(low, max(high, low + 1), (1,), generator=generator))


def _drop_cuboids(
    x: Tensor,
    generator: torch.Generator,
    source: Tensor | None = None,
    *,
    max_drop: float = 0.3,
    max_block: float = 0.25,
    tolerance: float = 0.05,
) -> Tensor:
    """Tang et al.'s `patch_rand_drop` on one sample (C, D, H, W), in place.

    Fills random cuboids (each side between `tolerance` and `max_block` of the crop) until a fraction
    U(0, max_drop) of the voxels is covered, with Gaussian noise min-max scaled to [0, 1], or with the same
    cuboids of `source` when given.
    """
    channels, *size = x.shape
    target = float(torch.rand((), generator=generator)) * max_drop * x[0].numel()
    longest = [max(int(s * max_block), 1) for s in size]
    shortest = [max(int(s * tolerance), 1) for s in size]
    covered = 0
    while covered < target:
        start = [_randint(0, s - t, generator) for s, t in zip(size, shortest)]
        stop = [min(st + _randint(t, m, generator), s) for st, t, m, s in zip(start, shortest, longest, size)]
        box = (slice(None), *(slice(a, b) for a, b in zip(start, stop)))
        if source is None:
            noise = torch.randn((channels, *(b - a for a, b in zip(start, stop))), generator=generator)
            noise = (noise - noise.min()) / (noise.max() - noise.min()).clamp_min(1e-12)
            x[box] = noise.to(device=x.device, dtype=x.dtype)
        else:
            x[box] = source[box]
        covered += int(torch.tensor([b - a for a, b in zip(start, stop)]).prod())
    return x


def cuboid_noise_augment(x: Tensor, generator: torch.Generator) -> Tensor:
    """An augmented view, as Tang et al.'s `aug_rand` (MONAI SwinUNETR Pretrain, also the authors' code).

    Each sample gets random cuboids of noise; then, if a different sample of the batch is drawn, cuboids
    copied from it (inpainting-style mixing).

    Args:
        x: (B, C, D, H, W) (not modified).
        generator: CPU generator that drives every random choice.

    Returns:
        (B, C, D, H, W), detached from `x`.
    """
    out = x.detach().clone()
    for i in range(out.shape[0]):
        _drop_cuboids(out[i], generator)
        other = _randint(0, out.shape[0], generator)
        if other != i:
            _drop_cuboids(out[i], generator, out[other])
    return out


class PretrainTask:
    """Personalized-invariant pre-training (Algorithm 1) of a `P2GNet`.

    Args:
        model: the network (on any device; batches are moved to it).
        cfg: the run configuration (loss weights and options; `train.batch_size`, `data.crops_per_subject`).

    Raises:
        InputError: the contrastive term is on but a step has fewer than 2 sub-volumes.
    """

    def __init__(self, model: P2GNet, cfg: Config) -> None:
        w = cfg.loss
        if w.contrast > 0 and cfg.train.batch_size * cfg.data.crops_per_subject < 2:
            raise InputError(
                "loss.contrast > 0 needs at least 2 sub-volumes per step for negatives: set "
                "data.crops_per_subject >= 2 (or train.batch_size >= 2), or loss.contrast: 0"
            )
        self.model, self.cfg = model, cfg
        self.weights = {name: getattr(w, name) for name in PRETRAIN_TERMS if getattr(w, name) > 0}
        self.terms = (*self.weights, "loss")
        self.contrast = ContrastiveLoss(w.temperature)
        self.equivariance = RotationLoss()
        self.invariance = InvarianceLoss()
        self.decomposition = DecompositionLoss(w.background_weight)

    def run_step(self, batch: Mapping[str, Any], generator: torch.Generator) -> Iterator[dict[str, Tensor]]:
        """The losses of one step, one dict per modality, in an order drawn from `generator`.

        Args:
            batch: `image` (N, M, D, H, W) float, `available` (N, M) bool, `foreground` (N, 1, D, H, W) bool,
                `subject` list of N ids (used in error messages).
            generator: CPU generator for the modality order, rotations and augmentations.

        Yields:
            Per modality that some crop has: every active unweighted term computed for it (`contrast`,
            `equivariance`, `invariance` from the second modality of a crop on, `decomposition`) and their
            weighted sum `loss`. A modality with nothing to compute (invariance alone, first modality) yields
            nothing.

        Raises:
            DataError: no crop of the batch has any modality.
            ValueError: inconsistent batch shapes.
        """
        device = next(self.model.parameters()).device
        image = torch.as_tensor(batch["image"]).to(device).float()
        available = torch.as_tensor(batch["available"], dtype=torch.bool).cpu()
        foreground = torch.as_tensor(batch["foreground"]).to(device).bool()
        n, m = available.shape
        if image.ndim != 5 or image.shape[:2] != (n, m) or foreground.shape != (n, 1, *image.shape[2:]):
            raise ValueError(
                f"batch shapes disagree: image {tuple(image.shape)}, available {tuple(available.shape)}, "
                f"foreground {tuple(foreground.shape)}"
            )
        subjects = ", ".join(map(str, batch.get("subject", []))) or "this batch"
        if not bool(available.any()):
            raise DataError(f"no modality is available in any crop of {subjects}")
        gather = "contrast" in self.weights and self._gather_negatives(available, device)
        anchor = RunningAnchor(n, self.cfg.loss.anchor)
        for modality in torch.randperm(m, generator=generator).tolist():
            rows = available[:, modality].nonzero().flatten()
            if rows.numel() == 0:
                continue  # no crop has this modality
            terms = self._modality_terms(
                image, available, foreground, modality, rows, anchor, generator, gather
            )
            if terms:
                yield {**terms, "loss": weighted_total(terms, self.weights)}

    def _gather_negatives(self, available: Tensor, device: torch.device) -> bool:
        """Whether this step's contrastive embeddings are gathered over ranks.

        Gathering is a collective: every rank must call it equally often with equally many rows. That holds
        when every crop on every rank has every modality; otherwise (one all_reduce decides, on all ranks
        alike) this step uses local negatives only, rather than risk a deadlock.
        """
        if not (self.cfg.loss.gather_negatives and distributed.is_distributed()):
            return False
        complete = torch.tensor([int(bool(available.all()))], device=device)
        torch.distributed.all_reduce(complete, op=torch.distributed.ReduceOp.MIN)
        return bool(complete.item())

    def _modality_terms(
        self,
        image: Tensor,
        available: Tensor,
        foreground: Tensor,
        modality: int,
        rows: Tensor,
        anchor: RunningAnchor,
        generator: torch.Generator,
        gather: bool,
    ) -> dict[str, Tensor]:
        """The body of Algorithm 1 for modality `modality` on the crops `rows` (R,) that have it.

        A function of its own, so that its activations are released when it returns: only the loss values
        (and their graph, until the engine's backward) outlive it.
        """
        model, w = self.model, self.weights
        m = image.shape[1]
        rows_dev = rows.to(image.device)
        # X_h^i repeated over the M input channels, rotated by phi (kept even without the rotation head, unless
        # loss.rotate_inputs is off: then phi is the identity)
        if self.cfg.loss.rotate_inputs:
            k = sample_rotations(len(rows), generator)
        else:
            k = torch.zeros(len(rows), dtype=torch.long)
        x = rotate(image[rows_dev, modality : modality + 1].expand(-1, m, -1, -1, -1), k)
        terms: dict[str, Tensor] = {}
        if "contrast" in w:
            view_a = model.embed_view(cuboid_noise_augment(x, generator))
            view_b = model.embed_view(cuboid_noise_augment(x, generator))
            if gather:
                view_a, view_b = (
                    distributed.all_gather_with_grad(view_a),
                    distributed.all_gather_with_grad(view_b),
                )
            terms["contrast"] = self.contrast(view_a, view_b)
        z, skips = model.encode(x)
        fused = model.fuse(z)
        if "equivariance" in w:
            logits = model.rotation_logits(z, fused)
            terms["equivariance"] = self.equivariance(logits, k.to(logits.device))
        if "invariance" in w:
            seen = anchor.seen(rows)
            if bool(seen.any()):
                terms["invariance"] = self.invariance(fused[seen.to(fused.device)], anchor.get(rows[seen]))
            anchor.update(fused, rows)
        if "decomposition" in w:
            restored = unrotate(model.decode(fused, skips), k)  # phi^{-1}(D(X'_i | phi(x_h^i)))
            terms["decomposition"] = self.decomposition(
                restored, image[rows_dev], available[rows], foreground[rows_dev]
            )
        return terms
