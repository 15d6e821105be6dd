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

from ..config import INITIAL_GUESSES
from ..parallel import balanced_range
from ..process import step_coefficients, step_noise_scale
from .acceleration import AndersonMixer
from .base import BlockStats, Sampler
from .corrector import LangevinCorrector
from .monitor import SweepMonitor


class PicardSampler(Sampler):
    """``picard_iters`` K: most sweeps per block; ``tol``: stop once max r_m <= tol^2
    (tol = 0 runs exactly K sweeps)."""

    name = "piadm-sde"
    path = "sde"
    time_parallel = True

    def __init__(self, context, picard_iters: int, tol: float, initial_guess: str = "constant",
                 accelerate: str = "none", anderson_depth: int = 3, **options):
        super().__init__(context, **options)
        self.picard_iters = int(picard_iters)
        self.tol = float(tol)
        if initial_guess not in INITIAL_GUESSES:
            raise ValueError(f"unknown initial guess {initial_guess!r}; expected one of {INITIAL_GUESSES}")
        self.initial_guess = initial_guess
        self.mixer = AndersonMixer(context.comm, anderson_depth) if accelerate == "anderson" else None

    @classmethod
    def from_config(cls, config, context):
        return cls(context, picard_iters=config.picard_iters, tol=config.tol,
                   initial_guess=config.initial_guess, accelerate=config.accelerate,
                   anderson_depth=config.anderson_depth)

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
            # The noise part of g is the same in every sweep: formed once per block.
            fixed = self.increments(block, range(lo, hi))
            fixed *= (decay * b)[lo:hi, None, None]
        times = block.score_times
        engine.start(y0, growth=np.exp(block.tau), weight=decay * c,
                     scale=step_noise_scale(block.steps) * y0.shape[1], fixed=fixed,
                     tol=self.tol, freeze=self.mixer is None,
                     describe=lambda j: f"block {block.index}, slice {j} "
                                        f"(forward time t={float(times[j]):.6g})")
        if self.initial_guess == "noise" and fixed is not None:
            engine.initialize_from_fixed()
        if self.mixer is not None:
            self.mixer.reset()
        monitor = SweepMonitor(block, self.picard_iters, self.tol, self.ctx.on_sweep)
        while engine.sweeps < self.picard_iters and not engine.done:
            x, slices = engine.pending()
            scores = self.evaluate(x, times[slices.start:slices.stop],
                                   engine.score_buffer(len(slices)))
            engine.sweep(scores, mixer=self.mixer)
            monitor.check(engine.sweeps, engine.residual)
        end = engine.backend.to_host(engine.end()[0])
        return (end.astype(self.ctx.dtype, copy=False),
                BlockStats(sweeps=engine.sweeps, evaluations=engine.evaluations,
                           residual=float(np.sqrt(engine.residual))))


class PicardODESampler(PicardSampler):
    """PIADM-ODE: Picard sweeps on the probability-flow ODE (b_j = 0), then an
    underdamped Langevin corrector at every block end (``corrector_steps`` 0: none).

    The corrector's sweeps follow the predictor's ``picard_iters`` and ``tol``; its
    rounds and score evaluations are added to the block's.
    """

    name = "piadm-ode"
    path = "ode"

    def __init__(self, context, picard_iters: int, tol: float, corrector_steps: int = 0,
                 corrector_time: float = 1.0, corrector_friction: float = 2.0, **options):
        super().__init__(context, picard_iters, tol, **options)
        self.corrector = (LangevinCorrector(corrector_steps, corrector_time, corrector_friction,
                                            picard_iters, tol) if corrector_steps > 0 else None)

    @classmethod
    def from_config(cls, config, context):
        return cls(context, picard_iters=config.picard_iters, tol=config.tol,
                   initial_guess=config.initial_guess, accelerate=config.accelerate,
                   anderson_depth=config.anderson_depth, corrector_steps=config.corrector_steps,
                   corrector_time=config.corrector_time,
                   corrector_friction=config.corrector_friction)

    def run_block(self, block, y0):
        y, stats = super().run_block(block, y0)
        if self.corrector is None:
            return y, stats
        x, sweeps, evaluations = self.corrector.run(self, block, y)
        return (x.astype(self.ctx.dtype),
                BlockStats(sweeps=stats.sweeps + sweeps,
                           evaluations=stats.evaluations + evaluations,
                           residual=stats.residual))
