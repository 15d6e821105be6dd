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

.PHONY: install run test test-serial test-mpi test-slurm bench bench-dimension bench-sweeps bench-scaling bench-wavefront gpu-check clean help
.PHONY: gpu-study gpu-wheels

help:
	@echo "make run      sample the default GRF target on $(RANKS) MPI ranks -> samples.h5"
	@echo "make test     the whole test suite, serial and MPI (1 to 4 ranks)"
	@echo "make test-slurm  the job scripts under a private one-node Slurm (root, slurm-wlm + munge)"
	@echo "make bench    benchmarks (drivers/), printing numbers"
	@echo "make bench-dimension  rounds vs d on the GRF at fixed KL -> docs/figures/"
	@echo "make bench-sweeps     plain vs Anderson sweeps, constant vs noise-only guess"
	@echo "make bench-wavefront  wavefront PIADM vs sequential, blockwise piadm and paradigms (GRF)"
	@echo "make bench-scaling    strong/weak/sample-count scaling, measured and modelled -> docs/scaling.md"
	@echo "make install  create $(VENV) with everything the above need"
	@echo "make gpu-check  GPU tests and a short GPU benchmark (needs a CUDA torch, docs/models.md)"
	@echo "make gpu-study  batch costs, same-grid wall clock, sweep breakdown -> gpu_study.json (docs/gpu.md)"
	@echo "make gpu-wheels the wheels the lent GPU machine lacks -> .whl/ (docs/gpu.md)"

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[mpi-wheel,test,plot,models,fast]' $(TORCH_SPEC)
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
	$(PY) drivers/bench_engine.py

# On a GPU node: `make gpu-check TORCH_SPEC=` after installing a CUDA torch (and cupy)
# into $(VENV). The GPU tests skip, and the benchmark says so, where no GPU is visible.
# Without a venv (the lent GPU machine, docs/gpu.md): `make gpu-check SETUP= PY=python3
# MPIEXEC=mpiexec`.
SETUP ?= install
gpu-check: $(SETUP)
	PY=$(PY) MPIEXEC=$(MPIEXEC) bash drivers/gpu_check.sh

# The GPU study (docs/gpu.md): CI sizes on the CPU by default; on a GPU
# `make gpu-study GPU_STUDY_ARGS="--device cuda"`.
GPU_STUDY_ARGS ?= --device cpu --tiny
gpu-study: $(SETUP)
	$(PY) drivers/gpu_study.py $(GPU_STUDY_ARGS) --out gpu_study.json

# The wheels the lent GPU machine lacks (python 3.12, x86-64; it cannot download), into
# .whl/ (git-ignored), carried there by the device tool. mpi4py goes to .whl/fallback:
# the machine has its own and drivers/gpu_machine.sh installs this one only if the
# machine's cannot load the mpich library.
GPU_WHEELS ?= diffusers==0.42.1 pytest-mpi==0.6 mpich==5.0.2
GPU_FALLBACK_WHEELS ?= mpi4py==4.1.2
WHEEL_TARGET := --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
gpu-wheels: install
	rm -rf .whl && mkdir -p .whl/fallback
	$(PY) -m pip download -q --no-deps $(WHEEL_TARGET) -d .whl $(GPU_WHEELS)
	$(PY) -m pip download -q --no-deps $(WHEEL_TARGET) -d .whl/fallback $(GPU_FALLBACK_WHEELS)
	@ls -l .whl .whl/fallback

# Rounds against dimension (exact linear analysis, a few minutes on one core).
bench-dimension: install
	$(PY) drivers/dimension_scaling.py --out docs/figures

bench-sweeps: install
	$(PY) drivers/sweep_acceleration.py

# Wavefront PIADM on the GRF (docs/results.md), 64 samples at d = 1024 and 4096.
bench-wavefront: install
	$(PY) drivers/wavefront_grf.py --dims 1024 4096

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

# The job scripts under a real Slurm: a private one-node cluster (munge, slurmctld,
# slurmd in a temp folder, stopped on exit) runs a 2-rank job, a refused singleton
# launch, the GPU script's binding, the 1-2 rank sweep and a requeue that resumes
# (docs/operations.md). Skips, saying so, where Slurm is not installed; needs root.
.PHONY: test-slurm
test-slurm: install
	timeout 900 tests/slurm/cluster.sh $(PY) -m pytest -q -s -p no:cacheprovider tests/slurm/check_jobs.py
