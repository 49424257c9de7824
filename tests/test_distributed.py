"""How a process learns its rank: torchrun's variables, SLURM's under srun, and the refusal that stops N
processes from each believing they are rank 0 of one."""

from __future__ import annotations

import pytest

from p2gmed.errors import InputError
from p2gmed.train.distributed import Launch, launch_from_env

# what srun exports to task 3 of an 8-task step on 2 nodes (4 tasks per node)
SRUN_TASK_3 = {"SLURM_JOB_ID": "4242", "SLURM_NNODES": "2", "SLURM_STEP_NUM_NODES": "2", "SLURM_STEP_NUM_TASKS": "8",
               "SLURM_PROCID": "3", "SLURM_LOCALID": "3", "SLURM_NTASKS": "8"}


def test_plain_process_is_rank_zero_of_one():
    assert launch_from_env({}) == Launch()


def test_torchrun_variables_win_over_slurm():
    env = {**SRUN_TASK_3, "RANK": "5", "WORLD_SIZE": "16", "LOCAL_RANK": "1"}
    assert launch_from_env(env) == Launch(5, 16, 1, "torchrun")


def test_batch_script_without_srun_stays_one_process():
    # sbatch --ntasks=8 exports SLURM_NTASKS and SLURM_PROCID=0 to the script itself, but no job step
    assert launch_from_env({"SLURM_NTASKS": "8", "SLURM_PROCID": "0", "SLURM_NNODES": "2"}) == Launch()


def test_srun_on_one_node_meets_on_this_machine_with_a_port_per_job():
    env = {**SRUN_TASK_3, "SLURM_NNODES": "1", "SLURM_STEP_NUM_NODES": "1"}
    launch = launch_from_env(env)
    assert (launch.rank, launch.world, launch.local_rank, launch.launcher) == (3, 8, 3, "slurm")
    assert launch.master_addr == "127.0.0.1"
    other = launch_from_env({**env, "SLURM_JOB_ID": "4243"})
    assert other.master_port != launch.master_port


def test_srun_on_two_nodes_uses_the_given_master():
    launch = launch_from_env({**SRUN_TASK_3, "MASTER_ADDR": "gpu-node-01", "MASTER_PORT": "12345"})
    assert launch == Launch(3, 8, 3, "slurm", "gpu-node-01", "12345")


def test_srun_on_two_nodes_without_a_master_is_refused_with_the_torchrun_line():
    with pytest.raises(InputError) as info:
        launch_from_env(SRUN_TASK_3)
    message = str(info.value)
    assert "srun started 8 p2g processes on 2 nodes" in message
    assert "torchrun --nnodes=$SLURM_NNODES" in message and "MASTER_ADDR" in message
