"""The wavefront schedule of piadm-sde / piadm-ode (samplers/wavefront.py)."""
import numpy as np
import pytest

from hpc_picard import linear_analysis as la
from hpc_picard.config import ConfigError, RunConfig
from hpc_picard.grid import TimeGrid
from hpc_picard.models import GaussianRandomField
from hpc_picard.parallel import Communicator
from hpc_picard.runner import run

SMALL = dict(model="grf", dim=16, num_samples=4, blocks=3, steps_per_block=6, T=4.0,
             delta=1e-2, schedule="wavefront", corrector_steps=0)
TOTAL_SLICES = 18


def sample(comm=None, **options):
    comm = comm or Communicator.self_comm()
    config = RunConfig(**{**SMALL, **options}).validate(comm.size)
    return run(config, comm)


@pytest.mark.parametrize("path", ["sde", "ode"])
@pytest.mark.parametrize("linear", ["exp", "ou"])
@pytest.mark.parametrize("active", [0, 1, 2])
def test_zero_tolerance_reproduces_the_sequential_sampler(path, linear, active):
    """tol = 0 accepts one slice a round: the sequential sampler, to round-off."""
    reference = sample(sampler=f"sequential-{path}", schedule="blockwise")
    wave = sample(sampler=f"piadm-{path}", tol=0.0, picard_iters=6, active_blocks=active,
                  linear_part=linear)
    assert np.abs(wave.samples - reference.samples).max() < 1e-10
    assert wave.stats["rounds"] == TOTAL_SLICES


def test_tolerance_takes_fewer_rounds_and_ou_fewer_than_exp():
    reference = sample(sampler="sequential-sde", schedule="blockwise")
    scale = np.abs(reference.samples).max()
    rounds = {}
    for linear in ("exp", "ou"):
        wave = sample(sampler="piadm-sde", tol=1e-4, linear_part=linear, active_blocks=2)
        assert np.abs(wave.samples - reference.samples).max() < 1e-4 * scale
        rounds[linear] = wave.stats["rounds"]
        # at most W blocks of 6 slices are scored a round
        assert wave.stats["evaluations"] <= 12 * rounds[linear]
    assert rounds["ou"] < rounds["exp"] < TOTAL_SLICES


def test_sweep_cap_accepts_a_block_after_k_rounds_from_its_final_start():
    """With one block in flight, tol = 0 and K = 2 < M, every block gets exactly K rounds
    once its start is final, so the run takes N K rounds, like blockwise K = 2."""
    wave = sample(sampler="piadm-sde", tol=0.0, picard_iters=2, active_blocks=1)
    assert wave.stats["rounds"] == 3 * 2
    # round 1 scores all 6 slices and accepts Y_1 (exact); round 2 the other 5
    assert wave.stats["evaluations"] == 3 * (6 + 5)


def test_corrector_at_every_block_end_matches_blockwise_piadm_ode():
    """With tol = 0 and K = M the predictor is exact in both schedules, and the
    corrector (2 sweeps) acts on the same block ends: the same samples and rounds."""
    options = dict(sampler="piadm-ode", tol=0.0, picard_iters=6, corrector_steps=2)
    blockwise = sample(schedule="blockwise", **options)
    wave = sample(active_blocks=2, **options)
    assert np.abs(wave.samples - blockwise.samples).max() < 1e-10
    assert wave.stats["rounds"] == blockwise.stats["rounds"] == TOTAL_SLICES + 3 * 2


def test_linear_analysis_of_the_wavefront():
    model = GaussianRandomField(64, k0=4.0, alpha=2.0)
    lam, mult = la.grf_modes(model)
    grid = TimeGrid.build(4.0, 1e-2, 3, 6)
    exact = la.sequential_variance(grid, "sde", lam)
    var, rounds, evaluations = la.wavefront_variance(grid, "sde", lam, mult, 6, 0.0, 2)
    assert np.allclose(var, exact, rtol=1e-12) and rounds == TOTAL_SLICES
    var, rounds, _ = la.wavefront_variance(grid, "sde", lam, mult, 12, 1e-3, 2, linear="ou")
    assert np.allclose(var, exact, rtol=1e-4) and rounds < TOTAL_SLICES


@pytest.mark.parametrize("options, message", [
    (dict(accelerate="anderson", checkpoint="ck.h5"), "mixing history in memory"),
    (dict(active_blocks=-1), "--active-blocks"),
    (dict(schedule="diagonal"), "--schedule"),
    (dict(linear_part="cubic"), "--linear-part"),
])
def test_bad_wavefront_options_are_refused(options, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig(**{**SMALL, "sampler": "piadm-sde", **options}).validate(1)


@pytest.mark.mpi
@pytest.mark.timeout(120)
@pytest.mark.parametrize("sampler, options", [
    ("piadm-sde", dict(tol=1e-3, active_blocks=2)),
    ("piadm-sde", dict(tol=0.0, picard_iters=6, active_blocks=0, linear_part="exp")),
    ("piadm-ode", dict(tol=1e-3, active_blocks=1, corrector_steps=3)),
    ("piadm-sde", dict(tol=1e-3, active_blocks=2, time_ranks=1)),    # sample groups
    ("piadm-sde", dict(tol=1e-3, active_blocks=2, accelerate="anderson")),
    ("piadm-sde", dict(tol=1e-3, active_blocks=0, accelerate="anderson", time_ranks=1)),
])
def test_wavefront_is_rank_count_invariant(sampler, options):
    """Every rank count gives one rank's samples and rounds; the window's tail (fewer
    slices than ranks near the end) leaves some ranks without slices."""
    from mpi4py import MPI
    world = Communicator(MPI.COMM_WORLD)
    result = sample(comm=world, sampler=sampler, **options)
    verdict = None
    if world.rank == 0:
        serial = sample(sampler=sampler, **options)
        verdict = (float(np.abs(result.samples - serial.samples).max()),
                   result.stats["rounds"] == serial.stats["rounds"],
                   result.stats["evaluations"] == serial.stats["evaluations"])
    difference, same_rounds, same_evaluations = world.bcast_obj(verdict)
    assert difference < 1e-10 and same_rounds and same_evaluations


@pytest.mark.mpi
@pytest.mark.timeout(60)
def test_affine_exscan_composes_in_rank_order():
    from mpi4py import MPI
    world = Communicator(MPI.COMM_WORLD)
    factors = [0.5, 2.0, 0.0, 3.0, 1.5]
    offsets = [np.array([r + 1.0, -r]) for r in range(world.size)]
    factor, offset = world.exscan_affine(factors[world.rank], offsets[world.rank])
    a, v = 1.0, np.zeros(2)
    for r in range(world.rank):
        a, v = a * factors[r], factors[r] * v + offsets[r]
    assert world.allreduce_max(abs(factor - a) + float(np.abs(offset - v).max())) < 1e-14


class Interrupted(Exception):
    """Stands in for a job killed between rounds."""


def wavefront_config(tmp_path, comm, **changes):
    values = dict(SMALL, sampler="piadm-sde", tol=1e-4, active_blocks=2, output=str(tmp_path / "o.h5"),
                  checkpoint=str(tmp_path / "ck.h5"))
    return RunConfig(**{**values, **changes}).validate(comm.size)


def run_until(config, comm, rounds: int):
    """Run and stop after ``rounds`` rounds (blocks have retired: a checkpoint exists)."""
    calls = []

    def stop(block, sweep, residual):          # called once a round
        calls.append(block)
        if len(calls) == rounds:
            raise Interrupted
    with pytest.raises(Interrupted):
        run(config, comm, on_sweep=stop)


def test_checkpoint_holds_the_window_and_resumes_bitwise(tmp_path):
    comm = Communicator.self_comm()
    reference = run(wavefront_config(tmp_path, comm, checkpoint=""), comm)
    assert reference.stats["rounds"] > 5
    config = wavefront_config(tmp_path, comm)
    run_until(config, comm, 5)
    from hpc_picard import checkpoint
    state = checkpoint.read(config.checkpoint, config)
    # the window in flight: W = 2 blocks from the front, all samples
    assert 0 < state.window["front"] < TOTAL_SLICES
    assert state.window_states.shape[0] == 4 and state.window_states.shape[2] == 16
    assert state.window_states.shape[1] > 6
    resumed = run(config, comm, resume=True)
    np.testing.assert_array_equal(resumed.samples, reference.samples)
    assert resumed.stats["rounds"] == reference.stats["rounds"]
    assert resumed.stats["evaluations"] == reference.stats["evaluations"]
    assert resumed.stats["restarts"] == 1


@pytest.mark.mpi
@pytest.mark.timeout(120)
def test_wavefront_resume_at_the_same_and_another_rank_count():
    import shutil
    import tempfile
    from pathlib import Path
    from mpi4py import MPI
    world = Communicator(MPI.COMM_WORLD)
    path = Path(world.bcast_obj(tempfile.mkdtemp(prefix="wf-ck-") if world.rank == 0 else None))
    try:
        reference = run(wavefront_config(path, world, checkpoint=""), world)
        config = wavefront_config(path, world)
        run_until(config, world, 5)
        if world.rank == 0:
            shutil.copy(path / "ck.h5", path / "copy.h5")
        world.barrier()
        resumed = run(config, world, resume=True)
        message = ""
        if world.rank == 0:
            # another rank count: rank 0 alone resumes from the same checkpoint
            alone = run(wavefront_config(path, Communicator.self_comm(),
                                         checkpoint=str(path / "copy.h5")),
                        Communicator.self_comm(), resume=True)
            same = np.array_equal(resumed.samples, reference.samples)
            close = np.allclose(alone.samples, reference.samples, rtol=1e-12, atol=1e-12)
            rounds = alone.stats["rounds"] == resumed.stats["rounds"] == reference.stats["rounds"]
            message = "" if same and close and rounds else f"same {same} close {close} rounds {rounds}"
        assert world.bcast_obj(message) == ""
    finally:
        world.barrier()
        if world.rank == 0:
            shutil.rmtree(path, ignore_errors=True)


def test_anderson_with_the_wavefront_keeps_tol_zero_exact_and_the_tolerance():
    """Anderson mixes only the positions behind the front's verdict, so tol = 0 still
    reproduces the sequential sampler; with a tolerance it stays within it."""
    reference = sample(sampler="sequential-sde", schedule="blockwise")
    exact = sample(sampler="piadm-sde", tol=0.0, picard_iters=6, active_blocks=2,
                   accelerate="anderson")
    assert np.abs(exact.samples - reference.samples).max() < 1e-10
    assert exact.stats["rounds"] == TOTAL_SLICES
    mixed = sample(sampler="piadm-sde", tol=1e-4, active_blocks=2, accelerate="anderson",
                   anderson_depth=2)
    plain = sample(sampler="piadm-sde", tol=1e-4, active_blocks=2)
    assert np.abs(mixed.samples - reference.samples).max() < 1e-4 * np.abs(reference.samples).max()
    assert mixed.stats["rounds"] <= plain.stats["rounds"]
    assert mixed.stats["evaluations"] < plain.stats["evaluations"]


class _CountingProblem:
    """The GRF's exact per-mode problem (linear_analysis), counting the rows scored."""

    def __init__(self, traj):
        model = GaussianRandomField(64, k0=4.0, alpha=2.0)
        lam, mult = la.grf_modes(model)
        self.inner = la._LinearProblem(traj, lam, mult)
        self.increments, self.residual = self.inner.increments, self.inner.residual
        self.scored = 0

    def score(self, rows, slices):
        self.scored += len(slices)
        return self.inner.score(rows, slices)


def windows_of(comm, guess: str, record):
    """Run the wavefront (3 blocks x 6 slices, W = 2) on the exact GRF problem over
    ``comm``; record(st, wave) after every round. Returns (final state, rows scored)."""
    from hpc_picard.samplers.wavefront import Trajectory, Wavefront
    traj = Trajectory(TimeGrid.build(4.0, 1e-2, 3, 6), "sde", "ou")
    problem = _CountingProblem(traj)
    wave = Wavefront(problem, traj, comm, 12, 1e-3, 2, guess)
    y0 = np.zeros((problem.inner.sources, problem.inner.factor.shape[1]))
    y0[0] = 1.0
    st = wave.run(y0, on_state=lambda st: record(st, wave))
    return st, problem.scored


@pytest.mark.mpi
@pytest.mark.timeout(60)
@pytest.mark.parametrize("guess", ["constant", "noise"])
def test_each_rank_holds_only_its_slices_as_the_window_moves(guess):
    """Every round, a rank holds the states of its balanced share of the window (and
    the increments of its slices only); the gathered window equals one rank's at the
    same round, as blocks retire and enter; the evaluations counted are the rows
    scored, all ranks together."""
    from mpi4py import MPI
    from hpc_picard.parallel import balanced_range
    from hpc_picard.samplers.wavefront import whole_window
    world = Communicator(MPI.COMM_WORLD)
    serial = []
    windows_of(Communicator.self_comm(), guess,
               lambda st, wave: serial.append((st.front, st.states.copy())))
    problems, rows_seen = [], set()

    def check(st, wave):
        lo, hi = balanced_range(st.rows, world.size, world.rank)
        if len(st.states) != hi + 1 - lo or len(st.noise) != hi - lo:
            problems.append(f"round {st.rounds}: holds {len(st.states)} states")
        rows_seen.add(st.rows)
        whole = whole_window(world, st)
        if world.rank == 0:
            front, states = serial[st.rounds - 1]
            if front != st.front or whole.shape != states.shape or \
                    np.abs(whole - states).max() > 1e-12:
                problems.append(f"round {st.rounds}: window differs from one rank's")
    st, scored = windows_of(world, guess, check)
    total = int(world.allreduce_sum(np.array([float(scored)]))[0])
    if total != st.evaluations or st.rounds != len(serial):
        problems.append(f"scored {total}, counted {st.evaluations}")
    # the window shrinks as the last blocks retire and nothing enters
    if len(rows_seen) < 3:
        problems.append(f"window sizes {sorted(rows_seen)}")
    assert world.allgather_obj(problems) == [[]] * world.size
