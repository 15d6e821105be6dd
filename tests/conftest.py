"""Shared fixtures. MPI tests (marked ``mpi``) run under
``mpiexec -n N python -m pytest --with-mpi -m mpi``; serial runs use ``-m "not mpi"``."""
import os
import shutil
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


def tool(name: str) -> str:
    """A console script of this environment (mpiexec, picard-sample)."""
    path = os.path.join(BIN, name)
    return path if os.path.exists(path) else shutil.which(name)


@pytest.fixture
def small_config():
    from hpc_picard.config import RunConfig
    return RunConfig(model="grf", dim=64, num_samples=6, blocks=3, steps_per_block=7,
                     picard_iters=7, tol=0.0, seed=3)


@pytest.fixture
def cli_tmp(tmp_path, monkeypatch):
    """Run the CLI in-process inside tmp_path. The CLI installs an MPI abort hook as
    sys.excepthook: keep it out of pytest."""
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.chdir(tmp_path)
    return tmp_path
