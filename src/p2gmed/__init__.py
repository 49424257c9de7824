"""p2gmed: Personalize-to-Generalize for multi-modal 3D medical images.

Learns a personalized invariant representation X_h of one patient from any subset of their imaging
modalities (Tan et al., "Personalize to generalize", arXiv 2411.06106) and uses it for cross-modality
synthesis and missing-modality segmentation.
"""

import os as _os

# OpenMP threads that spin while waiting make CPU convolutions 10x slower as soon as another process shares
# the cores (measured: one tiny pre-training step 67 s instead of 6.5 s on 2 busy cores). Passive waiting costs
# nothing measurable on an idle machine. Must be set before torch is imported; a user's setting wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
__all__ = ["P2GModel", "__version__", "load"]


def __getattr__(name: str):
    # the API is imported on first use, so `import p2gmed` (and `p2g --help`) stays free of torch
    if name in ("load", "P2GModel"):
        from p2gmed.inference import api

        return getattr(api, name)
    raise AttributeError(f"module 'p2gmed' has no attribute {name!r}")
