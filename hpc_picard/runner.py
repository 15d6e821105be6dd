"""Runs one sampling job on a communicator: config -> process grid -> sampler -> results.

:func:`run` is the library entry point under the CLI. It takes the world
communicator explicitly; nothing below it reaches for COMM_WORLD.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from . import noise
from .config import RunConfig
from .grid import TimeGrid
from .models import build_model
from .parallel import Communicator, ProcessGrid
from .plans import resolve_plan
from .samplers import SamplerContext, build_sampler


@dataclass
class RunResult:
    """samples: (num_samples, d) on world rank 0, None elsewhere; stats: on every rank."""
    samples: np.ndarray | None
    stats: dict = field(default_factory=dict)
    per_block: dict = field(default_factory=dict)


def build_grid(config: RunConfig) -> TimeGrid:
    return TimeGrid.build(config.T, config.delta, config.blocks, config.steps_per_block)


def initial_state(config: RunConfig, samples: np.ndarray, dim: int) -> np.ndarray:
    """Y_0 ~ N(0, I) at reverse time 0, keyed by global sample index."""
    y0 = noise.gaussian(config.seed, noise.STREAM_INITIAL, 0, 0, samples, dim)
    return y0.astype(config.dtype)


def run(config: RunConfig, world: Communicator, model=None, on_block=None) -> RunResult:
    """Sample ``config.num_samples`` points; the config must already be validated.

    ``on_block(block_index, block_stats)`` is called on every rank after each block.
    """
    start = time.perf_counter()
    config = resolve_plan(config)       # a no-op unless --accuracy asks for a plan
    grid = build_grid(config)
    model = build_model(config) if model is None else model
    pgrid = ProcessGrid.build(world, config.resolved_time_ranks(world.size))
    first, stop = pgrid.sample_range(config.num_samples)
    samples = np.arange(first, stop)
    context = SamplerContext(model=model, comm=pgrid.time, samples=samples,
                             dtype=np.dtype(config.dtype), seed=config.seed,
                             max_batch=config.max_batch)
    sampler = build_sampler(config, context)

    y = initial_state(config, samples, model.dim)
    sweeps, residuals, evaluations = [], [], 0
    if sampler.whole_trajectory:
        # ParaDiGMS slides its window across block boundaries: it gets the whole grid
        # and is recorded as one block (index 0); the block loop below is then empty.
        y, bstats = sampler.run_trajectory(grid, y)
        sweeps, residuals, evaluations = [bstats.sweeps], [bstats.residual], bstats.evaluations
        if on_block is not None:
            on_block(0, bstats)
    for block in (() if sampler.whole_trajectory else grid.blocks):
        y, bstats = sampler.run_block(block, y)
        sweeps.append(bstats.sweeps)
        evaluations += bstats.evaluations
        residuals.append(bstats.residual)
        if on_block is not None:
            on_block(block.index, bstats)

    # Every time rank of a group holds the group's samples: time rank 0 of each group
    # sends them to world rank 0 (time rank 0 of group 0) over the sample communicator.
    gathered = pgrid.samples.gather_rows(y, root=0) if pgrid.time.rank == 0 else None
    wall = time.perf_counter() - start
    stats = {
        "rounds": int(sum(sweeps)),
        "evaluations": evaluations,
        "sequential_rounds": grid.total_slices,
        "wall_time": wall,
        "score_time": context.timers.score_seconds,
        "noise_time": context.timers.noise_seconds,
        "communication_time": pgrid.comm_seconds(),
    }
    per_block = {"sweeps_per_block": np.array(sweeps, dtype=np.int64),
                 "residual_per_block": np.array(residuals, dtype=np.float64)}
    return RunResult(samples=gathered if world.rank == 0 else None, stats=stats,
                     per_block=per_block)
