"""Rank-count invariance: run under ``mpiexec -n N python -m pytest --with-mpi -m mpi``.

Every rank runs the parallel job on COMM_WORLD and rank 0 compares it with the same job
on a one-rank communicator; the verdict is broadcast so all ranks assert the same.
"""
import numpy as np
import pytest
from mpi4py import MPI

from hpc_picard.config import RunConfig
from hpc_picard.parallel import Communicator, balanced_range, world
from hpc_picard.runner import run

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(240)]


def agree(ok: bool, message: str = ""):
    """Assert on every rank with rank 0's verdict (so no rank waits on a failed one)."""
    ok, message = MPI.COMM_WORLD.bcast((bool(ok), message), root=0)
    assert ok, message


def compare_with_serial(cfg: RunConfig, rtol: float):
    comm = world()
    parallel = run(cfg, comm)
    if comm.rank == 0:
        serial = run(cfg, Communicator.self_comm())
        err = np.abs(parallel.samples - serial.samples).max() / np.abs(serial.samples).max()
        same_sweeps = np.array_equal(parallel.per_block["sweeps_per_block"],
                                     serial.per_block["sweeps_per_block"])
        ok = err <= rtol and same_sweeps and parallel.samples.shape == serial.samples.shape
        agree(ok, f"relative difference {err:.3g}, sweeps {parallel.per_block['sweeps_per_block']}"
                  f" vs {serial.per_block['sweeps_per_block']}")
    else:
        agree(parallel.samples is None, "only rank 0 holds the samples")


@pytest.mark.parametrize("model", ["grf", "gmm"])
def test_piadm_exact_sweeps_independent_of_ranks(model):
    # 7 slices per block: not divisible by 2, 3 or 4 ranks
    cfg = RunConfig(model=model, dim=16, num_samples=5, blocks=3, steps_per_block=7,
                    picard_iters=7, tol=0.0, seed=2, gmm_components=3, gmm_radius=3.0)
    compare_with_serial(cfg, 1e-12)


def test_piadm_tolerance_decided_collectively():
    cfg = RunConfig(model="grf", dim=16, num_samples=4, blocks=4, steps_per_block=9,
                    picard_iters=9, tol=1e-2, seed=5)
    compare_with_serial(cfg, 1e-12)


def test_sequential_splits_samples():
    cfg = RunConfig(model="grf", dim=16, num_samples=7, blocks=2, steps_per_block=5,
                    sampler="sequential-sde", seed=1)
    compare_with_serial(cfg, 1e-14)


def test_collectives():
    comm = world()
    local = np.full((2, 3), float(comm.rank + 1))
    offset = comm.exscan_sum(local)
    expected = sum(r + 1 for r in range(comm.rank))       # 0 on rank 0
    ok = np.all(offset == expected)
    total = comm.allreduce_sum(local)
    ok &= np.all(total == comm.size * (comm.size + 1) / 2)
    ok &= comm.allreduce_max(float(comm.rank)) == comm.size - 1
    rows = comm.gather_rows(np.full((comm.rank + 1, 2), comm.rank))
    if comm.rank == 0:
        ok &= rows.shape == (comm.size * (comm.size + 1) // 2, 2)
        ok &= list(rows[:, 0]) == [r for r in range(comm.size) for _ in range(r + 1)]
    agree(all(comm.comm.allgather(bool(ok))), "collective results")


def test_balanced_ranges_cover_exactly():
    for total in range(0, 20):
        for parts in range(1, 6):
            ranges = [balanced_range(total, parts, i) for i in range(parts)]
            assert ranges[0][0] == 0 and ranges[-1][1] == total
            assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
            sizes = [b - a for a, b in ranges]
            assert max(sizes) - min(sizes) <= 1
