#!/bin/bash
# hpc_picard on GPU nodes under Slurm: one MPI rank per GPU.
# A template: jobscripts/make_sweep.py fills the @...@ fields (docs/operations.md).
#SBATCH --job-name=@JOB_NAME@
#SBATCH --nodes=@NODES@
#SBATCH --ntasks-per-node=@RANKS_PER_NODE@
#SBATCH --gpus-per-node=@RANKS_PER_NODE@
#SBATCH --cpus-per-task=@CPUS_PER_RANK@
#SBATCH --time=@TIME@
#SBATCH --output=@JOB_NAME@-%j.log
#SBATCH --open-mode=append
#SBATCH --requeue
#SBATCH --signal=B:USR1@@GRACE@
@EXTRA_DIRECTIVES@
set -euo pipefail

# The cluster's MPI and CUDA, and the virtual environment built against them.
@ENV_SETUP@
export OMP_NUM_THREADS=@CPUS_PER_RANK@
# MPICH: ranks waiting in a collective sleep between polls instead of spinning
# (make_sweep.py --busy-wait leaves this out; docs/scaling.md)
@MPI_WAIT_ENV@

CHECKPOINT=@JOB_NAME@.ckpt.h5
OUTPUT=@JOB_NAME@-${SLURM_JOB_ID}.h5

requeue() {
    echo "$(date -Is) wall time nearly up: requeueing job ${SLURM_JOB_ID}"
    scontrol requeue "${SLURM_JOB_ID}"
}
trap requeue USR1

echo "$(date -Is) job ${SLURM_JOB_ID} (restart ${SLURM_RESTART_COUNT:-0}) on ${SLURM_JOB_NUM_NODES} node(s)"
# bind-gpu.sh gives each rank the GPU of its node-local rank (CUDA_VISIBLE_DEVICES).
srun --kill-on-bad-exit=1 @JOBSCRIPTS@/bind-gpu.sh picard-sample @PICARD_ARGS@ \
    --checkpoint "${CHECKPOINT}" --resume --output "${OUTPUT}" --no-progress &
wait $!
