"""Loss terms, each a small module or function on plain tensors, and the weighted sums of Eq. 7 and Eq. 8."""

from p2gmed.losses.contrastive import ContrastiveLoss
from p2gmed.losses.decomposition import DecompositionLoss, masked_mean_error
from p2gmed.losses.equivariance import RotationLoss
from p2gmed.losses.invariance import InvarianceLoss, RunningAnchor
from p2gmed.losses.objective import PRETRAIN_TERMS, weighted_total
from p2gmed.losses.structural import StructuralSimilarityLoss

__all__ = [
    "PRETRAIN_TERMS",
    "ContrastiveLoss",
    "DecompositionLoss",
    "InvarianceLoss",
    "RotationLoss",
    "RunningAnchor",
    "StructuralSimilarityLoss",
    "masked_mean_error",
    "weighted_total",
]
