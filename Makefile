# hpc_picard: the two commands a user needs are `make run` and `make test`; both set
# up .venv/ first. Override PYTHON to pick the interpreter, TORCH_SPEC to install a
# different torch (e.g. a CUDA build on a GPU machine).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
MPIEXEC := $(BIN)/mpiexec
# CPU build of torch for CI (installed from local wheels here); a GPU user runs
# `make install TORCH_SPEC=` and installs their own torch first.
TORCH_SPEC ?=
RANKS  ?= 2
STAMP  := $(VENV)/.installed

.PHONY: install run test test-serial test-mpi bench bench-dimension bench-sweeps clean help

help:
	@echo "make run      sample the default GRF target on $(RANKS) MPI ranks -> samples.h5"
	@echo "make test     the whole test suite, serial and MPI (1 to 4 ranks)"
	@echo "make bench    benchmarks (drivers/), printing numbers"
	@echo "make bench-dimension  rounds vs d on the GRF at fixed KL -> docs/figures/"
	@echo "make bench-sweeps     plain vs Anderson sweeps, constant vs noise-only guess"
	@echo "make install  create $(VENV) with everything the above need"

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[mpi-wheel,test,plot]' $(TORCH_SPEC)
	@touch $(STAMP)

run: install
	$(MPIEXEC) -n $(RANKS) $(BIN)/picard-sample --output samples.h5 --overwrite

test: test-serial test-mpi

test-serial: install
	$(PY) -m pytest -q tests

# Each MPI run is bounded twice: pytest-timeout inside, `timeout` around mpiexec, so a
# rank stuck in a collective cannot hang the suite.
test-mpi: install
	@for n in 1 2 3 4; do \
	  echo "== mpiexec -n $$n pytest --with-mpi"; \
	  timeout 900 $(MPIEXEC) -n $$n $(PY) -m pytest -q --with-mpi -m mpi -p no:cacheprovider tests || exit 1; \
	done

bench: install
	$(PY) drivers/acceptance.py

# Rounds against dimension (exact linear analysis, a few minutes on one core).
bench-dimension: install
	$(PY) drivers/dimension_scaling.py --out docs/figures

bench-sweeps: install
	$(PY) drivers/sweep_acceleration.py

clean:
	rm -rf $(VENV) samples.h5 .pytest_cache
