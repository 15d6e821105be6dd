#!/bin/bash
# hpc_picard on CPU nodes under PBS Pro / OpenPBS: one MPI rank per core.
# A template: jobscripts/make_sweep.py fills the @...@ fields (docs/operations.md).
#PBS -N @JOB_NAME@
#PBS -l select=@NODES@:ncpus=@RANKS_PER_NODE@:mpiprocs=@RANKS_PER_NODE@
#PBS -l walltime=@TIME@
#PBS -j oe
#PBS -r y
@EXTRA_DIRECTIVES@
set -euo pipefail
cd "${PBS_O_WORKDIR}"

@ENV_SETUP@
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
# MPICH: ranks waiting in a collective sleep between polls instead of spinning
# (make_sweep.py --busy-wait leaves this out; docs/scaling.md)
@MPI_WAIT_ENV@

JOB_ID=${PBS_JOBID%%.*}
CHECKPOINT=@JOB_NAME@.ckpt.h5
OUTPUT=@JOB_NAME@-${JOB_ID}.h5
exec >> "@JOB_NAME@-${JOB_ID}.log" 2>&1

# PBS sends no warning before the wall-time limit: stop the run @GRACE@ s early and
# submit this script again; the new job resumes from the checkpoint. A job rerun after
# a node failure (-r y) resumes the same way.
echo "$(date -Is) job ${PBS_JOBID}"
status=0
timeout --signal=TERM --kill-after=30 "$(( @WALL_SECONDS@ - @GRACE@ ))" \
    mpiexec -n @RANKS@ picard-sample @PICARD_ARGS@ \
    --checkpoint "${CHECKPOINT}" --resume --output "${OUTPUT}" --no-progress || status=$?
if [ "${status}" -eq 124 ]; then
    echo "$(date -Is) wall time nearly up: resubmitting"
    qsub "${PBS_O_WORKDIR}/@SCRIPT_NAME@"
    exit 0
fi
exit "${status}"
