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


# --- built-in data sets: small, written once per session ----------------------------------------------------


@pytest.fixture(scope="session")
def demo_brain(tmp_path_factory):
    """4 simulated brain MRI subjects in the brats23 layout; returns the data set root."""
    from p2gmed.data.synthetic import make_demo

    root = tmp_path_factory.mktemp("demo") / "brain"
    make_demo(root, kind="brain", subjects=4, layout="brats23", seed=0)
    return root


@pytest.fixture(scope="session")
def demo_petct(tmp_path_factory):
    """4 simulated PET/CT studies (3 patients, one with two studies) in the autopet layout; returns the root."""
    from p2gmed.data.synthetic import make_demo

    root = tmp_path_factory.mktemp("demo") / "petct"
    make_demo(root, kind="petct", subjects=4, layout="autopet", seed=0)
    return root


@pytest.fixture(scope="session")
def demo_nac(tmp_path_factory):
    """3 simulated CT / PET_AC / PET_NAC subjects in the nac layout; returns the root."""
    from p2gmed.data.synthetic import make_demo

    root = tmp_path_factory.mktemp("demo") / "nac"
    make_demo(root, kind="nac", subjects=3, layout="nac", seed=0)
    return root


@pytest.fixture(scope="session")
def untrained_pretrain_checkpoint(tmp_path_factory):
    """A freshly initialised tiny P2GNet saved as a step-1 pre-training checkpoint of the four MRI modalities."""
    from pathlib import Path

    import torch

    from p2gmed.config import config_to_dict, load_config
    from p2gmed.models.baselines import build_architecture
    from p2gmed.train.checkpoint import save_checkpoint

    cfg = load_config(Path(__file__).parents[1] / "configs" / "tiny-cpu.yaml")
    path = tmp_path_factory.mktemp("ckpt") / "pretrain.pt"
    torch.manual_seed(0)
    save_checkpoint(path, model=build_architecture(cfg, "p2g", 4), step=1, config=config_to_dict(cfg),
                    task="pretrain", architecture="p2g", out_channels=4, modalities=["t1n", "t1c", "t2w", "t2f"])
    return path
