#!/bin/bash
# A private one-node Slurm cluster for the job-script tests (docs/operations.md).
#
#   tests/slurm/cluster.sh COMMAND [ARGS...]
#
# starts munged, slurmctld and slurmd with every file they use (key, config, spool,
# state, logs, sockets) in a fresh temp folder, runs COMMAND with SLURM_CONF pointing
# at that cluster, then stops the daemons and removes the folder, whatever happens
# (the EXIT trap). The exit status is COMMAND's. Nothing system-wide is read or
# written: the daemons listen on free ports of 127.0.0.1 and munged on a socket in the
# temp folder, so a site's own Slurm or munge, if any, is left alone.
#
# Without the Slurm and munge binaries it prints why and exits 0 (a skip); .ci/run
# installs them. It needs root (slurmd starts job steps as the submitting user).
#
# Environment seen by COMMAND: SLURM_CONF, PICARD_SLURM_DIR (the temp folder; logs are
# in $PICARD_SLURM_DIR/log), PICARD_SLURM_PARTITION.
set -euo pipefail

missing=()
for tool in munged slurmctld slurmd sbatch srun scontrol squeue; do
    command -v "${tool}" > /dev/null 2>&1 || [ -x "/usr/sbin/${tool}" ] || missing+=("${tool}")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "test-slurm: SKIPPED: no Slurm here (missing: ${missing[*]});" \
         "install slurm-wlm and munge (Debian: apt-get install slurm-wlm munge) to run it"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "test-slurm: SKIPPED: slurmd must run as root to start jobs (run as root, as CI does)"
    exit 0
fi
[ "$#" -gt 0 ] || { echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; }
export PATH="${PATH}:/usr/sbin:/sbin"

DIR=$(mktemp -d "${TMPDIR:-/tmp}/picard-slurm.XXXXXX")
mkdir -p "${DIR}"/{munge,state,spool,log,run}
# munged insists that everyone may reach its socket, and only its owner write there
chmod 755 "${DIR}" "${DIR}"/munge

stop() {
    local status=$?
    set +e
    # Jobs first, so that slurmd does not leave job steps behind.
    if [ -f "${DIR}/slurm.conf" ] && [ -f "${DIR}/run/slurmctld.pid" ]; then
        SLURM_CONF="${DIR}/slurm.conf" scancel --full --quiet --user "$(id -un)" 2> /dev/null
    fi
    for pidfile in "${DIR}/run/slurmd.pid" "${DIR}/run/slurmctld.pid" "${DIR}/munge/munged.pid"; do
        [ -f "${pidfile}" ] || continue
        pid=$(cat "${pidfile}")
        kill -TERM "${pid}" 2> /dev/null || continue
        for _ in $(seq 50); do kill -0 "${pid}" 2> /dev/null || break; sleep 0.1; done
        kill -KILL "${pid}" 2> /dev/null
    done
    if [ "${status}" -ne 0 ] || [ -n "${PICARD_SLURM_KEEP_LOGS:-}" ]; then
        for log in "${DIR}"/log/*.log; do
            [ -s "${log}" ] || continue
            echo "---- last lines of ${log##*/}"
            tail -n 30 "${log}"
        done
    fi
    rm -rf "${DIR}"
    exit "${status}"
}
trap stop EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# munge: its own key (1 KiB of random bytes) and socket; nothing under /etc or /run.
dd if=/dev/urandom of="${DIR}/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "${DIR}/munge/munge.key"
munged --key-file="${DIR}/munge/munge.key" --socket="${DIR}/munge/munge.socket" \
       --pid-file="${DIR}/munge/munged.pid" --log-file="${DIR}/log/munged.log" \
       --seed-file="${DIR}/munge/munged.seed" --num-threads=2

# The node as slurmd sees the hardware (CPUs, sockets, cores, memory), under this
# machine's host name; jobs share it with whatever else runs here, so nothing is
# enforced (no cgroups): the cluster only places and launches.
NODE=$(hostname -s)
HARDWARE=$(slurmd -C | head -n 1 | sed -e 's/^NodeName=[^ ]* //')
CTLD_PORT=$(free_port)
SLURMD_PORT=$(free_port)
cat > "${DIR}/slurm.conf" <<EOF
ClusterName=picard
SlurmctldHost=${NODE}(127.0.0.1)
SlurmctldPort=${CTLD_PORT}
SlurmdPort=${SLURMD_PORT}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also how long a requeued job waits before it may start again
# (default 120 s): short, so that the requeue test takes seconds.
AuthInfo=socket=${DIR}/munge/munge.socket,cred_expire=10
StateSaveLocation=${DIR}/state
SlurmdSpoolDir=${DIR}/spool
SlurmctldPidFile=${DIR}/run/slurmctld.pid
SlurmdPidFile=${DIR}/run/slurmd.pid
SlurmctldLogFile=${DIR}/log/slurmctld.log
SlurmdLogFile=${DIR}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=${DIR}/plugstack.conf
# Two stand-in GPUs: enough for --gpus-per-node and for Slurm to set
# CUDA_VISIBLE_DEVICES, which is what the GPU job scripts' bind-gpu.sh works from.
GresTypes=gpu
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=2
ReturnToService=2
MinJobAge=600
KillWait=5
InactiveLimit=0
MessageTimeout=20
NodeName=${NODE} NodeAddr=127.0.0.1 ${HARDWARE} Gres=gpu:2 State=UNKNOWN
PartitionName=picard Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP
EOF
: > "${DIR}/plugstack.conf"
# gres.conf wants character devices: two links to harmless ones stand in (nothing opens
# them; without cgroups Slurm only counts them and numbers CUDA_VISIBLE_DEVICES).
mkdir -p "${DIR}/dev" && ln -s /dev/null "${DIR}/dev/gpu0" && ln -s /dev/zero "${DIR}/dev/gpu1"
echo "NodeName=${NODE} Name=gpu File=${DIR}/dev/gpu[0-1]" > "${DIR}/gres.conf"
export SLURM_CONF="${DIR}/slurm.conf" PICARD_SLURM_DIR="${DIR}" PICARD_SLURM_PARTITION=picard

slurmctld -i
slurmd -N "${NODE}"

# Ready when the node is idle (slurmd registered with slurmctld).
for _ in $(seq 60); do
    state=$(sinfo --noheader --nodes "${NODE}" --format %T 2> /dev/null || true)
    [ "${state}" = "idle" ] && break
    sleep 1
done
if [ "${state:-}" != "idle" ]; then
    echo "test-slurm: the private cluster did not come up (node state: '${state:-none}')" >&2
    exit 1
fi
echo "test-slurm: private Slurm cluster up in ${DIR} (node ${NODE}: ${HARDWARE})"
"$@"
