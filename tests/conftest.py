"""Shared fixtures. Tests run on tiny volumes on 2 CPU cores: feature size 12, ROI (32, 32, 64)."""

from __future__ import annotations

import os

import pytest

# two xdist workers on two cores: one thread each
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    yield


@pytest.fixture
def tiny_cfg():
    """The tiny-cpu preset as a Config object."""
    from pathlib import Path

    from p2gmed.config import load_config

    return load_config(Path(__file__).parents[1] / "configs" / "tiny-cpu.yaml")
