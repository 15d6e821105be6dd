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
    # No list from the scheduler: the node's GPUs round-robin, as --device cuda shares
    # them when there are more ranks than GPUs (a rank index past the last GPU would
    # leave that rank with none); without nvidia-smi, the rank's own index.
    gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
    export CUDA_VISIBLE_DEVICES=$(( ${gpus:-0} > 0 ? local_rank % ${gpus:-1} : local_rank ))
fi
exec "$@"
