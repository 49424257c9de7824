"""Evaluation as the community computes it: synthesis (PSNR, NMSE, SSIM), BraTS (legacy Dice, ET post-processing,
HD95, the 15-subset protocol, BraTS 2023 lesion-wise Dice/HD95) and AutoPET (Dice, FPV, FNV, case-level rates),
with paper-style tables.

Only NIfTI files are needed, no model. docs/method.md (section 9) states the conventions.
"""

from p2gmed.evaluation.autopet import autopet_metrics, autopet_summary, evaluate_autopet
from p2gmed.evaluation.brats import brats_metrics, evaluate_brats
from p2gmed.evaluation.lesionwise import evaluate_brats_metrics, lesionwise_metrics
from p2gmed.evaluation.synthesis import evaluate_synthesis, synthesis_metrics
from p2gmed.evaluation.tables import (
    autopet_table,
    brats_table,
    subset_detail_table,
    subset_table,
    synthesis_table,
    write_csv,
)

__all__ = [
    "autopet_metrics", "autopet_summary", "autopet_table", "brats_metrics", "brats_table", "evaluate_autopet",
    "evaluate_brats", "evaluate_brats_metrics", "evaluate_synthesis", "lesionwise_metrics", "subset_detail_table",
    "subset_table", "synthesis_metrics", "synthesis_table", "write_csv",
]
