"""Atomic file writing: a temp file in the target folder, then `os.replace`. A killed run never leaves a
half-written checkpoint, NIfTI or table behind."""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import torch


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it is renamed onto `path`, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix or "".join(path.suffixes))
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield tmp_path
        tmp_path.chmod(0o666 & ~umask)  # mkstemp makes 0600 files; outputs are ordinary files
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_torch(obj: Any, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_nifti(img: Any, path: str | Path) -> Path:
    """Save a nibabel image atomically. `.nii.gz` files are reproducible: the same image gives the same bytes
    (gzip header without time stamp or temp name)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.name.endswith(".gz"):
            buffer = io.BytesIO()
            with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=1) as gz:
                gz.write(img.to_bytes())
            tmp.write_bytes(buffer.getvalue())
        else:
            nib.save(img, tmp)
    return path
