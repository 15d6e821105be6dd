"""Launch checks (hpc_picard/launch.py): N singletons are refused, stale MPICH segments
are found by name. Driven by environment variables: no Slurm needed (tests/slurm runs
the real thing)."""
import os
import subprocess

import pytest

from conftest import tool
from hpc_picard.launch import (fnv1a32, launcher_tasks, mpich_segment_patterns,
                               remove_stale_mpich_segments, singleton_error)

LAUNCH_VARIABLES = ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK",
                    "MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_RANK", "SLURM_STEP_NUM_TASKS",
                    "SLURM_PROCID", "SLURM_NTASKS", "SLURM_NPROCS", "HPC_PICARD_ALLOW_SINGLETONS")


@pytest.mark.parametrize("env, refused, prints", [
    ({"SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "0"}, True, True),   # srun without --mpi
    ({"SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "1"}, True, False),  # ... its other task
    ({"PMI_SIZE": "4", "PMI_RANK": "0"}, True, True),      # srun --mpi=pmi2 / hydra, other MPI
    ({"OMPI_COMM_WORLD_SIZE": "3"}, True, True),           # Open MPI's mpirun, MPICH mpi4py
    ({"MV2_COMM_WORLD_SIZE": "2", "MV2_COMM_WORLD_RANK": "1"}, True, False),
    # A batch script is one process with the allocation's task count: allowed.
    ({"SLURM_NTASKS": "2", "SLURM_NPROCS": "2"}, False, False),
    ({"SLURM_STEP_NUM_TASKS": "1", "SLURM_NTASKS": "1"}, False, False),
    # mpiexec -n 1 bootstrapped by srun on 2 nodes: the MPI launcher's count wins.
    ({"PMI_SIZE": "1", "SLURM_STEP_NUM_TASKS": "2"}, False, False),
    ({"SLURM_STEP_NUM_TASKS": "2", "HPC_PICARD_ALLOW_SINGLETONS": "1"}, False, False),
    ({}, False, False),
])
def test_singletons_are_refused_from_the_step_variables(env, refused, prints):
    message, printed = singleton_error(1, env)
    assert (message is not None) == refused
    assert printed == prints
    if refused:
        tasks, name, _ = launcher_tasks(env)
        assert f"started {tasks} tasks ({name}={tasks}) but MPI sees a world of 1" in message
        assert "srun --mpi=pmi2" in message and "\n" not in message


def test_a_real_multi_rank_world_passes():
    assert singleton_error(2, {"SLURM_STEP_NUM_TASKS": "2", "PMI_SIZE": "2"}) == (None, False)


def picard(env_extra, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES}
    return subprocess.run([tool("picard-sample"), "--dim", "16", "--num-samples", "2",
                           "--blocks", "2", "--steps-per-block", "4", "--quiet",
                           "--output", str(tmp_path / "out.h5")],
                          env={**env, **env_extra}, capture_output=True, text=True, timeout=120)


def test_picard_sample_refuses_srun_singletons(tmp_path):
    first = picard({"SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "0"}, tmp_path)
    second = picard({"SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "1"}, tmp_path)
    assert (first.returncode, second.returncode) == (2, 2)
    lines = first.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("picard-sample: error: the launcher started 2 tasks")
    assert second.stderr == ""
    assert not (tmp_path / "out.h5").exists()
    batch = picard({"SLURM_NTASKS": "2"}, tmp_path)
    assert batch.returncode == 0, batch.stderr
    assert (tmp_path / "out.h5").exists()


def test_mpich_segment_name_is_the_kvsname_hash(tmp_path):
    # Seen in /dev/shm after a killed `srun --mpi=pmi2` step 1.0 with the mpich 5.0.2 wheel.
    assert f"{fnv1a32('1.0'):x}" == "eb421bf2"
    stale = [tmp_path / "mpich_shm_eb421bf2_0", tmp_path / f"mpich_vci_{fnv1a32('1.3'):x}_1"]
    others = [tmp_path / f"mpich_shm_{fnv1a32('11.0'):x}_0", tmp_path / "mpich_shm_4656_0",
              tmp_path / f"mpich_shm_{fnv1a32('1.0'):x}0_0"]
    for path in stale + others:
        path.write_bytes(b"x")
    assert mpich_segment_patterns("1.0", str(tmp_path))[0].endswith("mpich_shm_eb421bf2_*")
    removed = remove_stale_mpich_segments("1", shm_dir=str(tmp_path))
    assert sorted(removed) == sorted(str(p) for p in stale)
    assert all(p.exists() for p in others)
