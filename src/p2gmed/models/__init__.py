"""Networks: P2GNet (SwinUNETR + learnable prior O + self-supervised heads) and the rotations phi."""

from p2gmed.models.network import P2GNet, build_model
from p2gmed.models.prior import PriorFusion, PriorRetrieval
from p2gmed.models.rotation import rotate, sample_rotations, unrotate

__all__ = ["P2GNet", "PriorFusion", "PriorRetrieval", "build_model", "rotate", "sample_rotations", "unrotate"]
