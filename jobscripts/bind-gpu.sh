#!/bin/bash
# Give this MPI rank one GPU: the one whose index is the rank's position on its node.
# Usage: mpiexec ... bind-gpu.sh picard-sample ...   (or srun ... bind-gpu.sh ...)
# The node-local rank comes from whichever launcher started us; if the scheduler
# already restricted the visible GPUs to a list, the rank takes its entry of that list.
local_rank=${SLURM_LOCALID:-${OMPI_COMM_WORLD_LOCAL_RANK:-${MPI_LOCALRANKID:-${PALS_LOCAL_RANKID:-${PMI_LOCAL_RANK:-0}}}}}
if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
    IFS=, read -r -a visible <<< "${CUDA_VISIBLE_DEVICES}"
    if [ "${#visible[@]}" -gt 1 ]; then
        export CUDA_VISIBLE_DEVICES=${visible[$(( local_rank % ${#visible[@]} ))]}
    fi
else
    export CUDA_VISIBLE_DEVICES=${local_rank}
fi
exec "$@"
