"""Contrastive loss of Eq. 2: NT-Xent (normalised temperature-scaled cross entropy) as Tang et al. (2022).

Paper, Sec. 3.2: "the positive pairs are constructed as augmented samples from the same sub-volume, while the
negative pairs are the views from different sub-volumes ... sim(.,.) denotes the dot product between
normalized embeddings". With N sub-volumes and two views each, every one of the 2N embeddings has one
positive (the other view of its sub-volume) and 2N - 2 negatives; the loss is the mean over the 2N anchors of

    -log( exp(sim(a, a+)/t) / sum_{b != a} exp(sim(a, b)/t) ),

exactly Tang's `Contrast` (the denominator holds the positive and all negatives, never the anchor itself).
Both views receive gradients (no stop-gradient, unlike the authors' release: docs/method.md section 6).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from p2gmed.train.distributed import all_gather_with_grad


class ContrastiveLoss(nn.Module):
    """NT-Xent between two views; row i of `view_a` and row i of `view_b` come from the same sub-volume.

    Args:
        temperature: t > 0 (Tang et al.: 0.5).
        gather: concatenate the views of all ranks first (more negatives under DDP; every rank must call the
            loss the same number of times with the same N).

    Shapes:
        view_a, view_b: (N, P) embeddings (normalised here); output: () scalar.

    Raises:
        ValueError: unequal or non-2-D shapes, or fewer than 2 sub-volumes in total (no negatives).
    """

    def __init__(self, temperature: float = 0.5, *, gather: bool = False) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.gather = gather

    def forward(self, view_a: Tensor, view_b: Tensor) -> Tensor:
        if view_a.ndim != 2 or view_a.shape != view_b.shape:
            shapes = f"{tuple(view_a.shape)} and {tuple(view_b.shape)}"
            raise ValueError(f"expected two (N, P) tensors, got {shapes}")
        if self.gather:
            view_a, view_b = all_gather_with_grad(view_a), all_gather_with_grad(view_b)
        n = view_a.shape[0]
        if n < 2:
            raise ValueError(
                f"the contrastive loss needs at least 2 sub-volumes (got {n}): negatives are views of other "
                "sub-volumes; use data.crops_per_subject >= 2 or train.batch_size >= 2"
            )
        emb = F.normalize(torch.cat([view_a, view_b]).float(), dim=1)  # (2N, P)
        logits = emb @ emb.T / self.temperature  # (2N, 2N) cosine similarity / t
        logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=logits.device), float("-inf"))
        partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(logits.device)
        return F.cross_entropy(logits, partner)
