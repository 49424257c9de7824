"""p2gmed: Personalize-to-Generalize for multi-modal 3D medical images.

Learns a personalized invariant representation X_h of one patient from any subset of their imaging
modalities (Tan et al., "Personalize to generalize", arXiv 2411.06106) and uses it for cross-modality
synthesis and missing-modality segmentation.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
