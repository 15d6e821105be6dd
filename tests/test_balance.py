"""Work stealing of score evaluations (samplers/balance.py): every row scored exactly
once, into its own place, whoever scores it; the samples of --balance on equal those of
--balance off bit for bit; the rules that turn it on."""
import time

import numpy as np
import pytest

from hpc_picard.arrays import Backend
from hpc_picard.config import RunConfig
from hpc_picard.errors import ConfigError
from hpc_picard.parallel import Communicator
from hpc_picard.runner import run
from hpc_picard.samplers import base
from hpc_picard.samplers.balance import ScoreBalancer

S, D = 3, 5


def fake_score(states, times):
    """A score that depends on the state and the time of its row only."""
    return 2.0 * states + times[:, None, None]


def round_jobs(rank: int, round_index: int):
    """Jobs of a rank in one round: two runs of rows, some empty, the sizes varying by
    rank and round; the states encode (rank, round, row) and the times are unique."""
    jobs, row = [], 0
    for part, size in enumerate(((rank + round_index) % 4 * 3, (rank * 5 + round_index) % 7)):
        states = np.empty((size, S, D))
        times = np.empty(size)
        for j in range(size):
            states[j] = 1000 * rank + 100 * round_index + row
            times[j] = rank + 0.01 * round_index + 1e-4 * row
            row += 1
        jobs.append((states, times, np.full((size, S, D), np.nan)))
    return jobs


@pytest.mark.mpi
@pytest.mark.timeout(120)
def test_stolen_rows_are_scored_once_into_their_places():
    from mpi4py import MPI
    world = Communicator(MPI.COMM_WORLD)
    scored = []

    def evaluate(states, times, out):
        # rank 0 is slow, so the others steal from it whenever they run out
        if world.rank == 0:
            time.sleep(0.004 * states.shape[0])
        scored.extend(times.tolist())
        out[...] = fake_score(states, times)

    balancer = ScoreBalancer(world, evaluate, Backend(np), np.float64, (S, D), rows_per_call=1)
    correct, expected = True, []
    for round_index in range(5):
        jobs = round_jobs(world.rank, round_index)
        balancer.score(jobs)
        for states, times, out in jobs:
            correct &= bool(np.array_equal(out, fake_score(states, times)))
            expected.extend(times.tolist())
    everything = world.allgather_obj((correct, sorted(scored), sorted(expected),
                                      balancer.given, balancer.taken))
    assert all(ok for ok, *_ in everything)
    # every row of every rank scored exactly once, somewhere
    assert sorted(t for _, s, *_ in everything for t in s) == sorted(
        t for _, _, e, *_ in everything for t in e)
    given, taken = sum(g for *_, g, _ in everything), sum(t for *_, t in everything)
    assert given == taken
    if world.size > 1:
        assert everything[0][3] > 0         # the slow rank handed rows to its thief


SMALL = dict(model="grf", dim=16, num_samples=3, blocks=8, steps_per_block=12, picard_iters=12,
             tol=1e-3, seed=3)


@pytest.mark.mpi
@pytest.mark.timeout(180)
@pytest.mark.parametrize("sampler, options", [("paradigms", {"window": 16}),
                                              ("piadm-sde", {}), ("piadm-ode", {})])
def test_balanced_runs_equal_unbalanced_bit_for_bit(sampler, options, monkeypatch):
    from mpi4py import MPI
    world = Communicator(MPI.COMM_WORLD)
    balancers = []
    original = base.Sampler.score_balancer

    def slowed(self, sample_shape):
        balancer = original(self, sample_shape)
        if balancer not in balancers:
            balancers.append(balancer)
            score = balancer.evaluate

            def evaluate(states, times, out):
                # a slow rank, the last (the block front leaves its slices live longest)
                if world.rank == world.size - 1:
                    time.sleep(0.005 * states.shape[0])
                return score(states, times, out)
            balancer.evaluate = evaluate
        return balancer

    monkeypatch.setattr(base.Sampler, "score_balancer", slowed)
    results = {}
    for balance in ("off", "on"):
        cfg = RunConfig(**SMALL, **options, sampler=sampler, balance=balance).validate(world.size)
        results[balance] = run(cfg, world)
    same = bool(np.array_equal(results["on"].samples, results["off"].samples))
    rounds = results["on"].stats["rounds"] == results["off"].stats["rounds"]
    moved = world.allgather_obj(sum(b.given for b in balancers if b.enabled))
    assert world.allgather_obj((same, rounds)) == [(True, True)] * world.size
    assert (sum(moved) > 0) == (world.size > 1)


class FakeComm:
    def __init__(self, size):
        self.size, self.rank, self.comm_seconds = size, 0, 0.0


class Stealing(base.Sampler):
    balance_auto = True


@pytest.mark.parametrize("cls, mode, size, latency, expected",
                         [(Stealing, "auto", 2, None, True), (Stealing, "auto", 1, None, False),
                          (Stealing, "auto", 2, object(), False), (Stealing, "off", 2, None, False),
                          (Stealing, "on", 2, object(), True), (Stealing, "on", 1, None, False),
                          (base.Sampler, "auto", 2, None, False), (base.Sampler, "on", 2, None, True)])
def test_when_stealing_is_on(cls, mode, size, latency, expected):
    ctx = base.SamplerContext(model=None, comm=FakeComm(size), samples=np.arange(S),
                              dtype=np.float64, seed=0, latency=latency)
    sampler = cls(ctx, balance=mode)
    sampler.ctx.model = type("M", (), {"dim": D})()
    assert sampler.score_balancer((S, D)).enabled is expected


def test_auto_does_not_steal_on_a_device_backend():
    class DeviceBackend(Backend):
        def is_host(self):
            return False
    ctx = base.SamplerContext(model=type("M", (), {"dim": D})(), comm=FakeComm(2),
                              samples=np.arange(S), dtype=np.float64, seed=0,
                              backend=DeviceBackend(np))
    assert not Stealing(ctx, balance="auto").score_balancer((S, D)).enabled
    assert Stealing(ctx, balance="on").score_balancer((S, D)).enabled


def test_auto_steals_for_paradigms_only():
    from hpc_picard.samplers import SAMPLERS
    assert [name for name, cls in SAMPLERS.items() if cls.balance_auto] == ["paradigms"]


def test_balance_option_is_checked():
    with pytest.raises(ConfigError, match="--balance"):
        RunConfig(sampler="paradigms", balance="sometimes").validate(1)
