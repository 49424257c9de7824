"""Prediction on a patient's own NIfTI files: sliding window, geometry round trip, intensity inverse, `p2g predict`.

Modules: `geometry` (native grid <-> model working grid, checks), `sliding` (MONAI sliding-window wrapper),
`intensity` (training normalisation and its inverse for outputs), `models` (checkpoints -> runnable models),
`predict` (`predict_volumes`, the core; `predict_case`, files in and out), `api` (`p2gmed.load`, images in and
out), `batch` (`predict_folder` with --continue and --part), `naming` (p2g / nnU-Net / BraTS file names), `export`
(the inference checkpoint). Heavy imports stay in the submodules.
"""
