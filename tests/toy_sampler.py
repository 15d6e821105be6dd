"""A sampler added the documented way (docs/design.md, "Adding a sampler"): this module
plus one registry line. tests/test_sampler_options.py registers it and checks that its
option reaches the configuration, the TOML keys, the command line and the dry run."""
from __future__ import annotations

import numpy as np

from hpc_picard import noise
from hpc_picard.samplers.base import F64, BlockStats, Sampler
from hpc_picard.samplers.options import Cost, Option


class EulerSampler(Sampler):
    """Euler-Maruyama on the reverse SDE, ``euler_substeps`` steps per slice:
    Y <- Y + h (Y + 2 s(Y, t)) + sqrt(2 h) xi, ranks splitting the samples."""

    name = "euler-sde"
    path = "sde"
    time_parallel = False
    options = (Option("euler_substeps", int, 1, "Euler-Maruyama steps per slice.", positive=True),)

    @classmethod
    def bounds(cls, config) -> Cost:
        per_block = config.steps_per_block * config.euler_substeps
        steps = config.blocks * per_block
        return Cost(steps, steps, steps, steps, f"{per_block} per block")

    @classmethod
    def memory_bytes(cls, config, samples, time_ranks, time_rank) -> int:
        """The state, its score and one slice's increments, float64."""
        return (2 + config.euler_substeps) * samples * config.dim * F64

    def __init__(self, context, euler_substeps: int):
        super().__init__(context)
        self.substeps = int(euler_substeps)

    def run_block(self, block, y0):
        y = np.array(y0, dtype=np.float64)
        samples, dim = y.shape
        for j, step in enumerate(block.steps):
            h = step / self.substeps
            xi = noise.gaussian(self.ctx.seed, noise.STREAM_INCREMENT, block.index, j,
                                self.ctx.samples, self.substeps * dim)
            xi = xi.reshape(samples, self.substeps, dim)
            for k in range(self.substeps):
                t = np.array([block.times[j] - k * h])
                s = self.score(y[None].astype(self.ctx.dtype), t, block.index, j)[0]
                y += h * (y + 2.0 * s) + np.sqrt(2.0 * h) * xi[:, k]
        steps = block.num_slices * self.substeps
        return y.astype(self.ctx.dtype), BlockStats(sweeps=steps, evaluations=steps)
