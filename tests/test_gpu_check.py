"""benchmarks/gpu_check.sh: its CPU dry run goes through every part and writes one file; bad use exits 2.

The numbers themselves are never asserted (speed is measured, not tested); what is checked is that each part ran
and reported against its goal, so the script is known to work before a GPU machine is at hand.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu_check.sh"


def _run(*args, timeout=1500):
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_dry_run_runs_every_part_into_one_file(tmp_path):
    out = tmp_path / "check.txt"
    proc = _run("--dry-run", "--out", str(out))
    text = out.read_text()
    assert proc.returncode == 0, proc.stderr + text
    assert text.startswith("# p2gmed GPU check") and "card: dry run on the CPU" in text and "torch " in text
    for part in ("### 1+3. pre-training step", "### 2. p2g predict", "### 4. data loading", "### 4. peak memory",
                 "### 5. p2g pretrain"):
        assert part in text
    for reported in ("overhead (goal <= 1.15x)", "% of matmul", "ratio (goal <= 1.2x)", "(goal < 10%)",
                     "with activation checkpointing", "2 steps;"):
        assert reported in text
    assert "0 part(s) failed" in text


def test_unknown_option_exits_2_with_a_sentence():
    proc = _run("--fast", timeout=60)
    assert proc.returncode == 2 and "unknown option --fast" in proc.stderr


def test_full_check_without_cuda_points_to_the_dry_run(tmp_path):
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("on a GPU machine the full check is the real thing, not an error path")
    proc = _run("--out", str(tmp_path / "x.txt"), timeout=120)
    assert proc.returncode == 2 and "--dry-run" in proc.stderr
