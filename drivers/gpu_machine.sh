#!/usr/bin/env bash
# The lent GPU machine's whole job (issue 12), in one call of the device tool's `run`
# from the repository root, with the wheels of `make gpu-wheels` carried in .whl/
# (docs/gpu.md gives the exact call):
#
#     bash drivers/gpu_machine.sh
#
# 1. install: the carried wheels (diffusers, pytest-mpi, the mpich library; nothing can
#    be downloaded there) into the machine's python3, and the project with --no-deps so
#    that our torch pin does not replace its CUDA torch;
# 2. check: `make gpu-check`'s commands (drivers/gpu_check.sh) on that python3;
# 3. study: drivers/gpu_study.py on one rank (batch costs, wall clock, sweep breakdown);
# 4. mpi: the sweep breakdown again on two ranks sharing the GPU (the MPI share).
#
# Every step runs under its own timeout, sized so that the whole job ends within about
# 8 minutes and a second call still fits in the 15 minutes of device time; the study
# also skips the runs its --budget-s would not fit. Results go to $OUT (./gpu-out
# without one): gpu_machine.log (all output), gpu_study.json and its CSV tables,
# gpu_study_2ranks.json. STEPS="study mpi" (say) reruns a subset; install always runs.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_machine.log") 2>&1
tee_pid=$!
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
STEPS=${STEPS:-check study mpi}
T_INSTALL=${T_INSTALL:-90}
T_CHECK=${T_CHECK:-140}
T_STUDY=${T_STUDY:-220}
T_MPI=${T_MPI:-60}
DEVICE=${DEVICE:-cuda}          # DEVICE=cpu STUDY_ARGS=--tiny: a rehearsal without a GPU
STUDY_ARGS=${STUDY_ARGS:-}
# the study stops starting runs this long before its timeout, so its JSON is complete
BUDGET=${BUDGET:-$((T_STUDY - 40))}
status=0

finish() {          # finish STATUS: let tee write the log's last lines, then exit
    exec 1>&- 2>&-
    wait "$tee_pid" 2>/dev/null
    exit "$1"
}

step() {            # step NAME LIMIT COMMAND...: run under a timeout, log how it ended
    local name=$1 limit=$2 began=$SECONDS rc
    shift 2
    echo "== $name (limit ${limit} s): $*"
    timeout --kill-after=10 "$limit" "$@"
    rc=$?
    echo "== $name: exit $rc after $((SECONDS - began)) s$([ $rc -eq 124 ] && echo ' (timed out)')"
    [ $rc -eq 0 ] || status=1
    return $rc
}

install_everything() {
    local wheels=(.whl/*.whl)
    [ -e "${wheels[0]}" ] || { echo "no wheels in .whl/: run 'make gpu-wheels' and carry .whl"; return 1; }
    # Into the interpreter's own environment (root on a throwaway machine): mpich's
    # libmpi then lands in <prefix>/lib, where mpi4py looks for it.
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --ignore-installed \
        "${wheels[@]}" || return 1
    if ! "$PY" -c "from mpi4py import MPI" 2>/dev/null && compgen -G ".whl/fallback/*.whl" >/dev/null; then
        echo "the machine's mpi4py cannot load an MPI library: installing the carried mpi4py"
        "$PY" -m pip install -q --no-index --no-deps --no-compile --force-reinstall .whl/fallback/*.whl || return 1
    fi
    # A setuptools older than 77 cannot read our pyproject's license field: then the
    # tree is used from PYTHONPATH (set below for every step), which is all it needs.
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e . ||
        echo "editable install failed: using the tree from PYTHONPATH"
}

report_versions() {
    "$PY" - <<'EOF'
import diffusers, pytest_mpi, torch, hpc_picard
from mpi4py import MPI
print("mpi:", MPI.Get_library_version().strip().splitlines()[0])
print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu",
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
print("diffusers", diffusers.__version__, "hpc_picard", hpc_picard.__version__, hpc_picard.__file__)
EOF
}

echo "== $(date -u +%FT%TZ) on $(hostname): steps '$STEPS', out $OUT"
nvidia-smi --query-gpu=name,memory.total,memory.used,clocks.sm,driver_version --format=csv || true
export PY
export -f install_everything          # so that `timeout` can run it in a child bash
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
step install "$T_INSTALL" bash -c install_everything && report_versions ||
    { echo "install failed: nothing else can run"; finish 1; }
MPIEXEC=$("$PY" -c 'import os, sys; print(os.path.join(sys.prefix, "bin", "mpiexec"))')
[ -x "$MPIEXEC" ] || MPIEXEC=$(command -v mpiexec)
echo "mpiexec: $MPIEXEC"

for name in $STEPS; do
    case $name in
    check) step check "$T_CHECK" env PY="$PY" MPIEXEC="$MPIEXEC" bash drivers/gpu_check.sh ;;
    study) step study "$T_STUDY" "$PY" drivers/gpu_study.py --device "$DEVICE" $STUDY_ARGS \
               --budget-s "$BUDGET" --out "$OUT/gpu_study.json" ;;
    mpi)   step mpi "$T_MPI" "$MPIEXEC" -n 2 "$PY" drivers/gpu_study.py --device "$DEVICE" \
               $STUDY_ARGS --parts breakdown --models ddpm --no-csv --budget-s $((T_MPI - 20)) \
               --out "$OUT/gpu_study_2ranks.json" ;;
    *)     echo "unknown step $name (choose from: check study mpi)"; status=1 ;;
    esac
done
echo "== done, status $status; files in $OUT:"
ls -l "$OUT"
finish $status
