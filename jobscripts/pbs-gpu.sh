#!/bin/bash
# hpc_picard on GPU nodes under PBS Pro / OpenPBS: one MPI rank per GPU.
# A template: jobscripts/make_sweep.py fills the @...@ fields (docs/operations.md).
#PBS -N @JOB_NAME@
#PBS -l select=@NODES@:ncpus=@CPUS_PER_NODE@:mpiprocs=@RANKS_PER_NODE@:ngpus=@RANKS_PER_NODE@
#PBS -l walltime=@TIME@
#PBS -j oe
#PBS -r y
@EXTRA_DIRECTIVES@
set -euo pipefail
cd "${PBS_O_WORKDIR}"

@ENV_SETUP@
export OMP_NUM_THREADS=@CPUS_PER_RANK@
# MPICH: ranks waiting in a collective sleep between polls instead of spinning
# (make_sweep.py --busy-wait leaves this out; docs/scaling.md)
@MPI_WAIT_ENV@

JOB_ID=${PBS_JOBID%%.*}
CHECKPOINT=@JOB_NAME@.ckpt.h5
OUTPUT=@JOB_NAME@-${JOB_ID}.h5
exec >> "@JOB_NAME@-${JOB_ID}.log" 2>&1

echo "$(date -Is) job ${PBS_JOBID}"
status=0
# bind-gpu.sh gives each rank the GPU of its node-local rank (CUDA_VISIBLE_DEVICES).
timeout --signal=TERM --kill-after=30 "$(( @WALL_SECONDS@ - @GRACE@ ))" \
    mpiexec -n @RANKS@ @JOBSCRIPTS@/bind-gpu.sh picard-sample @PICARD_ARGS@ \
    --checkpoint "${CHECKPOINT}" --resume --output "${OUTPUT}" --no-progress || status=$?
if [ "${status}" -eq 124 ]; then
    echo "$(date -Is) wall time nearly up: resubmitting"
    qsub "${PBS_O_WORKDIR}/@SCRIPT_NAME@"
    exit 0
fi
exit "${status}"
