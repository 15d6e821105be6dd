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
"""
from __future__ import annotations

import numpy as np

from ..parallel import balanced_range
from ..process import step_coefficients, step_noise_scale
from .base import BlockStats, Sampler
from .monitor import SweepMonitor


class PicardSampler(Sampler):
    """``picard_iters`` K: most sweeps per block; ``tol``: stop once max r_m <= tol^2
    (tol = 0 runs exactly K sweeps)."""

    name = "piadm-sde"
    path = "sde"
    time_parallel = True

    def __init__(self, context, picard_iters: int, tol: float, **options):
        super().__init__(context, **options)
        self.picard_iters = int(picard_iters)
        self.tol = float(tol)

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
            states, rebuilt = rebuilt, states
            if self.tol > 0 and residual <= self.tol**2:
                break
        end = comm.bcast_array(states[-1].copy(), root=comm.size - 1)
        return (end.astype(self.ctx.dtype),
                BlockStats(sweeps=sweeps, evaluations=sweeps * block.num_slices,
                           residual=float(np.sqrt(residual))))
