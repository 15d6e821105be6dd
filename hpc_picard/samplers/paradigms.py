"""ParaDiGMS (Shih et al., NeurIPS 2023): Picard iteration in a sliding window.

The whole trajectory of the sequential SDE sampler (all blocks' slices, in order,
L in total) is treated as one fixed-point problem. A window of p slices starts at the
first slice whose state is not yet accepted, Y_w. One round

  1. evaluates the scores at the window's states Y_w .. Y_{w+p-1} (one batched call
     per rank: slice j lives on the rank owning ring position j mod p for as long as
     the window holds it, so no state or noise row ever changes ranks),
  2. rebuilds Y_{w+1} .. Y_{w+p} with one prefix sum (integrating factor e^{tau},
     tau the reverse time since slice w; an MPI Exscan between ranks), and
  3. measures r_m = |Y_m^new - Y_m^old|^2 / (d v_m) per sample (v_m = e^{2 e} - 1, the
     noise variance of the step that ends at m, as in the PIADM stopping rule).

The window then slides to the first state with max over samples r_m > tol^2 (or past
its end if there is none): every state before it was rebuilt from accepted states that
did not move by more than the tolerance, and the first failing state itself was
rebuilt from accepted states only, so it is accepted too. The slices that enter the
window are initialised with the window's last state. A round always accepts at least
one slice, so at most L rounds are needed, and tol = 0 advances exactly one slice a
round, reproducing sequential-sde to round-off.

The grid and the noise are those of sequential-sde: slice j of block n uses xi keyed by
(n, j), so the two samplers can be compared sample by sample.

Two forms of the window update share that fixed point (``form``):

- ``exponential`` (default): step 2 above, the linear part of the drift integrated
  exactly and only the score lagged by one round, as in PIADM's sweeps;
- ``additive``: the original ParaDiGMS update, Y_m = Y_w + sum_{w<=j<m} (F_j(Y_j) - Y_j)
  with F_j the whole exponential-integrator step, so the linear part is lagged too.
  It reproduces the round counts of diffusers' ParaDiGMS loop (DDPMParallelScheduler)
  exactly on the same model, grid and noise (tests/test_diffusers.py).

Neither form is faster on every model: on the diffusers test model the exponential form
needs 40 rounds where the additive one needs 48 (160 steps, tol 0.01); on a Gaussian
target in the bulk, where the score's -Y/sigma^2 nearly cancels the drift's +Y, lagging
both parts (additive) can converge faster.
"""
from __future__ import annotations

import numpy as np

from ..parallel import balanced_range
from ..process import step_coefficients, step_noise_scale
from .base import F64, BlockStats, Sampler
from .engine import RingWindow
from .options import BALANCE, TOL, Cost, Option

FORMS = ("exponential", "additive")


class ParadigmsSampler(Sampler):
    """``window`` p: slices evaluated per round; ``tol``: acceptance threshold on the
    residual (see the module docstring)."""

    name = "paradigms"
    path = "sde"
    time_parallel = True
    whole_trajectory = True
    balance_auto = True         # --balance auto steals (samplers/balance.py)
    options = (
        TOL,
        Option("window", int, 64, "Slices per sliding window p (a state is accepted once "
               "r <= tol^2).", positive=True),
        Option("paradigms_form", str, "exponential", "Window update: exponential (integrating "
               "factor) or additive (the original ParaDiGMS).", choices=FORMS),
        BALANCE,
    )

    @classmethod
    def owned_slices(cls, config, time_ranks, time_rank) -> tuple:
        """This rank's ring positions (engine.RingWindow): slice j of the trajectory is
        at position j mod p and stays on the rank that owns that position."""
        size = min(config.window, config.blocks * config.steps_per_block)
        return balanced_range(size, time_ranks, time_rank)

    @classmethod
    def bounds(cls, config) -> Cost:
        """A round evaluates the window (min(p, slices left)) and accepts at least one
        slice and at most the window: between ceil(L / p) and L rounds for L slices. The
        most evaluations are those of one slice a round (tol = 0)."""
        total, window = config.blocks * config.steps_per_block, config.window
        full = min(window, total)
        most = (total - full) * window + full * (full + 1) // 2
        fewest_rounds = -(-total // window)
        return Cost(total, most, fewest_rounds, total,
                    f"windows of {window} slices, at least {fewest_rounds} rounds")

    @classmethod
    def memory_bytes(cls, config, samples, time_ranks, time_rank) -> int:
        """The ring window's arrays (engine.RingWindow) for this rank's c positions:
        c + 1 states and c scores (state dtype); c prefix sums, 2c fixed noise rows
        (the current ones and those drawn ahead) and seven single rows (float64); the
        sweep's work blocks are small."""
        lo, hi = cls.owned_slices(config, time_ranks, time_rank)
        owned, row = hi - lo, samples * config.dim
        return (3 * owned + 7) * row * F64 + (2 * owned + 2) * row * np.dtype(config.dtype).itemsize

    def __init__(self, context, window: int, tol: float, form: str = "exponential", **options):
        super().__init__(context, **options)
        if form not in FORMS:
            raise ValueError(f"unknown paradigms form {form!r}; expected one of {FORMS}")
        self.window = int(window)
        self.tol = float(tol)
        self.form = form
        self.host_kernels = form == "exponential"       # the additive form has a lagged term

    @classmethod
    def from_config(cls, config, context):
        return cls(context, window=config.window, tol=config.tol, form=config.paradigms_form,
                   balance=config.balance)

    def run_trajectory(self, grid, y0):
        """Sample across every block of ``grid`` from y0, shape (S, d), at reverse time 0.

        Returns the end state (S, d), identical on every rank, and one BlockStats whose
        ``sweeps`` is the number of rounds and ``residual`` the square root of the largest r_m
        of a state that passed the test.

        The window is the sweep engine's ring (engine.RingWindow: a slice stays on one
        rank while the window passes over it), in the integrating factor's frame of the
        whole trajectory (r: reverse time since its start), so that a slice's
        coefficients and fixed increment do not change as the window slides over it.
        """
        times = grid.all_times()                                  # forward times, T -> delta
        steps = times[:-1] - times[1:]
        total = len(steps)
        keys = [(block, j) for block in grid.blocks for j in range(block.num_slices)]
        _, c, b = step_coefficients(steps, self.path)
        y0 = np.asarray(y0)
        S, d = y0.shape
        if self.form == "exponential":
            # Y_m = e^{r_m} (e^{-r_w} Y_w + sum_j e^{-r_{j+1}} (c s + b xi))
            r = np.concatenate([[0.0], np.cumsum(steps)])
            growth, factor, linear = np.exp(r), np.exp(-r[1:]), None
        else:
            # Y_m = Y_w + sum_j (F_j(Y_j) - Y_j), F_j = a_j Y + c_j s + b_j xi
            growth, factor, linear = np.ones(total + 1), np.ones(total), np.expm1(steps)

        def draw(j: int, out: np.ndarray):
            """b_j xi_j in the frame, for global slice j, into out (S, d)."""
            block, local = keys[j]
            self.increments(block, [local], out=out[None], scale=[factor[j] * b[j]])

        engine = RingWindow(self.ctx.comm, self.ctx.verdicts, self.ctx.backend, self.ctx.dtype,
                            (S, d))
        engine.start(y0, total, self.window, growth=growth, weight=factor * c,
                     scale=step_noise_scale(steps) * d, draw=draw, linear=linear, tol=self.tol,
                     describe=lambda j: f"block {keys[j][0].index}, slice {keys[j][1]}")
        balancer = self.score_balancer((S, d))
        rounds, accepted_residual = 0, 0.0
        while True:
            balancer.score([(x, times[slices], out) for x, slices, out in engine.pending()])
            engine.sweep()
            rounds += 1
            # Slide to the first failing state (accepted: it was rebuilt from accepted
            # states only); the states before it passed the test.
            advance = min(engine.first_failing, engine.size)
            positions, r = engine.local_residuals()
            passed = r[positions < engine.first_failing]
            if passed.size:
                accepted_residual = max(accepted_residual, float(passed.max()))
            if engine.offset + advance >= total:
                break
            engine.slide(advance, min(self.window, total - engine.offset - advance))
        end = engine.backend.to_host(engine.end())
        accepted_residual = self.ctx.verdicts.allreduce_max(accepted_residual)
        return (end.astype(self.ctx.dtype, copy=False),
                BlockStats(sweeps=rounds, evaluations=engine.evaluations,
                           residual=float(np.sqrt(accepted_residual))))
