"""Loss terms, each a small module on plain tensors, and their weighted combination (`WeightedSum`)."""

from p2gmed.losses.contrastive import ContrastiveLoss
from p2gmed.losses.decomposition import DecompositionLoss
from p2gmed.losses.equivariance import RotationLoss
from p2gmed.losses.invariance import InvarianceLoss, RunningAnchor
from p2gmed.losses.objective import LossOutput, WeightedSum, build_pretrain_objective

__all__ = [
    "ContrastiveLoss",
    "DecompositionLoss",
    "InvarianceLoss",
    "LossOutput",
    "RotationLoss",
    "RunningAnchor",
    "WeightedSum",
    "build_pretrain_objective",
]
