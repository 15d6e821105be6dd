#!/bin/bash
# hpc_picard on CPU nodes under Slurm: one MPI rank per core.
# A template: jobscripts/make_sweep.py fills the @...@ fields (docs/operations.md).
#SBATCH --job-name=@JOB_NAME@
#SBATCH --nodes=@NODES@
#SBATCH --ntasks-per-node=@RANKS_PER_NODE@
#SBATCH --cpus-per-task=1
#SBATCH --time=@TIME@
#SBATCH --output=@JOB_NAME@-%j.log
#SBATCH --open-mode=append
#SBATCH --requeue
#SBATCH --signal=B:USR1@@GRACE@
@EXTRA_DIRECTIVES@
set -euo pipefail

# The cluster's MPI and the virtual environment whose mpi4py was built against it.
@ENV_SETUP@
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
# MPICH: ranks waiting in a collective sleep between polls instead of spinning
# (make_sweep.py --busy-wait leaves this out; docs/scaling.md)
@MPI_WAIT_ENV@

# The checkpoint is named by the job name, the samples by the job id: a requeued job
# keeps its id and continues from the checkpoint (--resume starts from block 0 when
# there is none yet).
CHECKPOINT=@JOB_NAME@.ckpt.h5
OUTPUT=@JOB_NAME@-${SLURM_JOB_ID}.h5

# Slurm sends USR1 @GRACE@ s before the wall-time limit (--signal above): requeue, so
# the job comes back and resumes from the last checkpoint.
requeue() {
    # The output appears (atomically) only when the run is complete: a signal that
    # comes while a finished run exits must not start it again.
    if [ -e "${OUTPUT}" ]; then
        echo "$(date -Is) wall time nearly up, but ${OUTPUT} is complete: not requeueing"
        return
    fi
    echo "$(date -Is) wall time nearly up: requeueing job ${SLURM_JOB_ID}"
    scontrol requeue "${SLURM_JOB_ID}"
}
trap requeue USR1

echo "$(date -Is) job ${SLURM_JOB_ID} (restart ${SLURM_RESTART_COUNT:-0}) on ${SLURM_JOB_NUM_NODES} node(s)"
if [ -e "${OUTPUT}" ]; then
    echo "$(date -Is) ${OUTPUT} is complete (a requeue after the run finished): nothing to do"
    exit 0
fi
# A killed run (requeue, time limit) leaves MPICH's node-shared memory behind, named
# after the job step; a requeued job keeps its id and numbers its steps from 0 again,
# so its MPI step would attach to the dead run's segment and fail in MPI_Init. Remove
# this job's leftovers on every node first (hpc_picard/launch.py).
srun --overlap --ntasks-per-node=1 --ntasks="${SLURM_JOB_NUM_NODES}" \
    python -m hpc_picard.launch clean-shm "${SLURM_JOB_ID}"
# The --mpi plugin must be the PMI of the MPI behind mpi4py (docs/operations.md);
# without it every task starts as a one-rank world, which picard-sample refuses.
# srun in the background and `wait`, so that bash runs the trap while srun runs.
srun @SRUN_MPI@ --kill-on-bad-exit=1 picard-sample @PICARD_ARGS@ \
    --checkpoint "${CHECKPOINT}" --resume --output "${OUTPUT}" --no-progress &
srun_pid=$!
# `wait` returns as soon as a trapped signal arrives: wait again while srun runs (a
# USR1 after the run finished requeues nothing, and the job keeps srun's status).
while :; do
    status=0
    wait "${srun_pid}" || status=$?
    kill -0 "${srun_pid}" 2> /dev/null || break
done
exit "${status}"
