"""Prediction on a patient's own NIfTI files: sliding window, geometry round trip, intensity inverse, `p2g predict`.

Modules: `geometry` (native grid <-> model working grid, checks), `sliding` (MONAI sliding-window wrapper),
`intensity` (training normalisation and its inverse for outputs), `models` (checkpoints -> runnable models),
`predict` (`predict_case`, `predict_folder`). Heavy imports stay in the submodules.
"""
