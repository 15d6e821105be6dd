"""picard-sample under mpiexec (spawned from a serial test, bounded by a timeout)."""
import subprocess
import sys

import h5py
import numpy as np
import pytest

from conftest import tool

ARGS = ["--dim", "64", "--num-samples", "6", "--blocks", "3", "--steps-per-block", "7",
        "--picard-iters", "7", "--tol", "0", "--quiet"]


def mpirun(n, *args, timeout=180):
    return subprocess.run([tool("mpiexec"), "-n", str(n), *args], capture_output=True,
                          text=True, timeout=timeout)


def test_ranks_give_the_same_file(tmp_path):
    outs = {}
    for n in (1, 3):
        out = tmp_path / f"p{n}.h5"
        res = mpirun(n, tool("picard-sample"), *ARGS, "--output", str(out))
        assert res.returncode == 0, res.stderr
        with h5py.File(out) as fh:
            outs[n] = fh["samples"][()]
            assert fh.attrs["n_ranks"] == n
    np.testing.assert_allclose(outs[3], outs[1], rtol=1e-12, atol=1e-12)


def test_more_ranks_than_slices_is_a_clear_error(tmp_path):
    res = mpirun(3, tool("picard-sample"), "--dim", "16", "--steps-per-block", "2",
                 "--output", str(tmp_path / "x.h5"))
    assert res.returncode != 0
    assert res.stderr.count("3 time ranks but only 2 slices per block") == 1   # rank 0 only
    assert not list(tmp_path.iterdir())


def test_exception_on_one_rank_aborts_all(tmp_path):
    """Rank 1 raises while rank 0 waits in a collective: the job must end, non-zero,
    with rank 1's traceback, instead of hanging."""
    script = tmp_path / "boom.py"
    script.write_text(
        "from mpi4py import MPI\n"
        "from hpc_picard.parallel import install_abort_handler\n"
        "install_abort_handler()\n"
        "if MPI.COMM_WORLD.Get_rank() == 1:\n"
        "    raise RuntimeError('boom on purpose')\n"
        "MPI.COMM_WORLD.Barrier()\n")
    res = mpirun(2, sys.executable, str(script), timeout=60)
    assert res.returncode != 0
    assert "[rank 1]" in res.stderr and "boom on purpose" in res.stderr

