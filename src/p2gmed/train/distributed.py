"""torchrun helpers: rank and world queries, process-group set-up, gathers that keep gradients.

Every function works unchanged in a plain single process (no process group): ranks are 0, the world is 1, a
gather returns its input. The training code therefore never branches on "distributed or not" itself.

Launch several processes with `torchrun --nproc_per_node=G -m p2gmed pretrain ...`; `init_from_env()` reads
the `RANK` / `WORLD_SIZE` / `LOCAL_RANK` variables torchrun sets. Under SLURM, `srun` may start the processes
itself (one task per GPU): then the ranks come from `SLURM_PROCID` / `SLURM_STEP_NUM_TASKS` / `SLURM_LOCALID`,
and the processes meet at `MASTER_ADDR` (on one node: this machine). Without torchrun and without a way to meet,
they would each believe they are rank 0 of one and write the same run folder: that start is refused with the
torchrun line to use instead (docs/cluster.md has sbatch examples).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

from p2gmed.errors import InputError

#: the torchrun line for a SLURM job, shown when srun started the processes in a way they cannot meet
TORCHRUN_UNDER_SLURM = (
    "srun --ntasks-per-node=1 torchrun --nnodes=$SLURM_NNODES --nproc_per_node=$SLURM_GPUS_ON_NODE "
    "--rdzv_backend=c10d --rdzv_endpoint=$(scontrol show hostnames $SLURM_JOB_NODELIST | head -n1):29500 "
    "-m p2gmed pretrain ..."
)


@dataclass(frozen=True)
class Launch:
    """How this process was started: its global rank, the number of processes, its rank on the node."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    launcher: str = "single"
    """"single", "torchrun" or "slurm" (srun started every process itself)."""
    master_addr: str | None = None
    master_port: str | None = None


def launch_from_env(env: Mapping[str, str] | None = None) -> Launch:
    """Read how this process was launched from the environment (torchrun's variables win over SLURM's).

    Args:
        env: the environment (default `os.environ`).

    Raises:
        InputError: srun started several processes across nodes without torchrun and without `MASTER_ADDR`,
            so they could not find each other; the message shows the torchrun line.
    """
    env = os.environ if env is None else env
    if "WORLD_SIZE" in env:  # torchrun (or a hand-made torchrun environment)
        world = int(env["WORLD_SIZE"])
        return Launch(int(env.get("RANK", "0")), world, int(env.get("LOCAL_RANK", "0")),
                      "torchrun" if world > 1 else "single")
    # srun sets the SLURM_STEP_* variables for every task of a job step; a batch script alone does not, so
    # `python -m p2gmed ...` typed into an sbatch script with --ntasks=4 stays a single process
    tasks = int(env.get("SLURM_STEP_NUM_TASKS", "1"))
    if tasks <= 1 or "SLURM_PROCID" not in env:
        return Launch()
    nodes = int(env.get("SLURM_STEP_NUM_NODES", env.get("SLURM_NNODES", "1")))
    addr = env.get("MASTER_ADDR") or ("127.0.0.1" if nodes == 1 else None)
    if addr is None:
        raise InputError(
            f"srun started {tasks} p2g processes on {nodes} nodes without torchrun, and MASTER_ADDR is not set, so "
            f"they cannot find each other; start one torchrun per node instead: {TORCHRUN_UNDER_SLURM} "
            "(or export MASTER_ADDR=<first node> before srun)"
        )
    # a port of its own per job, so two jobs sharing a node do not meet each other
    port = env.get("MASTER_PORT") or str(29500 + int(env.get("SLURM_JOB_ID", "0")) % 10000)
    return Launch(int(env["SLURM_PROCID"]), tasks, int(env.get("SLURM_LOCALID", "0")), "slurm", addr, port)


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
    """Rank of this process on its node (torchrun's `LOCAL_RANK`, else SLURM's `SLURM_LOCALID` under srun)."""
    if "LOCAL_RANK" in os.environ:
        return int(os.environ["LOCAL_RANK"])
    return int(os.environ.get("SLURM_LOCALID", "0")) if "SLURM_STEP_NUM_TASKS" in os.environ else 0


def is_main() -> bool:
    """True on the process that writes files and prints (rank 0)."""
    return rank() == 0


def init_from_env(backend: str | None = None) -> bool:
    """Initialise the default process group from torchrun's (or srun's) environment variables.

    Does nothing for a single process or when a group already exists. Under srun without torchrun, the SLURM
    ranks are written into torchrun's variables first, so every later query reads one convention.

    Args:
        backend: "nccl" or "gloo"; None picks nccl when CUDA is available, gloo otherwise.

    Returns:
        True when this process is now part of a multi-process group.

    Raises:
        InputError: see `launch_from_env`.
    """
    launch = launch_from_env()
    if launch.world <= 1 or not dist.is_available():
        return False
    if launch.launcher == "slurm":
        os.environ.update(RANK=str(launch.rank), WORLD_SIZE=str(launch.world), LOCAL_RANK=str(launch.local_rank),
                          MASTER_ADDR=str(launch.master_addr), MASTER_PORT=str(launch.master_port))
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


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` over ranks along dim 0, keeping gradients (`torch.distributed.nn.functional.all_gather`).

    Every rank computes a loss on the full gathered tensor; the gradient that flows back to rank r's rows is the
    sum over ranks of d(loss_k)/d(rows_r). The engine then averages parameter gradients over ranks, so the result
    matches one process holding every row.

    Args:
        tensor: (N, ...) on every rank, same N everywhere (the caller makes sure; a mismatch fails in the gather).

    Returns:
        (world x N, ...) with rank r's rows at [r*N, (r+1)*N); `tensor` itself when not distributed.
    """
    if not is_distributed():
        return tensor
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor.contiguous()), dim=0)


def average_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Replace every gradient by its mean over ranks, in one all_reduce (no-op in a single process).

    Ranks may disagree on which parameters have a gradient (a module one rank's batch did not reach, e.g. a
    subset that skips a branch). Every rank must reduce the same tensors and end with the same gradients, or the
    all_reduce mixes up parameters (or hangs) and the replicas drift apart; so a small first all_reduce counts
    the ranks with a gradient per parameter, a parameter some rank used gets a zero gradient where it had none,
    and one that no rank used keeps none (the optimizer skips it, as in a single process).
    """
    params = [p for p in parameters if p.requires_grad]
    if not is_distributed() or not params:
        return
    used_by = torch.tensor([float(p.grad is not None) for p in params], device=params[0].device)
    dist.all_reduce(used_by)
    grads = []
    for p, count in zip(params, used_by.tolist(), strict=True):
        if count > 0:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
    if not grads:
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
