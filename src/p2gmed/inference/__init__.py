"""Prediction on a patient's own NIfTI files: sliding window, geometry round trip, intensity inverse, `p2g predict`.

Modules: `geometry` (native grid <-> model working grid, checks), `sliding` (MONAI sliding-window wrapper),
`intensity` (training normalisation and its inverse for outputs), `models` (checkpoints -> runnable models),
`predict` (`predict_subsets` / `predict_volumes`, the core), `cases` (`predict_case`, `predict_case_subsets`: files
in and out), `writing` (sidecar, atomic writes), `api` (`p2gmed.load`, images in and out), `batch`
(`predict_folder` with --continue and --part), `naming` (p2g / nnU-Net / BraTS file names, `from-<subset>`
folders), `export` (the inference checkpoint). Heavy imports stay in the submodules.
"""
