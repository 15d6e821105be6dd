"""ParaDiGMS (Shih et al., NeurIPS 2023): Picard iteration in a sliding window.

The whole trajectory of the sequential SDE sampler (all blocks' slices, in order,
L in total) is treated as one fixed-point problem. A window of p slices starts at the
first slice whose state is not yet accepted, Y_w. One round

  1. evaluates the scores at the window's states Y_w .. Y_{w+p-1} (one batched call,
     the window's slices spread over the time communicator's ranks),
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

import time

import numpy as np

from ..parallel import balanced_range
from ..process import step_coefficients, step_noise_scale
from .base import F64, BlockStats, Sampler
from .options import TOL, Cost, Option

FORMS = ("exponential", "additive")


class ParadigmsSampler(Sampler):
    """``window`` p: slices evaluated per round; ``tol``: acceptance threshold on the
    residual (see the module docstring)."""

    name = "paradigms"
    path = "sde"
    time_parallel = True
    whole_trajectory = True
    options = (
        TOL,
        Option("window", int, 64, "Slices per sliding window p (a state is accepted once "
               "r <= tol^2).", positive=True),
        Option("paradigms_form", str, "exponential", "Window update: exponential (integrating "
               "factor) or additive (the original ParaDiGMS).", choices=FORMS),
    )

    @classmethod
    def owned_slices(cls, config, time_ranks, time_rank) -> tuple:
        """This rank's share of a full window (the window slides over all blocks)."""
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
        """The replicated window of p + 1 states, the cached increments of its p slices
        and the gathered rebuild (p states), float64; per owned slice the scores (state
        dtype), g, xi and the local rebuild (float64)."""
        lo, hi = cls.owned_slices(config, time_ranks, time_rank)
        owned, row = hi - lo, samples * config.dim
        arrays = 3 * config.window + 1 + 3 * owned
        return arrays * row * F64 + owned * row * np.dtype(config.dtype).itemsize

    def __init__(self, context, window: int, tol: float, form: str = "exponential", **options):
        super().__init__(context, **options)
        if form not in FORMS:
            raise ValueError(f"unknown paradigms form {form!r}; expected one of {FORMS}")
        self.window = int(window)
        self.tol = float(tol)
        self.form = form

    @classmethod
    def from_config(cls, config, context):
        return cls(context, window=config.window, tol=config.tol, form=config.paradigms_form)

    def run_trajectory(self, grid, y0):
        """Sample across every block of ``grid`` from y0, shape (S, d), at reverse time 0.

        Returns the end state (S, d), identical on every rank, and one BlockStats whose
        ``sweeps`` is the number of rounds and ``residual`` the square root of the largest r_m
        of a state that passed the test.
        """
        comm = self.ctx.comm
        times = grid.all_times()                                  # forward times, T -> delta
        steps = times[:-1] - times[1:]
        total = len(steps)
        keys = [(b.index, j) for b in grid.blocks for j in range(b.num_slices)]
        _, c, b = step_coefficients(steps, self.path)
        v = step_noise_scale(steps)
        S, d = y0.shape
        # window[i] = Y_{start+i}, replicated on every rank of the time communicator.
        window = np.empty((self.window + 1, S, d))
        window[...] = np.asarray(y0, dtype=np.float64)
        noise_cache = {}
        start, rounds, evaluations, accepted_residual = 0, 0, 0, 0.0
        while start < total:
            size = min(self.window, total - start)
            ranges = [balanced_range(size, comm.size, r) for r in range(comm.size)]
            lo, hi = ranges[comm.rank]
            owned = hi - lo
            tau = np.concatenate([[0.0], np.cumsum(steps[start:start + size])])
            idx = np.arange(start + lo, start + hi)
            block_index, slice_index = keys[idx[0]] if owned else keys[start]
            score = self.score(window[lo:hi].astype(self.ctx.dtype, copy=False), times[idx],
                               block_index, slice_index)
            xi = self._increments(noise_cache, keys, idx, S, d)
            if self.form == "exponential":
                # Integrating factor: Y_m = e^{tau_m} (Y_w + sum_j e^{-tau_{j+1}} (c s + b xi)).
                decay = np.exp(-tau[lo + 1:hi + 1])
                g = (decay * c[idx])[:, None, None] * score.astype(np.float64)
                g += (decay * b[idx])[:, None, None] * xi
            else:
                # Additive: Y_m = Y_w + sum_j (F_j(Y_j) - Y_j), F_j = a_j Y + c_j s + b_j xi.
                g = (c[idx])[:, None, None] * score.astype(np.float64)
                g += np.expm1(steps[idx])[:, None, None] * window[lo:hi]
                g += b[idx][:, None, None] * xi
            np.cumsum(g, axis=0, out=g)
            offset = comm.exscan_sum(g[-1] if owned else np.zeros((S, d)))
            rebuilt = window[0] + offset + g
            if self.form == "exponential":
                rebuilt *= np.exp(tau[lo + 1:hi + 1])[:, None, None]
            # r for window positions lo+1 .. hi (the states this rank rebuilt).
            r = ((rebuilt - window[lo + 1:hi + 1]) ** 2).sum(axis=2).max(axis=1) / (d * v[idx])
            failing = np.flatnonzero(r > self.tol**2)
            first_local = lo + 1 + int(failing[0]) if failing.size else size + 1
            first_fail = int(comm.allreduce_min(float(first_local)))
            advance = min(first_fail, size)
            # States that passed the test (the first failing one is accepted unmeasured).
            accepted = r[:max(0, min(first_fail - 1, size) - lo)]
            if accepted.size:
                accepted_residual = max(accepted_residual, float(accepted.max()))
            window[1:size + 1] = comm.allgather_rows(rebuilt, [h - l for l, h in ranges])
            rounds += 1
            evaluations += size
            # Slide: keep the states from the new start on, fill the new slots with the
            # window's last state.
            keep = size - advance
            window[:keep + 1] = window[advance:size + 1].copy()
            window[keep + 1:] = window[keep]
            start += advance
            for j in [j for j in noise_cache if j < start]:
                del noise_cache[j]
        accepted_residual = comm.allreduce_max(accepted_residual)
        return (window[0].astype(self.ctx.dtype),
                BlockStats(sweeps=rounds, evaluations=evaluations,
                           residual=float(np.sqrt(accepted_residual))))

    def _increments(self, cache: dict, keys: list, slices, S: int, d: int) -> np.ndarray:
        """xi of the given global slices, shape (J, S, d), drawn once and cached while
        the slice stays in the window."""
        from .. import noise
        started = time.perf_counter()
        out = np.empty((len(slices), S, d))
        for i, j in enumerate(slices):
            if j not in cache:
                block_index, local = keys[j]
                cache[j] = noise.gaussian(self.ctx.seed, noise.STREAM_INCREMENT, block_index,
                                          local, self.ctx.samples, d)
            out[i] = cache[j]
        self.ctx.timers.noise_seconds += time.perf_counter() - started
        return out
