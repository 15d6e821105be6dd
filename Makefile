# hpc_picard: the two commands a user needs are `make run` and `make test`; both set
# up .venv/ first. Override PYTHON to pick the interpreter, TORCH_SPEC to install a
# different torch (e.g. a CUDA build on a GPU machine).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
MPIEXEC := $(BIN)/mpiexec
# CPU build of torch for CI (installed from local wheels here); a GPU user runs
# `make install TORCH_SPEC=` and installs their own torch first. Unpinned, pip would
# pull a multi-GB CUDA build: keep this pinned. diffusers and scikit-learn (the
# `models` extra) resolve against this torch without upgrading it.
TORCH_SPEC ?= torch==2.13.0
RANKS  ?= 2
STAMP  := $(VENV)/.installed

.PHONY: install run test test-serial test-mpi bench bench-dimension bench-sweeps bench-scaling gpu-check clean help

help:
	@echo "make run      sample the default GRF target on $(RANKS) MPI ranks -> samples.h5"
	@echo "make test     the whole test suite, serial and MPI (1 to 4 ranks)"
	@echo "make bench    benchmarks (drivers/), printing numbers"
	@echo "make bench-dimension  rounds vs d on the GRF at fixed KL -> docs/figures/"
	@echo "make bench-sweeps     plain vs Anderson sweeps, constant vs noise-only guess"
	@echo "make bench-scaling    strong/weak/sample-count scaling, measured and modelled -> docs/scaling.md"
	@echo "make install  create $(VENV) with everything the above need"
	@echo "make gpu-check  GPU tests and a short GPU benchmark (needs a CUDA torch, docs/models.md)"

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[mpi-wheel,test,plot,models]' $(TORCH_SPEC)
	@touch $(STAMP)

run: install
	$(MPIEXEC) -n $(RANKS) $(BIN)/picard-sample --output samples.h5 --overwrite

test: test-serial test-mpi

test-serial: install
	$(PY) -m pytest -q -m "not mpi" tests

# Each MPI run is bounded twice: pytest-timeout inside, `timeout` around mpiexec, so a
# rank stuck in a collective cannot hang the suite.
test-mpi: install
	@for n in 1 2 3 4; do \
	  echo "== mpiexec -n $$n pytest --with-mpi"; \
	  timeout 900 $(MPIEXEC) -n $$n $(PY) -m pytest -q --with-mpi -m mpi -p no:cacheprovider tests || exit 1; \
	done

bench: install
	$(PY) drivers/bench_scores.py
	$(MPIEXEC) -n $(RANKS) $(PY) drivers/acceptance.py

# On a GPU node: `make gpu-check TORCH_SPEC=` after installing a CUDA torch (and cupy)
# into $(VENV). The GPU tests skip, and the benchmark says so, where no GPU is visible.
gpu-check: install
	$(PY) -m pytest -q -m gpu -p no:cacheprovider tests/gpu
	$(PY) drivers/gpu_bench.py

# Rounds against dimension (exact linear analysis, a few minutes on one core).
bench-dimension: install
	$(PY) drivers/dimension_scaling.py --out docs/figures

bench-sweeps: install
	$(PY) drivers/sweep_acceleration.py

# Scaling study (docs/scaling.md): one mpiexec launch of 64 ranks, emulated 20 ms score
# calls (sleep-dominated, so it fits a small machine); under 20 minutes on 2 cores.
bench-scaling: install
	nice -n 5 $(PY) drivers/scaling_study.py --max-ranks 64

clean:
	rm -rf $(VENV) samples.h5 .pytest_cache

# Operations (docs/operations.md): the plan of `make run` on $(RANKS) ranks, and a
# strong-scaling sweep of Slurm scripts as an example of jobscripts/make_sweep.py.
.PHONY: plan sweep-example
plan: install
	$(BIN)/picard-sample --dry-run --plan-ranks $(RANKS)

sweep-example: install
	$(PY) jobscripts/make_sweep.py --scheduler slurm --device cpu --mode strong \
	  --ranks 1,2,4,8,16 --ranks-per-node 16 --out sweeps/example -- --model grf --dim 4096
