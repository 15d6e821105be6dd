"""PIADM: Picard sweeps over a block's time slices, as a distributed prefix sum.

Inside a block with start state Y_0 and slice boundaries tau_0 = 0 < ... < tau_M
(reverse time since the block start), the exponential-integrator steps unroll to

    Y_m = e^{tau_m} ( Y_0 + sum_{j<m} g_j ),   g_j = e^{-tau_{j+1}} [ c_j s(Y_j, t_j) + b_j xi_j ].

Sweep k evaluates every score at the previous iterate (one batched call per rank for
its own slices) and rebuilds the trajectory with one prefix sum. Rank r owns the
contiguous slices [a_r, b_r); an MPI Exscan of the local totals gives the sum of g over
all slices left of a_r, so every rank rebuilds its states without any halo exchange.
An Allreduce(MAX) of the residual stops all ranks at the same sweep, and the block end
(computed on the last rank) is broadcast to every rank as the next block's Y_0.

The increments xi_j are drawn once per block and reused by every sweep, so K = M sweeps
reproduce the sequential sampler on the same grid and noise to round-off.

Options of the sweeps (docs/samplers.md): ``initial_guess`` "constant" starts every
state at Y_0; "noise" starts from the noise-only trajectory (the sweep with the score
set to zero, which costs no score evaluation). ``accelerate`` "anderson" mixes the
iterates (acceleration.py). PIADM-ODE (:class:`PicardODESampler`) runs the same sweeps
on the probability-flow ODE and an underdamped Langevin corrector (corrector.py) at
every block end.
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ..parallel import balanced_range
from ..process import step_coefficients, step_noise_scale
from .acceleration import ACCELERATIONS, AndersonMixer, WindowMixer
from .base import F64, BlockStats, Sampler
from .monitor import SweepMonitor
from .corrector import LangevinCorrector
from .engine import exact_sweeps_evaluations
from .options import BALANCE, PICARD_ITERS, TOL, Cost, Option
from . import wavefront

INITIAL_GUESSES = ("constant", "noise")


class PicardSampler(Sampler):
    """``picard_iters`` K: most sweeps per block; ``tol``: stop once max r_m <= tol^2
    (tol = 0 runs exactly K sweeps)."""

    name = "piadm-sde"
    path = "sde"
    time_parallel = True
    options = (
        PICARD_ITERS, TOL, BALANCE,
        Option("initial_guess", str, "constant", "First iterate of a block's sweeps: constant "
               "(Y_0 everywhere) or noise (the noise-only trajectory).", choices=INITIAL_GUESSES),
        Option("accelerate", str, "none", "Mixing of the sweeps.", choices=ACCELERATIONS),
        Option("anderson_depth", int, 3, "Differences kept by --accelerate anderson.", minimum=0),
        Option("schedule", str, "blockwise", "Blocks one after another (blockwise) or several "
               "in flight (wavefront, docs/samplers.md).", choices=wavefront.SCHEDULES),
        Option("active_blocks", int, 4, "--schedule wavefront: blocks in flight W (0: all).",
               minimum=0),
        Option("linear_part", str, "ou", "--schedule wavefront: the part of a step integrated "
               "exactly: exp (e^e) or ou (the Gaussian reference score -Y too).",
               choices=tuple(wavefront.LINEAR_PARTS)),
    )

    @classmethod
    def validate(cls, config) -> None:
        super().validate(config)
        if config.accelerate == "anderson" and config.anderson_depth < 1:
            raise ConfigError("--accelerate anderson needs --anderson-depth of at least 1")

    @classmethod
    def bounds(cls, config) -> Cost:
        """At most K sweeps per block (M when K > M: the block is exact then), sweep k
        scoring the slices not yet exact (engine.py); with tol > 0 a block can stop
        after one sweep of every slice. The wavefront: at worst one slice a round
        (tol 0), each round scoring its window."""
        if config.schedule == "wavefront":
            rounds, evaluations, _ = wavefront.window_bounds(config, cls.build_grid(config))
            return Cost(rounds, evaluations, 1, 1, "wavefront, at least one slice a round")
        blocks, slices = config.blocks, config.steps_per_block
        sweeps, evaluations = exact_sweeps_evaluations(slices, config.picard_iters)
        if config.tol == 0:
            fewest, fewest_evaluations = sweeps, evaluations
        else:
            fewest, fewest_evaluations = 1, slices
        return Cost(blocks * sweeps, blocks * evaluations, blocks * fewest,
                    blocks * fewest_evaluations, f"{sweeps} per block")

    @classmethod
    def memory_bytes(cls, config, samples, time_ranks, time_rank) -> int:
        """The sweep engine's arrays (engine.py): two trajectories of owned + 1 states
        and the scores (state dtype); the prefix sums (not on time rank 0, whose sweep
        keeps a running sum), and on the SDE path the fixed noise part of g in two
        buffers (the second receives the rows when a block is re-split,
        BlockSweep.drop_frozen), float64; a few single states; Anderson's history of
        2 x depth differences plus the last pair.
        """
        lo, hi = cls.owned_slices(config, time_ranks, time_rank)
        rows, row = hi - lo + 1, samples * config.dim
        arrays = (rows if time_rank > 0 else 0) + (2 * rows if cls.path == "sde" else 0) + 5
        if config.accelerate == "anderson":
            arrays += (2 * config.anderson_depth + 2) * (rows - 1)
        if config.schedule == "wavefront":
            arrays += wavefront.window_arrays(config, cls.build_grid(config), time_ranks,
                                              time_rank)
        return arrays * row * F64 + 3 * rows * row * np.dtype(config.dtype).itemsize

    @staticmethod
    def build_grid(config):
        from ..grid import TimeGrid
        return TimeGrid.build(config.T, config.delta, config.blocks, config.steps_per_block)

    def __init__(self, context, picard_iters: int, tol: float, initial_guess: str = "constant",
                 accelerate: str = "none", anderson_depth: int = 3, schedule: str = "blockwise",
                 active_blocks: int = 4, linear_part: str = "ou", **options):
        super().__init__(context, **options)
        self.picard_iters = int(picard_iters)
        self.tol = float(tol)
        if initial_guess not in INITIAL_GUESSES:
            raise ValueError(f"unknown initial guess {initial_guess!r}; expected one of {INITIAL_GUESSES}")
        if schedule not in wavefront.SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; expected one of {wavefront.SCHEDULES}")
        self.initial_guess = initial_guess
        self.mixer = None
        if accelerate == "anderson":
            # the wavefront's history travels with its window's rows (acceleration.py)
            mixers = {"blockwise": AndersonMixer, "wavefront": WindowMixer}
            self.mixer = mixers[schedule](context.comm, anderson_depth)
        self.schedule = schedule
        self.active_blocks = int(active_blocks)
        self.linear_part = linear_part
        # The wavefront sweeps the whole trajectory (run_trajectory), not block by block,
        # and checkpoints its window (runner.py).
        self.whole_trajectory = self.window_checkpoints = schedule == "wavefront"
        self.host_kernels = schedule == "blockwise"     # the wavefront has its own window
        self.corrector = None

    def history_width(self) -> int:
        """Entries per state of the wavefront's Anderson history rows that its
        checkpoints hold (0: it does not mix)."""
        return self.mixer.width if self.schedule == "wavefront" and self.mixer is not None else 0

    def wavefront(self, grid, on_round=None) -> "wavefront.Wavefront":
        """The wavefront schedule of this sampler on ``grid`` (samplers/wavefront.py)."""
        traj = wavefront.Trajectory(grid, self.path, self.linear_part)
        problem = wavefront.SamplerProblem(self, traj, self.corrector)
        return wavefront.Wavefront(problem, traj, self.ctx.comm, self.picard_iters, self.tol,
                                   self.active_blocks, self.initial_guess, on_round,
                                   verdicts=self.ctx.verdicts, mixer=self.mixer)

    @staticmethod
    def retired_blocks(grid, state) -> int:
        """Blocks wholly behind the wavefront's front (a state or a front index)."""
        front = state if isinstance(state, int) else state.front
        ends = np.cumsum([b.num_slices for b in grid.blocks])
        return int(np.searchsorted(ends, front, side="right"))

    def run_trajectory(self, grid, y0, state=None, on_state=None):
        """--schedule wavefront: (end state, one BlockStats for the whole grid)."""
        def on_round(st, rows, advance):
            # Progress reports the front's block and its rounds there (at most K).
            if self.ctx.on_sweep is not None:
                block = min(self.retired_blocks(grid, st), grid.num_blocks - 1)
                self.ctx.on_sweep(block, st.front_sweeps, float(np.sqrt(st.residual)))
        st = self.wavefront(grid, on_round).run(y0, state, on_state)
        return (st.states[0].astype(self.ctx.dtype),
                BlockStats(sweeps=st.rounds, evaluations=st.evaluations,
                           residual=float(np.sqrt(st.residual))))


    def slice_range(self, block) -> tuple:
        return balanced_range(block.num_slices, self.ctx.comm.size, self.ctx.comm.rank)

    def run_block(self, block, y0):
        y0 = np.asarray(y0)
        engine = self.engine(y0.shape)
        lo, hi = engine.assign(block.num_slices)
        _, c, b = step_coefficients(block.steps, self.path)
        decay = np.exp(-block.tau[1:])                            # e^{-tau_{j+1}}
        fixed = None
        if self.path == "sde":
            # The noise part of g is the same in every sweep: formed once per block,
            # drawn into the engine's own rows.
            def fixed(out):
                self.increments(block, range(lo, hi), out=out, scale=(decay * b)[lo:hi])
        times = block.score_times
        engine.start(y0, growth=np.exp(block.tau), weight=decay * c,
                     scale=step_noise_scale(block.steps) * y0.shape[1], fixed=fixed,
                     tol=self.tol, freeze=self.mixer is None,
                     describe=lambda j: f"block {block.index}, slice {engine.offset + j} "
                                        f"(forward time t={float(times[engine.offset + j]):.6g})")
        if self.initial_guess == "noise" and fixed is not None:
            engine.initialize_from_fixed()
        if self.mixer is not None:
            self.mixer.reset()
        monitor = SweepMonitor(block, self.picard_iters, self.tol, self.ctx.on_sweep)
        sweeps = 0
        # Re-split only where a rank's score time grows with its rows: on the host. A
        # GPU batch (or an emulated device) has spare width, so fewer rows save nothing
        # there and the moves would only cost. Anderson keeps its rows' history in place.
        backend = self.ctx.backend
        resplit = (self.mixer is None and self.ctx.latency is None
                   and (backend is None or backend.is_host()))
        balancer = self.score_balancer(y0.shape)
        while sweeps < self.picard_iters and not engine.done:
            x, slices = engine.pending()
            first = engine.offset + slices.start
            scores = engine.score_buffer(len(slices))
            balancer.score([(x, times[first:first + len(slices)], scores)])
            engine.sweep(scores, mixer=self.mixer)
            sweeps += 1
            monitor.check(sweeps, engine.residual)
            # the front leaves the first ranks idle: re-split the live slices
            if resplit and sweeps < self.picard_iters and engine.unbalanced():
                engine.drop_frozen()
        end = engine.backend.to_host(engine.end()[0])
        return (end.astype(self.ctx.dtype, copy=False),
                BlockStats(sweeps=sweeps, evaluations=engine.evaluations,
                           residual=float(np.sqrt(engine.residual))))


class PicardODESampler(PicardSampler):
    """PIADM-ODE: Picard sweeps on the probability-flow ODE (b_j = 0), then an
    underdamped Langevin corrector at every block end (``corrector_steps`` 0: none).

    The corrector's sweeps follow the predictor's ``picard_iters`` and ``tol``; its
    rounds and score evaluations are added to the block's.
    """

    name = "piadm-ode"
    path = "ode"
    options = PicardSampler.options + (
        Option("corrector_steps", int, 4, "Langevin corrector slices per block end (0: off).",
               minimum=0),
        Option("corrector_time", float, 1.0, "Corrector duration in reverse time (capped near "
               "the data end).", positive=True),
        Option("corrector_friction", float, 2.0, "Corrector friction gamma.", positive=True),
    )

    @classmethod
    def validate(cls, config) -> None:
        super().validate(config)
        if config.initial_guess == "noise":
            raise ConfigError("--initial-guess noise starts the sweeps from the noise-only "
                              "trajectory, which the ODE path (no noise) does not have; "
                              "use --initial-guess constant")

    @classmethod
    def plan_options(cls, config) -> dict:
        """The corrector is turned off: its frozen-score slices have an O(h) bias, about
        2% of each mode's variance with 4 slices, that does not shrink with EPS and
        summed over d modes exceeds the budget (with the default corrector the
        d = 1024, EPS = 0.1 plan reaches 43x its budget; without it, 0.16x)."""
        return {"corrector_steps": 0}

    @classmethod
    def corrector_sweeps(cls, config) -> int:
        """Sweeps of the corrector per block: at most its slices, 0 when it is off."""
        return min(config.picard_iters, config.corrector_steps)

    @classmethod
    def bounds(cls, config) -> Cost:
        """The predictor's sweeps plus the corrector's (its own slices, the same K and
        tol) at every block end."""
        predictor = super().bounds(config)
        blocks, steps = config.blocks, config.corrector_steps
        sweeps = cls.corrector_sweeps(config)
        if sweeps == 0 or config.schedule == "wavefront":     # the window's bound has it
            return predictor
        sweeps, evaluations = exact_sweeps_evaluations(steps, sweeps)
        fewest, fewest_evaluations = (sweeps, evaluations) if config.tol == 0 else (1, steps)
        return Cost(predictor.rounds + blocks * sweeps,
                    predictor.evaluations + blocks * evaluations,
                    predictor.min_rounds + blocks * fewest,
                    predictor.min_evaluations + blocks * fewest_evaluations,
                    f"{predictor.detail} + {sweeps} corrector sweeps of {steps} slices")

    @classmethod
    def memory_bytes(cls, config, samples, time_ranks, time_rank) -> int:
        """The predictor's arrays (kept across blocks) plus the corrector's: its noise
        and fixed part (2 x owned each), two trajectories of owned + 1 (X, V) pairs and
        their increments, all float64."""
        predictor = super().memory_bytes(config, samples, time_ranks, time_rank)
        if config.corrector_steps == 0:
            return predictor
        lo, hi = balanced_range(config.corrector_steps, time_ranks, time_rank)
        rows, row = hi - lo + 1, samples * config.dim
        # (X, V) pairs: prefix sums, fixed part, work rows and the drawn noise (float64);
        # two trajectories (state dtype, counted as float64) and the scores
        return predictor + (2 * 4 * rows + 2 * 2 * rows + rows + 4) * row * F64

    def __init__(self, context, picard_iters: int, tol: float, corrector_steps: int = 0,
                 corrector_time: float = 1.0, corrector_friction: float = 2.0, **options):
        super().__init__(context, picard_iters, tol, **options)
        if self.initial_guess == "noise":
            raise ValueError("the ODE path has no noise-only trajectory to start from: "
                             "initial_guess must be 'constant'")
        self.corrector = (LangevinCorrector(corrector_steps, corrector_time, corrector_friction,
                                            picard_iters, tol) if corrector_steps > 0 else None)

    def run_block(self, block, y0):
        y, stats = super().run_block(block, y0)
        if self.corrector is None:
            return y, stats
        x, sweeps, evaluations = self.corrector.run(self, block, y)
        return (x.astype(self.ctx.dtype),
                BlockStats(sweeps=stats.sweeps + sweeps,
                           evaluations=stats.evaluations + evaluations,
                           residual=stats.residual))
