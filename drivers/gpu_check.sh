#!/usr/bin/env bash
# `make gpu-check`: the GPU tests on one rank, then on two ranks sharing one GPU, then a
# short benchmark (drivers/gpu_bench.py). Without a GPU every test skips and the
# benchmark says so. PY and MPIEXEC name the interpreter and the launcher: the Makefile
# passes its venv's, drivers/gpu_machine.sh the GPU machine's own python3 and the
# mpiexec of the mpich wheel it installed. Exit status 1 if any of the three failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
MPIEXEC=${MPIEXEC:-mpiexec}
status=0
# Without a GPU the test modules skip whole, and pytest then exits 5 (no tests
# collected): a pass here, a failure where a GPU is visible.
gpu=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
tests_passed() { [ "$1" -eq 0 ] || { [ "$1" -eq 5 ] && [ "$gpu" = 0 ]; }; }
echo "== gpu tests, one rank (GPU visible: $gpu)"
"$PY" -m pytest -q -rfEs -m "gpu and not mpi" -p no:cacheprovider tests/gpu
tests_passed $? || status=1
echo "== gpu tests, two ranks on one GPU"
# `timeout` around mpiexec as in `make test-mpi`: a rank stuck in a collective cannot hang
timeout 300 "$MPIEXEC" -n 2 "$PY" -m pytest -q -rfEs --with-mpi -m "gpu and mpi" \
    -p no:cacheprovider tests/gpu
tests_passed $? || status=1
echo "== gpu benchmark"
"$PY" drivers/gpu_bench.py || status=1
exit $status
