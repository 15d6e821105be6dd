"""Shared helpers of the operations tests (checkpoints, bad input, process grid)."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from hpc_picard.config import RunConfig

BIN = os.path.dirname(sys.executable)
MPIEXEC = os.path.join(BIN, "mpiexec")
PICARD = os.path.join(BIN, "picard-sample")

#: a run small enough for 2 shared cores that still has several blocks to checkpoint
SMALL = dict(model="grf", dim=16, num_samples=6, blocks=6, steps_per_block=8,
             picard_iters=6, tol=0.0, seed=3)


def small_config(tmp_path, **changes) -> RunConfig:
    values = dict(SMALL, output=str(tmp_path / "out.h5"))
    values.update(changes)
    return RunConfig(**values)


def cli_args(values: dict) -> list:
    """Command-line options for a dict of RunConfig fields."""
    args = []
    for name, value in values.items():
        args += [f"--{name.replace('_', '-')}" if name != "T" else "--T", str(value)]
    return args


#: an environment in which `--model fault_models:...` (tests/) imports
TESTS_ON_PATH = dict(os.environ, PYTHONPATH=os.pathsep.join(
    [os.path.dirname(os.path.abspath(__file__))] + os.environ.get("PYTHONPATH", "").split(os.pathsep)))


def mpirun(n: int, args: list, timeout: float = 60, cwd=None, env=None) -> subprocess.CompletedProcess:
    """``mpiexec -n n picard-sample args``, bounded by ``timeout`` seconds."""
    return subprocess.run([MPIEXEC, "-n", str(n), PICARD, *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd, env=env)


def leftovers(directory) -> list:
    """Files in ``directory`` a failed run must not leave: outputs and temporaries."""
    return sorted(name for name in os.listdir(directory)
                  if name.endswith(".h5") or name.startswith(".tmp-"))


def read_samples(path) -> np.ndarray:
    import h5py
    with h5py.File(path, "r") as fh:
        return fh["samples"][...]
