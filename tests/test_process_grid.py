"""The time x sample process grid: the split of P ranks into P / P_t sample groups of
P_t time ranks does not change the samples; invalid splits are clear errors."""
from __future__ import annotations

import numpy as np
import pytest
from ops_support import mpirun, small_config

from hpc_picard.config import ConfigError
from hpc_picard.parallel import Communicator, ProcessGrid, world
from hpc_picard.runner import run


def divisors(n: int) -> list:
    return [p for p in range(1, n + 1) if n % p == 0]


@pytest.mark.mpi
@pytest.mark.timeout(120)
def test_every_split_gives_the_samples_of_one_rank(tmp_path):
    """At 4 ranks: (P_t, P_s) = (4, 1), (2, 2) and (1, 4); at 2: (2, 1), (1, 2); ..."""
    comm = world()
    # tol > 0: blocks stop at different sweeps, and every sample group must stop at the
    # sweep one rank would choose for the whole batch.
    config = small_config(tmp_path, dim=256, num_samples=7, blocks=16, steps_per_block=32,
                          picard_iters=12, tol=0.05)
    results = {p: run(config.replace(time_ranks=p), comm) for p in divisors(comm.size)}
    message = ""
    if comm.rank == 0:
        serial = run(config, Communicator.self_comm())
        try:
            sweeps = serial.per_block["sweeps_per_block"]
            assert sweeps.min() < 12 and len(set(sweeps)) > 1, sweeps   # early stops happen
            for p, result in results.items():
                # The Exscan adds slice sums in another order at another P_t: round-off.
                np.testing.assert_allclose(result.samples, serial.samples, rtol=1e-12,
                                           atol=1e-12, err_msg=f"time ranks {p}")
                np.testing.assert_array_equal(result.per_block["sweeps_per_block"],
                                              serial.per_block["sweeps_per_block"])
            # Splitting samples alone changes no arithmetic: bitwise.
            np.testing.assert_array_equal(results[1].samples, serial.samples)
        except AssertionError as exc:
            message = str(exc)
    assert comm.bcast_obj(message, root=0) == ""


@pytest.mark.mpi
def test_groups_own_balanced_contiguous_sample_ranges():
    comm = world()
    for p in divisors(comm.size):
        grid = ProcessGrid.build(comm, p)
        ranges = grid.world.allgather_obj(grid.sample_range(10))
        assert grid.num_groups == comm.size // p
        assert grid.time.size == p and grid.samples.size == comm.size // p
        starts = sorted(set(ranges))
        assert starts[0][0] == 0 and starts[-1][1] == 10
        assert all(a[1] == b[0] for a, b in zip(starts, starts[1:]))
        sizes = [b - a for a, b in starts]
        assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("ranks, changes, message", [
    (4, {"time_ranks": 3}, "--time-ranks 3 must divide the number of ranks (4)"),
    (4, {"time_ranks": -2}, "--time-ranks must be non-negative"),
    (4, {"time_ranks": 4, "steps_per_block": 2},
     "4 time ranks but only 2 slices per block: use at most 2 time ranks or more --steps-per-block"),
    (8, {"time_ranks": 1, "num_samples": 4},
     "8 sample groups but only 4 samples: use fewer ranks or more --num-samples"),
])
def test_invalid_splits_are_clear_errors(tmp_path, ranks, changes, message):
    with pytest.raises(ConfigError) as info:
        small_config(tmp_path, **changes).validate(ranks)
    assert message in str(info.value)


def test_an_invalid_split_under_mpiexec_fails_on_every_rank_before_computing(tmp_path):
    out = tmp_path / "out.h5"
    result = mpirun(2, ["--dim", "16", "--time-ranks", "3", "--output", str(out)], timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("--time-ranks 3 must divide the number of ranks (2)") == 1
    assert not out.exists()


@pytest.mark.mpi
@pytest.mark.timeout(120)
def test_paradigms_window_slides_alike_for_every_split(tmp_path):
    """ParaDiGMS decides where its window slides with an allreduce-min over the
    residuals: it must span every sample group, as the PIADM stopping rule does."""
    comm = world()
    # (At 4 ranks split into 4 groups, group-local slides give samples 2e-4 apart.)
    config = small_config(tmp_path, dim=64, num_samples=12, blocks=4, steps_per_block=8,
                          sampler="paradigms", window=8, tol=0.1)
    results = {p: run(config.replace(time_ranks=p), comm) for p in divisors(comm.size)}
    message = ""
    if comm.rank == 0:
        serial = run(config, Communicator.self_comm())
        for p, result in results.items():
            if result.stats["rounds"] != serial.stats["rounds"] or not np.allclose(
                    result.samples, serial.samples, rtol=1e-12, atol=1e-12):
                message += f"time ranks {p}: rounds {result.stats['rounds']} vs {serial.stats['rounds']}; "
    assert comm.bcast_obj(message, root=0) == ""
