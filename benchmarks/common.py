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
    return f"CPU {cpu_model()} ({torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()})"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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


def interleaved(fns: dict[str, Callable[[], object]], device, repeats: int, warmup: bool = True) -> dict[str, float]:
    """Median seconds of each function, run in alternating rounds (a, b, a, b, ...) after one warm-up round.

    Alternating cancels slow drifts of a shared machine (other processes starting or stopping) from the ratios.
    """
    if warmup:
        for fn in fns.values():
            fn()
            sync(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(max(1, repeats)):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


def count_flops(fn: Callable[[], object]) -> float:
    """FLOPs of one call of `fn` as `torch.utils.flop_counter` counts them (matmuls and convolutions, fwd + bwd)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def matmul_rate(device, dtype, n: int = 4096, repeats: int = 3) -> float:
    """FLOP/s of an (n x n) @ (n x n) matrix product: the device's practical peak for dense work."""
    import torch

    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    seconds = timed(lambda: a @ b, device, repeats)
    return 2 * n**3 / seconds


def available_memory_gb() -> float:
    """Memory the OS can still give (MemAvailable), in GB; inf where /proc/meminfo is missing."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("inf")


def require_memory(gb: float, what: str) -> None:
    """Stop with a sentence when less than `gb` GB is available (shared machines: never push others into swap)."""
    free = available_memory_gb()
    if free < gb:
        raise SystemExit(f"{what} needs about {gb:.0f} GB of free memory; {free:.1f} GB available")


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


def preset_config(preset: str, modalities=("t1n", "t1c", "t2w", "t2f"), **sections):
    """configs/<preset>.yaml with the given modalities and `section={field: value}` overrides."""
    from p2gmed.config import load_config

    overrides = [f"data.modalities=[{','.join(modalities)}]"]
    for section, values in sections.items():
        overrides += [f"{section}.{k}={json.dumps(v)}" for k, v in values.items()]
    return load_config(ROOT / "configs" / f"{preset}.yaml", overrides)


def tiny_config(modalities=("t1n", "t1c", "t2w", "t2f"), **sections):
    """The tiny-cpu preset (ROI 32x32x64, feature size 12) with overrides."""
    return preset_config("tiny-cpu", modalities, **sections)


def paper_config(modalities=("t1n", "t1c", "t2w", "t2f"), **sections):
    """The paper's setting (brats23-transfer preset: ROI 96^3, feature size 48) with overrides."""
    return preset_config("brats23-transfer", modalities, **sections)


def bf16_kernels(device) -> bool:
    """Whether bf16 3D convolutions have fast kernels here (CUDA, or a CPU where oneDNN supports bf16).

    Without oneDNN bf16 (x86 CPUs below AVX-512), PyTorch runs bf16 convolutions in its reference kernel
    (`aten::slow_conv3d_forward`), 20-40x slower than fp32.
    """
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def report(title: str, device, rows: list[tuple[str, str]]) -> None:
    print(f"\n== {title} [{device_name(device)}]")
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
