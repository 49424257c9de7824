"""torchrun helpers: rank and world queries, process-group set-up, gathers that keep gradients.

Every function works unchanged in a plain single process (no process group): ranks are 0, the world is 1, a
gather returns its input. The training code therefore never branches on "distributed or not" itself.

Launch several processes with `torchrun --nproc_per_node=G -m p2gmed pretrain ...`; `init_from_env()` reads
the `RANK` / `WORLD_SIZE` / `LOCAL_RANK` variables torchrun sets.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True when a process group with more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """Global rank of this process (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def local_rank() -> int:
    """Rank of this process on its node (torchrun's `LOCAL_RANK`; 0 when unset)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """True on the process that writes files and prints (rank 0)."""
    return rank() == 0


def init_from_env(backend: str | None = None) -> bool:
    """Initialise the default process group from torchrun's environment variables.

    Does nothing when `WORLD_SIZE` is unset or 1, or when a group already exists.

    Args:
        backend: "nccl" or "gloo"; None picks nccl when CUDA is available, gloo otherwise.

    Returns:
        True when this process is now part of a multi-process group.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not dist.is_available():
        return False
    if not dist.is_initialized():
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            # each process owns the GPU of its local rank before NCCL creates its communicator
            torch.cuda.set_device(local_rank())
        dist.init_process_group(backend=backend)
    return is_distributed()


def barrier() -> None:
    """Wait for every process (no-op in a single process)."""
    if is_distributed():
        dist.barrier()


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward returns, to each rank, the summed gradient of its own slice.

    Every rank computes a loss on the full gathered tensor; the gradient that flows back to rank r's input is
    the sum over all ranks of d(loss_k)/d(slice_r), i.e. an all_reduce followed by taking the local slice.
    DDP then averages parameter gradients over ranks, so the result matches one process holding everything.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.local_size = tensor.shape[0]
        sizes = [torch.zeros(1, dtype=torch.long, device=tensor.device) for _ in range(world_size())]
        dist.all_gather(sizes, torch.tensor([tensor.shape[0]], dtype=torch.long, device=tensor.device))
        ctx.sizes = [int(s.item()) for s in sizes]
        if len(set(ctx.sizes)) != 1:
            raise RuntimeError(f"all_gather_with_grad needs equal batch sizes on every rank, got {ctx.sizes}")
        parts = [torch.empty_like(tensor) for _ in range(world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = rank() * ctx.local_size
        return grad[start : start + ctx.local_size]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` over ranks along dim 0, keeping gradients for this rank's slice.

    Args:
        tensor: (N, ...) on every rank, same N everywhere.

    Returns:
        (world x N, ...) with rank r's rows at [r*N, (r+1)*N); `tensor` itself when not distributed.
    """
    if not is_distributed():
        return tensor
    return _GatherWithGrad.apply(tensor)


def average_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Replace every gradient by its mean over ranks, in one all_reduce (no-op in a single process)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not is_distributed() or not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def reduce_mean(values: dict[str, float]) -> dict[str, float]:
    """Average scalar metrics over ranks (every rank must pass the same keys).

    Args:
        values: name -> number on this rank.

    Returns:
        name -> mean over ranks (the input itself when not distributed).
    """
    if not is_distributed() or not values:
        return dict(values)
    keys = sorted(values)
    device = torch.device("cuda", local_rank()) if dist.get_backend() == "nccl" else torch.device("cpu")
    buf = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    buf /= world_size()
    return {k: float(v) for k, v in zip(keys, buf.tolist(), strict=True)}
