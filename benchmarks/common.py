"""Shared helpers of the benchmarks: device choice, timing, peak memory, printing.

Speed and memory are measured here, never in tests. Each benchmark prints ratios against a baseline measured
in the same run, on the same device, so numbers from different machines are never mixed.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    p.add_argument("--repeats", type=int, default=2, help="timed repetitions after one warm-up")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: one measurement in a subprocess
    return p


def setup(args: argparse.Namespace):
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda given but CUDA is not available")
    return device


def device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device, repeats: int) -> float:
    """Median seconds of `fn` over `repeats` runs after one warm-up run."""
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mb(device) -> float:
    """CUDA: peak allocated since `reset_peak`; CPU: this process's peak resident size (use a subprocess)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def in_subprocess(script: str, args: list[str]) -> dict:
    """Run `script --child ...` in a fresh interpreter (so CPU peak memory is its own) and read its JSON line."""
    proc = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"{Path(script).name} {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def tiny_config(modalities=("t1n", "t1c", "t2w", "t2f"), **sections):
    """The tiny-cpu preset with the given modalities and `section={field: value}` overrides."""
    from p2gmed.config import load_config

    overrides = [f"data.modalities=[{','.join(modalities)}]"]
    for section, values in sections.items():
        overrides += [f"{section}.{k}={json.dumps(v)}" for k, v in values.items()]
    return load_config(ROOT / "configs" / "tiny-cpu.yaml", overrides)


def report(title: str, device, rows: list[tuple[str, str]]) -> None:
    print(f"\n== {title} [{device_name(device)}]")
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
