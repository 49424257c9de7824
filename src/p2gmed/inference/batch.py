"""Prediction over a whole data set folder: every case into one flat output folder, re-entrant and shardable.

* `skip_complete` (`p2g predict --continue`): a case whose sidecar `<case>.json` names the same model files and
  every output it lists is on disk is not predicted again. The sidecar is renamed into place after the images
  (`writing.write_all`), so a sidecar means the case finished; a run that was killed redoes only the case it was
  in.
* `part` (`--part I/N`): the cases sorted by id are dealt round-robin into N shards and shard I (1-based) is
  predicted, as nnU-Net's `part_id`/`num_parts`; N machines with `--part 1/N` ... `--part N/N` cover every case
  once.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from p2gmed.errors import InputError
from p2gmed.inference.models import LoadedModel
from p2gmed.inference.cases import expected_files, predict_case
from p2gmed.inference.predict import PredictOptions, check_inputs

log = logging.getLogger(__name__)


def parse_part(text: str) -> tuple[int, int]:
    """"I/N" -> (I, N) with 1 <= I <= N; InputError otherwise."""
    head, sep, tail = str(text).partition("/")
    if sep and head.strip().isdigit() and tail.strip().isdigit():
        index, count = int(head), int(tail)
        if 1 <= index <= count:
            return index, count
    raise InputError(f"--part must be I/N with 1 <= I <= N (e.g. 2/4), got '{text}'")


def shard(items: list, part: tuple[int, int] | None) -> list:
    """Shard `part` = (I, N) of `items` (round-robin: items I-1, I-1+N, ...); all items for None."""
    if part is None:
        return list(items)
    index, count = part
    return list(items)[index - 1 :: count]


def is_complete(
    out_dir: Path, case: str, files: list[str], models: list[LoadedModel], options: PredictOptions | None = None
) -> bool:
    """Whether `case` was already predicted into `out_dir` by these model files with these prediction settings
    (overlap, mirroring, lesion filter, ...: what the sidecar records per model), with every output present."""
    sidecar = out_dir / f"{case}.json"
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return False
    used = sorted(str(m.get("file")) for m in meta.get("models", []))
    if used != sorted(str(m.path) for m in models):
        return False
    if options is not None:
        recorded = {str(m.get("file")): m.get("inference") for m in meta.get("models", [])}
        for model in models:  # JSON round trip, so that tuples and lists compare alike
            if recorded.get(str(model.path)) != json.loads(json.dumps(options.resolved(model))):
                log.info("%s: predicted earlier with other settings; predicting it again", case)
                return False
    listed = {v.get("file") for v in meta.get("outputs", {}).values()}
    return all(name in listed for name in files[:-1]) and all((out_dir / name).is_file() for name in files)


def predict_folder(
    models: list[LoadedModel],
    root: str | Path,
    out_dir: str | Path,
    options: PredictOptions | None = None,
    device: str | torch.device = "cpu",
    layout: str = "auto",
    progress: bool = True,
    skip_complete: bool = False,
    part: tuple[int, int] | None = None,
    channels: dict[int, str] | None = None,
) -> dict[str, Any]:
    """Predict every case of a data set folder (any supported layout) into one flat output folder.

    A case that fails validation is skipped (nothing written for it) and reported; the others go on.

    Args:
        models: as for `predict_case`, read once for all cases.
        root: a data set folder, or a single case folder.
        out_dir: output folder; files are named by subject id in `options.naming`.
        options: as for `predict_case`.
        device: compute device.
        layout: the data set layout, or "auto".
        progress: show a progress bar over the cases.
        skip_complete: leave cases whose outputs are complete (see the module docstring).
        part: (I, N): predict only shard I of N.
        channels: nnU-Net channel index -> modality, overriding dataset.json.

    Returns:
        {"done": [case, ...], "skipped": [complete cases], "failed": {case: reason}, "seconds": total}.

    Raises:
        InputError: the folder holds no readable case.
    """
    from tqdm import tqdm

    from p2gmed.data.read import read_dataset

    start = time.perf_counter()
    options = options or PredictOptions()
    out_dir = Path(out_dir)
    known = {m for model in models for m in model.modalities}
    subjects = shard(read_dataset(root, layout, channels=channels), part)
    done: list[str] = []
    skipped: list[str] = []
    failed: dict[str, str] = {}
    for subject in tqdm(subjects, desc="predict", unit="case", disable=not progress or len(subjects) < 2):
        case = subject.subject_id
        inputs = {m: p for m, p in subject.images.items() if m in known}
        if not inputs:
            failed[case] = f"none of its modalities {sorted(subject.images)} is known to the model(s)"
            continue
        if skip_complete:
            _, written = check_inputs(models, inputs)
            if is_complete(out_dir, case, expected_files(models, written, case, options.naming), models, options):
                skipped.append(case)
                continue
        try:
            sidecar = predict_case(models, inputs, out_dir, case, options, device)
            done.append(case)
            log.info("%s: %d outputs in %.1f s", case, len(sidecar["outputs"]), sidecar["runtime"]["seconds"])
        except InputError as exc:
            failed[case] = str(exc).replace("\n", "; ")
            log.warning("case %s skipped: %s", case, failed[case])
    return {
        "done": done, "skipped": skipped, "failed": failed, "seconds": round(time.perf_counter() - start, 3)
    }
