"""The sequential reference samplers: one exponential-integrator step after another.

Each step freezes the score at its start (docs/method.md, "One step"):

    Y_{j+1} = e^{e} Y_j + c_j s(Y_j, t_j) + b_j xi_j,

c_j = 2 (e^{e} - 1), b_j = sqrt(e^{2e} - 1) for the SDE and c_j = e^{e} - 1, b_j = 0
for the probability-flow ODE. A block of M slices costs M rounds. Ranks split the
samples, not the time axis.
"""
from __future__ import annotations

import numpy as np

from ..process import step_coefficients
from .base import F64, BlockStats, Sampler
from .options import Cost


class SequentialSampler(Sampler):
    name = "sequential-sde"
    path = "sde"
    time_parallel = False
    options = ()

    @classmethod
    def bounds(cls, config) -> Cost:
        steps = config.blocks * config.steps_per_block
        return Cost(steps, steps, steps, steps, f"{config.steps_per_block} per block")

    @classmethod
    def memory_bytes(cls, config, samples, time_ranks, time_rank) -> int:
        """A block's increments and a few states, float64."""
        row = samples * config.dim
        return (config.steps_per_block + 4) * row * F64

    def run_block(self, block, y0):
        a, c, b = step_coefficients(block.steps, self.path)
        xi = self.increments(block, range(block.num_slices)) if self.path == "sde" else None
        y = np.array(y0, dtype=self.ctx.dtype)
        for j in range(block.num_slices):
            s = self.score(y[None], block.score_times[j:j + 1], block.index, j)[0]
            nxt = a[j] * y.astype(np.float64) + c[j] * s
            if xi is not None:
                nxt += b[j] * xi[j]
            y = nxt.astype(self.ctx.dtype)
        return y, BlockStats(sweeps=block.num_slices, evaluations=block.num_slices)


class SequentialODESampler(SequentialSampler):
    name = "sequential-ode"
    path = "ode"
