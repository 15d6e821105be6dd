"""The real thing: SIGKILL one rank of an MPI run partway, check that the whole job
ends and leaves no output, resume it, and compare with an uninterrupted run."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import h5py
import numpy as np
import pytest
from ops_support import MPIEXEC, PICARD, cli_args, leftovers, mpirun, read_samples

RUN = dict(model="grf", dim=64, num_samples=12, blocks=14, steps_per_block=16,
           picard_iters=8, tol=0.0, seed=5)


def job_processes(marker: str) -> dict:
    """pid -> argv of every process whose command line mentions ``marker``."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                argv = [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
        except OSError:
            continue
        if any(marker in a for a in argv):
            found[int(entry)] = argv
    return found


def next_block(path) -> int:
    """The checkpoint's next block, or -1 while there is none (or it is being replaced)."""
    try:
        with h5py.File(path, "r") as fh:
            return int(fh.attrs["next_block"])
    except (OSError, KeyError):
        return -1


@pytest.mark.timeout(240)
def test_sigkill_one_rank_then_resume(tmp_path):
    ck = str(tmp_path / "ck.h5")
    out = str(tmp_path / "out.h5")
    args = cli_args(RUN) + ["--checkpoint", ck, "--output", out, "--quiet"]
    job = subprocess.Popen([MPIEXEC, "-n", "2", PICARD, *args], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, start_new_session=True)
    killed_at = -1
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and job.poll() is None:
            killed_at = next_block(ck)
            if killed_at >= 3:
                break
            time.sleep(0.01)
        assert job.poll() is None, "the run ended before it could be killed"
        assert 3 <= killed_at < RUN["blocks"]
        ranks = [pid for pid, argv in job_processes(ck).items()
                 if "mpiexec" not in os.path.basename(argv[0])]
        assert len(ranks) == 2, job_processes(ck)
        os.kill(ranks[-1], signal.SIGKILL)     # a node dies under one rank
        job.wait(timeout=60)                   # mpiexec must take the others down
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
    assert job.returncode != 0
    time.sleep(0.5)
    assert job_processes(ck) == {}, "processes of the killed job are still running"
    assert not os.path.exists(out), "an interrupted run left an output file"
    assert 3 <= next_block(ck) < RUN["blocks"]
    ck3 = str(tmp_path / "ck3.h5")
    shutil.copyfile(ck, ck3)

    reference = mpirun(2, cli_args(RUN) + ["--output", str(tmp_path / "ref.h5"), "--quiet"])
    assert reference.returncode == 0, reference.stderr
    resumed = mpirun(2, args + ["--resume"])
    assert resumed.returncode == 0, resumed.stderr
    ref = read_samples(tmp_path / "ref.h5")
    np.testing.assert_array_equal(read_samples(out), ref)
    with h5py.File(out, "r") as fh, h5py.File(tmp_path / "ref.h5", "r") as fr:
        assert fh["stats"].attrs["rounds"] == fr["stats"].attrs["rounds"]
        assert fh["stats"].attrs["restarts"] == 1
        np.testing.assert_array_equal(fh["stats/sweeps_per_block"][...],
                                      fr["stats/sweeps_per_block"][...])

    # The same checkpoint at another rank count (3 ranks) agrees to round-off.
    other = str(tmp_path / "other.h5")
    resumed3 = mpirun(3, cli_args(RUN) + ["--checkpoint", ck3, "--output", other, "--quiet",
                                          "--resume"])
    assert resumed3.returncode == 0, resumed3.stderr
    np.testing.assert_allclose(read_samples(other), ref, rtol=1e-12, atol=1e-12)
    assert leftovers(tmp_path) == ["ck.h5", "ck3.h5", "other.h5", "out.h5", "ref.h5"]
