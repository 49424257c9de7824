"""Combine named loss terms: the total of Eq. 7 plus every unweighted term for logging.

    L_pre = w_c L_contrast + w_d L_decom + w_e L_equ + w_i L_inv          (Eq. 7, "the weight of each loss is
                                                                         omitted here")
A term whose weight is 0 is never built, so an ablation computes nothing for it and owns no parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from p2gmed.config import LossConfig
from p2gmed.losses.contrastive import ContrastiveLoss
from p2gmed.losses.decomposition import DecompositionLoss
from p2gmed.losses.equivariance import RotationLoss
from p2gmed.losses.invariance import InvarianceLoss

PRETRAIN_TERMS = ("contrast", "equivariance", "invariance", "decomposition")


@dataclass(frozen=True)
class LossOutput:
    """Total loss plus the unweighted value of every term that was computed (for logging)."""

    total: Tensor
    terms: dict[str, Tensor]


class WeightedSum(nn.Module):
    """Weighted sum of named loss terms; a term with weight 0 is never built or run.

    Args:
        terms: name -> (weight >= 0, loss module).

    `forward(inputs)` takes name -> a function that calls the term's module with its arguments; active terms
    missing from `inputs` are skipped for that call (e.g. the invariance term at the first modality); with
    none at all the total is a constant 0 without graph (`terms` empty).
    """

    def __init__(self, terms: Mapping[str, tuple[float, nn.Module]]) -> None:
        super().__init__()
        for name, (weight, _) in terms.items():
            if weight < 0:
                raise ValueError(f"loss weight of '{name}' must be >= 0, got {weight}")
        self.weights = {name: float(w) for name, (w, _) in terms.items() if w > 0}
        self.terms = nn.ModuleDict({name: module for name, (w, module) in terms.items() if w > 0})

    def __contains__(self, name: object) -> bool:
        """True when the term `name` is active (weight > 0)."""
        return name in self.weights

    def forward(self, inputs: Mapping[str, Callable[[nn.Module], Tensor]]) -> LossOutput:
        unknown = set(inputs) - set(self.weights)
        if unknown:
            raise ValueError(f"inputs for inactive or unknown loss terms: {sorted(unknown)}")
        values = {name: inputs[name](self.terms[name]) for name in self.weights if name in inputs}
        if not values:  # nothing to compute (e.g. only invariance on, at the first modality)
            return LossOutput(total=torch.zeros(()), terms={})
        total = torch.stack([self.weights[n] * v.float() for n, v in values.items()]).sum()
        return LossOutput(total=total, terms=values)


def build_pretrain_objective(loss_cfg: LossConfig) -> WeightedSum:
    """The four pre-training terms of Eq. 7 with their weights from `loss_cfg` (zero weights dropped)."""
    return WeightedSum(
        {
            "contrast": (
                loss_cfg.contrast,
                ContrastiveLoss(loss_cfg.temperature, gather=loss_cfg.gather_negatives),
            ),
            "equivariance": (loss_cfg.equivariance, RotationLoss()),
            "invariance": (loss_cfg.invariance, InvarianceLoss()),
            "decomposition": (loss_cfg.decomposition, DecompositionLoss(loss_cfg.background_weight)),
        }
    )
