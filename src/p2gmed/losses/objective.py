"""The weighted sums of the paper's objectives: Eq. 7 (pre-training) and Eq. 8 (tuning).

    L_pre = w_c L_contrast + w_d L_decom + w_e L_equ + w_i L_inv          (Eq. 7, "the weight of each loss is
                                                                         omitted here")
    L_down = w_o L_ori + w_i L_inv                                        (Eq. 8)

The tasks compute only the terms whose weight is not zero (a zero weight skips the computation, not only the
product) and sum them here.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

#: the pre-training terms of Eq. 7, by their `loss.*` weight names
PRETRAIN_TERMS = ("contrast", "equivariance", "invariance", "decomposition")


def weighted_total(terms: Mapping[str, Tensor], weights: Mapping[str, float]) -> Tensor:
    """sum_t w_t L_t over the computed terms (float32 scalar; 0 without graph when none was computed).

    Raises:
        KeyError: a term without a weight.
    """
    if not terms:
        return torch.zeros(())
    return torch.stack([weights[name] * value.float() for name, value in terms.items()]).sum()
