"""The performance model's collective parts under MPI: the cost profile and the
--time-ranks auto choice are the same on every rank."""
from __future__ import annotations

import pytest

from hpc_picard.config import TIME_RANKS_AUTO, RunConfig
from hpc_picard.parallel import world
from hpc_picard.perfmodel import build_profile, resolve_auto_time_ranks, time_rank_choices

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(120)]


def test_profile_measures_every_collective_at_every_size(tmp_path_factory):
    comm = world()
    directory = comm.bcast_obj(str(tmp_path_factory.mktemp("io")) if comm.rank == 0 else None)
    profile = build_profile(RunConfig(dim=16), comm, byte_counts=(8, 4096), rows_list=[1, 4, 16],
                            directory=directory, repeats=3)
    everywhere = comm.allgather_obj(profile.to_json())
    assert all(text == everywhere[0] for text in everywhere)
    assert profile.eval.rows == [1, 4, 16] and all(s > 0 for s in profile.eval.seconds)
    sizes = [2 ** k for k in range(1, comm.size.bit_length()) if 2 ** k <= comm.size]
    if comm.size == 1:
        assert profile.comm == {}
    for name in ("exscan", "allreduce", "bcast", "allgather", "sync"):
        if comm.size > 1:
            cost = profile.comm[name]
            assert cost.sizes == sizes
            assert all(a >= 0 for a in cost.alpha) and all(b >= 0 for b in cost.beta)


def test_auto_split_is_one_valid_choice_on_every_rank(tmp_path):
    comm = world()
    config = RunConfig(dim=16, num_samples=2, blocks=2, steps_per_block=8,
                       time_ranks=TIME_RANKS_AUTO, output=str(tmp_path / "x.h5"))
    chosen = resolve_auto_time_ranks(config.validate(comm.size), comm.size, comm)
    picks = comm.allgather_obj(chosen.time_ranks)
    assert len(set(picks)) == 1
    assert picks[0] in time_rank_choices(config, comm.size)
