"""Checkpoint and restart on several ranks: bitwise at the same rank count, to 1e-12
at another (mpiexec -n N python -m pytest --with-mpi -m mpi)."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from ops_support import small_config

from hpc_picard.checkpoint import CheckpointError
from hpc_picard.parallel import Communicator, world
from hpc_picard.runner import run

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(120)]


class Interrupted(Exception):
    pass


@pytest.fixture
def shared_dir():
    """One temporary directory for every rank, removed by rank 0 at the end."""
    comm = world()
    path = tempfile.mkdtemp(prefix="picard-ck-") if comm.rank == 0 else None
    path = Path(comm.bcast_obj(path, root=0))
    yield path
    comm.barrier()
    if comm.rank == 0:
        shutil.rmtree(path, ignore_errors=True)


def verdict(comm, check) -> str:
    """Run ``check`` on rank 0 and share its failure message ('' when it passed)."""
    message = ""
    if comm.rank == 0:
        try:
            check()
        except AssertionError as exc:
            message = str(exc) or "assertion failed"
    return comm.bcast_obj(message, root=0)


@pytest.mark.parametrize("time_ranks", [0, 1])   # all ranks on time; one group per rank
def test_resume_on_the_same_and_on_one_rank(shared_dir, time_ranks):
    comm = world()
    reference = run(small_config(shared_dir, time_ranks=time_ranks), comm)
    config = small_config(shared_dir, checkpoint=str(shared_dir / "ck.h5"), time_ranks=time_ranks)

    def stop(index, stats):
        if index == 2:
            raise Interrupted
    with pytest.raises(Interrupted):
        run(config, comm, on_block=stop)
    resumed = run(config, comm, resume=True)
    # another rank count: rank 0 alone continues from the same checkpoint
    alone = run(config, Communicator.self_comm(), resume=True) if comm.rank == 0 else None

    def check():
        np.testing.assert_array_equal(resumed.samples, reference.samples)
        np.testing.assert_allclose(alone.samples, reference.samples, rtol=1e-12, atol=1e-12)
        assert resumed.stats["rounds"] == reference.stats["rounds"]
        assert resumed.stats["evaluations"] == reference.stats["evaluations"]
        np.testing.assert_array_equal(resumed.per_block["sweeps_per_block"],
                                      reference.per_block["sweeps_per_block"])
        assert resumed.stats["restarts"] == 1
    message = verdict(comm, check)
    assert message == ""


def interrupted_run(config, comm, after_blocks: int):
    def stop(index, stats):
        if index + 1 == after_blocks:
            raise Interrupted
    with pytest.raises(Interrupted):
        run(config, comm, on_block=stop)


def test_a_truncated_checkpoint_is_refused_on_every_rank(shared_dir):
    comm = world()
    config = small_config(shared_dir, checkpoint=str(shared_dir / "ck.h5"))
    interrupted_run(config, comm, after_blocks=1)
    comm.barrier()
    if comm.rank == 0:
        os.truncate(config.checkpoint, os.path.getsize(config.checkpoint) // 3)
    comm.barrier()
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        run(config, comm, resume=True)


def test_a_changed_configuration_is_refused_on_every_rank(shared_dir):
    comm = world()
    config = small_config(shared_dir, checkpoint=str(shared_dir / "ck.h5"))
    interrupted_run(config, comm, after_blocks=1)
    with pytest.raises(CheckpointError, match=r"blocks \(checkpoint 6, now 7\)"):
        run(config.replace(blocks=7), comm, resume=True)
