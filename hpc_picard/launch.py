"""How the job was launched: the singleton check, and MPICH's stale shared memory.

Two launch pitfalls ruin multi-rank jobs under a scheduler (docs/operations.md,
"Launching under Slurm"):

- **N singletons.** A launcher that does not speak the PMI of the MPI library behind
  mpi4py (``srun`` without the right ``--mpi=`` plugin, or the mpiexec of another MPI)
  starts N processes that each initialise MPI alone: N one-rank runs that race on the
  same output and checkpoint. :func:`singleton_error` spots this from the launcher's
  environment, and ``picard-sample`` refuses to run.
- **Stale init segments.** MPICH (4.2 and later, the PyPI wheel included) meets its
  node-local peers in a POSIX shared-memory segment named after the PMI job id,
  ``/dev/shm/mpich_shm_<FNV-1a(kvsname)>_<node>``; under ``srun --mpi=pmi2`` the
  kvsname is ``JOBID.STEP``. A run that is killed (requeue, time limit, node
  trouble) leaves the segment behind. A requeued job keeps its job id and numbers its
  steps from 0 again, so its step opens the dead run's segment and dies in MPI_Init
  ("Message truncated", or UCX "failed to unpack address"). :func:`remove_stale_mpich_segments`
  removes a job's leftovers; the Slurm job scripts run it on every node before they
  launch (``python -m hpc_picard.launch clean-shm $SLURM_JOB_ID``).

This module must not import mpi4py: the cleanup runs outside any MPI job.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys

#: Variables in which launchers state how many tasks they started, in the order they are
#: believed. MPI launchers' own counts come first: mpiexec (hydra) bootstrapping through
#: srun gives its proxies a Slurm step of one task per node, but its ranks PMI_SIZE.
#: SLURM_NTASKS and SLURM_NPROCS are NOT used: they describe the allocation, and a batch
#: script, a single process, has them set to the job's task count. Only inside a job
#: step (srun) does SLURM_STEP_NUM_TASKS exist.
LAUNCHER_SIZES = (
    ("PMI_SIZE", "PMI_RANK"),                            # MPICH/Intel MPI mpiexec, srun --mpi=pmi2, Cray PMI
    ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"),    # Open MPI mpirun / prterun
    ("MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_RANK"),      # MVAPICH mpirun_rsh
    ("SLURM_STEP_NUM_TASKS", "SLURM_PROCID"),            # srun (any --mpi)
)
#: set to 1 to run N independent one-rank runs on purpose (each with its own --output)
ALLOW_SINGLETONS = "HPC_PICARD_ALLOW_SINGLETONS"
FIX = ("launch with `srun --mpi=pmi2` (MPICH, the mpich wheel) or `srun --mpi=pmix` "
       "(Open MPI), or with the mpiexec of the MPI behind mpi4py (docs/operations.md)")


def launcher_tasks(env) -> tuple:
    """(tasks, variable, launcher rank) as the first launcher variable set in ``env``
    says; (None, None, None) when none is."""
    for size_name, rank_name in LAUNCHER_SIZES:
        value = env.get(size_name, "").strip()
        if value.isdigit():
            rank = env.get(rank_name, "").strip()
            return int(value), size_name, int(rank) if rank.isdigit() else None
    return None, None, None


def singleton_error(world_size: int, env=None) -> tuple:
    """(message, whether this process prints it) when a launcher started several
    tasks but MPI built a world of one; (None, False) otherwise.

    Every singleton is rank 0 of its own world, so only the launcher's task 0 prints:
    one line per job, not one per task.
    """
    env = os.environ if env is None else env
    if world_size != 1 or env.get(ALLOW_SINGLETONS, "") == "1":
        return None, False
    tasks, name, rank = launcher_tasks(env)
    if tasks is None or tasks <= 1:
        return None, False
    message = (f"the launcher started {tasks} tasks ({name}={tasks}) but MPI sees a world of "
               f"1 in each, so {tasks} one-rank runs would race on the same files: {FIX}")
    return message, rank in (0, None)


def fnv1a32(text: str) -> int:
    """32-bit FNV-1a of ``text``: MPICH's hash of the PMI kvsname (its world id)."""
    value = 0x811C9DC5
    for byte in text.encode():
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


def mpich_segment_patterns(kvsname: str, shm_dir: str = "/dev/shm") -> list:
    """Globs of the shared-memory files MPICH names after ``kvsname``."""
    world_id = f"{fnv1a32(kvsname):x}"
    return [os.path.join(shm_dir, f"mpich_{kind}_{world_id}_*") for kind in ("shm", "vci")]


def remove_stale_mpich_segments(job_id: str, steps: int = 16, shm_dir: str = "/dev/shm") -> list:
    """Remove the segments of steps 0..steps-1 of Slurm job ``job_id`` on this node;
    returns the paths removed. Only for before a step of this job starts: job ids are
    unique among live jobs, so nothing another job uses can match."""
    removed = []
    for step in range(steps):
        for pattern in mpich_segment_patterns(f"{job_id}.{step}", shm_dir):
            for path in glob.glob(pattern):
                try:
                    os.unlink(path)
                    removed.append(path)
                except FileNotFoundError:
                    pass
    return removed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hpc_picard.launch",
                                     description="Launch helpers for job scripts.")
    sub = parser.add_subparsers(dest="command", required=True)
    clean = sub.add_parser("clean-shm", help="remove a Slurm job's stale MPICH shared memory "
                                             "on this node (run before the job's MPI step)")
    clean.add_argument("job_id", help="the Slurm job id (SLURM_JOB_ID)")
    clean.add_argument("--shm-dir", default="/dev/shm")
    args = parser.parse_args(argv)
    removed = remove_stale_mpich_segments(args.job_id, shm_dir=args.shm_dir)
    if removed:
        print(f"hpc_picard.launch: removed {len(removed)} stale MPICH segment(s) of job "
              f"{args.job_id} left by a killed run: {' '.join(removed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
