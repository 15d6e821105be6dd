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
from .acceleration import ACCELERATIONS, AndersonMixer
from .base import F64, BlockStats, Sampler
from .monitor import SweepMonitor
from .corrector import LangevinCorrector
from .options import PICARD_ITERS, TOL, Cost, Option

INITIAL_GUESSES = ("constant", "noise")


class PicardSampler(Sampler):
    """``picard_iters`` K: most sweeps per block; ``tol``: stop once max r_m <= tol^2
    (tol = 0 runs exactly K sweeps)."""

    name = "piadm-sde"
    path = "sde"
    time_parallel = True
    options = (
        PICARD_ITERS, TOL,
        Option("initial_guess", str, "constant", "First iterate of a block's sweeps: constant "
               "(Y_0 everywhere) or noise (the noise-only trajectory).", choices=INITIAL_GUESSES),
        Option("accelerate", str, "none", "Mixing of the sweeps.", choices=ACCELERATIONS),
        Option("anderson_depth", int, 3, "Differences kept by --accelerate anderson.", minimum=0),
    )

    @classmethod
    def validate(cls, config) -> None:
        super().validate(config)
        if config.accelerate == "anderson" and config.anderson_depth < 1:
            raise ConfigError("--accelerate anderson needs --anderson-depth of at least 1")

    @classmethod
    def bounds(cls, config) -> Cost:
        """K sweeps of every slice per block; with tol > 0 a block can stop after one."""
        blocks, slices, sweeps = config.blocks, config.steps_per_block, config.picard_iters
        fewest = sweeps if config.tol == 0 else 1
        return Cost(blocks * sweeps, blocks * sweeps * slices, blocks * fewest,
                    blocks * fewest * slices, f"{sweeps} per block")

    @classmethod
    def memory_bytes(cls, config, samples, time_ranks, time_rank) -> int:
        """Two trajectories of owned + 1 states and the increments g (float64), the
        scores (state dtype), the fixed noise part of g on the SDE path, the start and
        end states, and Anderson's history of 2 x depth differences plus the last pair.
        """
        lo, hi = cls.owned_slices(config, time_ranks, time_rank)
        owned, row = hi - lo, samples * config.dim
        arrays = 2 * (owned + 1) + owned + 2 + (owned if cls.path == "sde" else 0)
        if config.accelerate == "anderson":
            arrays += (2 * config.anderson_depth + 2) * owned
        return arrays * row * F64 + owned * row * np.dtype(config.dtype).itemsize

    def __init__(self, context, picard_iters: int, tol: float, initial_guess: str = "constant",
                 accelerate: str = "none", anderson_depth: int = 3, **options):
        super().__init__(context, **options)
        self.picard_iters = int(picard_iters)
        self.tol = float(tol)
        if initial_guess not in INITIAL_GUESSES:
            raise ValueError(f"unknown initial guess {initial_guess!r}; expected one of {INITIAL_GUESSES}")
        self.initial_guess = initial_guess
        self.mixer = AndersonMixer(context.comm, anderson_depth) if accelerate == "anderson" else None

    def _buffers(self, owned: int, shape: tuple) -> tuple:
        """Work arrays for a block of ``owned`` slices, kept from block to block."""
        key = (owned, shape)
        if getattr(self, "_buffer_key", None) != key:
            self._buffer_key = key
            self._buffer_list = (np.empty((owned + 1,) + shape), np.empty((owned + 1,) + shape),
                                 np.empty((owned,) + shape),
                                 np.empty((owned,) + shape, dtype=self.ctx.dtype))
        return self._buffer_list

    def slice_range(self, block) -> tuple:
        return balanced_range(block.num_slices, self.ctx.comm.size, self.ctx.comm.rank)

    def run_block(self, block, y0):
        comm = self.ctx.comm
        lo, hi = self.slice_range(block)
        owned = hi - lo
        tau = block.tau
        _, c, b = step_coefficients(block.steps, self.path)
        decay = np.exp(-tau[lo + 1:hi + 1])                      # e^{-tau_{j+1}}, owned j
        weight = (decay * c[lo:hi])[:, None, None]
        growth = np.exp(tau[lo:hi + 1])[:, None, None]            # e^{tau_m}, m in [lo, hi]
        # v_m for the states this rank rebuilds, m in [lo+1, hi]: the noise scale of the
        # step that ends at m.
        scale = step_noise_scale(block.steps[lo:hi])[:, None] * y0.shape[1]
        times = block.score_times[lo:hi]

        y0_64 = np.asarray(y0, dtype=np.float64)
        if self.path == "sde":
            # The noise part of g is the same in every sweep: form it once per block.
            fixed = self.increments(block, range(lo, hi))
            fixed *= (decay * b[lo:hi])[:, None, None]
        else:
            fixed = None

        # states[i] = Y_{lo+i} for i in [0, owned]; the last row is Y_hi, the next
        # rank's first state (or the block end on the last rank). The work arrays live
        # across sweeps and blocks: fresh multi-megabyte arrays every sweep cost more in
        # page faults than the arithmetic they hold.
        states, rebuilt, g, score = self._buffers(owned, y0_64.shape)
        states[...] = y0_64
        if self.initial_guess == "noise" and fixed is not None:
            # The noise-only trajectory: one prefix sum of the fixed part of g.
            np.cumsum(fixed, axis=0, out=g)
            states[0] += comm.exscan_sum(g[-1] if owned else np.zeros_like(y0_64))
            states[1:] = g + states[0]
            states *= growth
        if self.mixer is not None:
            self.mixer.reset()
        residual = np.inf
        sweeps = 0
        monitor = SweepMonitor(block, self.picard_iters, self.tol, self.ctx.on_sweep)
        for sweeps in range(1, self.picard_iters + 1):
            self.score(states[:owned].astype(self.ctx.dtype, copy=False), times,
                       block.index, lo, out=score)
            np.multiply(score, weight, out=g)
            if fixed is not None:
                g += fixed
            for i in range(1, owned):                             # inclusive local prefix
                g[i] += g[i - 1]
            offset = comm.exscan_sum(g[-1] if owned else np.zeros_like(y0_64))
            np.add(y0_64, offset, out=rebuilt[0])
            np.add(g, rebuilt[0], out=rebuilt[1:])
            rebuilt *= growth
            if self.ctx.dtype != np.float64:
                # Round to the state dtype now, so a float32 run's iterates are float32.
                rebuilt[...] = rebuilt.astype(self.ctx.dtype)
            np.subtract(rebuilt[1:], states[1:], out=g)
            np.square(g, out=g)
            diff = g.sum(axis=2) / scale
            residual = comm.allreduce_max(float(diff.max()) if owned else 0.0)
            monitor.check(sweeps, residual)
            if self.mixer is not None and not (self.tol > 0 and residual <= self.tol**2):
                # The block end (last row) stays the plain image F(Y): only the states
                # whose scores the next sweep evaluates are mixed.
                rebuilt[:owned] = self.mixer.mix(states[:owned], rebuilt[:owned])
            states, rebuilt = rebuilt, states
            if self.tol > 0 and residual <= self.tol**2:
                break
        # With more ranks than slices the last ranks own none: the end is on the last owner.
        last_owner = min(comm.size, block.num_slices) - 1
        end = comm.bcast_array(states[-1].copy(), root=last_owner)
        return (end.astype(self.ctx.dtype),
                BlockStats(sweeps=sweeps, evaluations=sweeps * block.num_slices,
                           residual=float(np.sqrt(residual))))


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
        if sweeps == 0:
            return predictor
        fewest = sweeps if config.tol == 0 else 1
        return Cost(predictor.rounds + blocks * sweeps,
                    predictor.evaluations + blocks * sweeps * steps,
                    predictor.min_rounds + blocks * fewest,
                    predictor.min_evaluations + blocks * fewest * steps,
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
        owned = hi - lo
        return predictor + 2 * (3 * owned + 2 * (owned + 1) + 1) * samples * config.dim * F64

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
        x, sweeps = self.corrector.run(self, block, y)
        return (x.astype(self.ctx.dtype),
                BlockStats(sweeps=stats.sweeps + sweeps,
                           evaluations=stats.evaluations + sweeps * self.corrector.steps,
                           residual=stats.residual))
