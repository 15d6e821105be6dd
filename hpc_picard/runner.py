"""Runs one sampling job on a communicator: config -> process grid -> sampler -> results.

:func:`run` is the library entry point under the CLI. It takes the world
communicator explicitly; nothing below it reaches for COMM_WORLD.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from . import checkpoint, conditioning, noise
from .config import RunConfig
from .emulation import EmulatedLatency
from .grid import TimeGrid
from .models import resolve_dim, score_model
from .parallel import Communicator, ProcessGrid
from .plans import resolve_plan
from .safety import agree, build_checked
from .arrays import make_backend
from .samplers import SamplerContext, build_sampler

log = logging.getLogger("hpc_picard")


@dataclass
class RunResult:
    """samples: (num_samples, d) on world rank 0, None elsewhere; stats: on every rank.

    model: the score model the run used (its dim is the samples' d); placement: where
    this rank evaluated it (:class:`hpc_picard.devices.Placement`); placements: every
    world rank's placement line, in rank order (for the output's provenance); config:
    the configuration as run (d the model's, an --accuracy plan filled in); labels: every sample's
    class label (num_samples,) for conditional runs, else None.
    """
    samples: np.ndarray | None
    stats: dict = field(default_factory=dict)
    per_block: dict = field(default_factory=dict)
    model: object = None
    placement: object = None
    placements: list = field(default_factory=list)
    config: object = None
    labels: np.ndarray | None = None


def build_grid(config: RunConfig) -> TimeGrid:
    return TimeGrid.build(config.T, config.delta, config.blocks, config.steps_per_block)


def initial_state(config: RunConfig, samples: np.ndarray, dim: int) -> np.ndarray:
    """Y_0 ~ N(0, I) at reverse time 0, keyed by global sample index."""
    y0 = noise.gaussian(config.seed, noise.STREAM_INITIAL, 0, 0, samples, dim)
    return y0.astype(config.dtype)


def run(config: RunConfig, world: Communicator, model=None, on_block=None,
        on_sweep=None, resume: bool = False, placement_log=None) -> RunResult:
    """Sample ``config.num_samples`` points; the config must already be validated.

    ``on_block(block_index, block_stats)`` is called on every rank after each block
    (and its checkpoint), ``on_sweep(block_index, sweep, residual)`` after each Picard
    sweep (residual: the sqrt of max_m r_m, docs/method.md). With
    ``config.checkpoint`` set, the state is checkpointed every ``checkpoint_every``
    blocks and after the last; with ``resume`` the run continues from that checkpoint
    if it exists (raising checkpoint.CheckpointError on every rank if it is refused).
    Before sampling starts, world rank 0 logs one line per rank saying where it runs
    (host, rank, device): to ``placement_log(line)`` if given, else the logger.

    ``model``: any object with ``dim`` and ``score`` (wrapped once, models.score_model),
    else the one ``config.model`` names. Its d is the run's: ``config.dim`` 0 takes it,
    a different one raises ConfigError on every rank before any sampling.
    """
    from . import arrays, devices, kernels
    start = time.perf_counter()
    arrays.keep_freed_memory()      # a model's temporaries reuse memory, not fresh pages
    # Placement is collective (the node-local split), so every rank does it, and
    # before any model is built: the model is created on the rank's device.
    placement = agree(world, lambda: devices.place(config.device, world))
    world.cuda_aware = devices.mpi_is_cuda_aware(config.cuda_aware_mpi)
    where = world.allgather_obj(placement.describe())
    if world.rank == 0:
        for rank, line in enumerate(where):
            # rank 0 prints them together, each under the rank it describes
            if placement_log is not None:
                placement_log(line)
            else:
                log.info(line, extra={"rank": rank})
    if model is None:
        model = agree(world, lambda: build_checked(config, placement.torch_device))
    else:
        model = score_model(model)
    # The model owns d; then --accuracy plans from it (a no-op without --accuracy).
    config = resolve_plan(resolve_dim(config, model))
    grid = build_grid(config)
    pgrid = ProcessGrid.build(world, config.resolved_time_ranks(world.size))
    first, stop = pgrid.sample_range(config.num_samples)
    samples = np.arange(first, stop)
    # The same verdict on every rank: the labels follow from the config alone.
    condition, labels = conditioning.build_condition(config, model, samples)
    context = SamplerContext(model=model, comm=pgrid.time, samples=samples,
                             dtype=np.dtype(config.dtype), seed=config.seed,
                             max_batch=config.max_batch, on_sweep=on_sweep, condition=condition,
                             verdicts=pgrid.verdicts,
                             backend=make_backend(config.array_backend, model,
                                                  placement.torch_device),
                             latency=EmulatedLatency.parse(config.emulate_latency))
    sampler = build_sampler(config, context)
    if sampler.host_kernels and context.backend.name == "numpy":
        kernels.warm_up(context.dtype)      # import numba and load (or compile) them now
    # imports, placement, the model build and the compiled kernels' loading: not
    # sampling, and not "arithmetic" either
    setup_seconds = time.perf_counter() - start

    io_seconds = 0.0
    saved = None
    if config.checkpoint and resume:
        saved, io_seconds = checkpoint.load(pgrid, config.checkpoint, config)
        if saved is None:
            log.info("no checkpoint at %s: starting from block 0", config.checkpoint)
        else:
            checkpoint.check_labels(saved, labels, config.checkpoint)
            log.info("resuming from %s at block %d (blocks 0-%d)", config.checkpoint,
                     saved.next_block, grid.num_blocks - 1)
    if saved is None:
        saved = checkpoint.RunState(next_block=0, states=None)
        y = initial_state(config, samples, model.dim)
    else:
        saved.restarts += 1
        y = np.ascontiguousarray(saved.states[first:stop])
    sweeps, residuals = list(saved.sweeps), list(saved.residuals)
    evaluations = saved.evaluations

    def timings() -> dict:
        """Cumulative seconds, earlier segments (rank 0's clock) plus this one."""
        now = {"wall_time": time.perf_counter() - start,
               "score_time": context.timers.score_seconds,
               "noise_time": context.timers.noise_seconds,
               "communication_time": pgrid.comm_seconds(),
               "io_time": io_seconds, "setup_time": setup_seconds}
        return {k: v + saved.timings.get(k, 0.0) for k, v in now.items()}

    if getattr(sampler, "window_checkpoints", False):
        # Wavefront PIADM: one record for the whole grid, like ParaDiGMS, but its
        # in-flight window is checkpointed whenever blocks retire.
        from .samplers.wavefront import WavefrontState, whole_history, whole_window
        resumed = None
        if saved.window is not None:
            checkpoint.check_history(saved, sampler.history_width(), config.checkpoint)
            rows = np.swapaxes(saved.window_states[first:stop], 0, 1)
            resumed = WavefrontState(states=np.ascontiguousarray(rows), **saved.window)
            if saved.window_history is not None:
                resumed.history = np.ascontiguousarray(
                    np.moveaxis(saved.window_history[first:stop], 0, 2))
        written = [resumed.front if resumed else 0]

        def on_state(st):
            nonlocal io_seconds
            retired = sampler.retired_blocks(grid, st)
            if not config.checkpoint or retired == sampler.retired_blocks(grid, written[0]):
                return
            if retired % config.checkpoint_every and retired != grid.num_blocks:
                return
            written[0] = st.front
            state = checkpoint.RunState(
                next_block=0, states=None, evaluations=st.evaluations, restarts=saved.restarts,
                timings=timings(), window=st.counters(),
                window_states=whole_window(pgrid.time, st),
                window_history=whole_history(pgrid.time, st))
            io_seconds += checkpoint.save(pgrid, config.checkpoint, st.states[0], state, config)
        y, bstats = sampler.run_trajectory(grid, y, resumed, on_state)
        sweeps, residuals, evaluations = [bstats.sweeps], [bstats.residual], bstats.evaluations
        if on_block is not None:
            on_block(0, bstats)
    elif sampler.whole_trajectory:
        # ParaDiGMS slides its window across block boundaries: it gets the whole grid
        # and is recorded as one block (index 0); the block loop below is then empty.
        # (It cannot checkpoint between blocks: RunConfig.validate refuses that.)
        y, bstats = sampler.run_trajectory(grid, y)
        sweeps, residuals, evaluations = [bstats.sweeps], [bstats.residual], bstats.evaluations
        if on_block is not None:
            on_block(0, bstats)
    for block in (() if sampler.whole_trajectory else grid.blocks[saved.next_block:]):
        y, bstats = sampler.run_block(block, y)
        sweeps.append(bstats.sweeps)
        evaluations += bstats.evaluations
        residuals.append(bstats.residual)
        log.debug("block %d (blocks 0-%d): %d sweeps, residual %.3g", block.index,
                  grid.num_blocks - 1, bstats.sweeps, bstats.residual)
        done = block.index + 1
        if config.checkpoint and (done % config.checkpoint_every == 0 or done == grid.num_blocks):
            state = checkpoint.RunState(next_block=done, states=None, sweeps=sweeps,
                                        residuals=residuals, evaluations=evaluations,
                                        restarts=saved.restarts, timings=timings(), labels=labels)
            io_seconds += checkpoint.save(pgrid, config.checkpoint, y, state, config)
            log.debug("checkpoint after block %d written to %s", block.index, config.checkpoint)
        if on_block is not None:
            on_block(block.index, bstats)

    # Every time rank of a group holds the group's samples: time rank 0 of each group
    # sends them to world rank 0 (time rank 0 of group 0) over the sample communicator.
    gathered = pgrid.samples.gather_rows(y, root=0) if pgrid.time.rank == 0 else None
    pgrid.free()
    stats = {
        "rounds": int(sum(sweeps)),
        "evaluations": evaluations,
        "sequential_rounds": grid.total_slices,
        **timings(),
        "restarts": saved.restarts,
    }
    if condition is not None:
        # evaluations count score evaluations; with guidance each is a pair of rows
        stats["guidance_scale"] = config.guidance_scale
        stats["network_rows_per_evaluation"] = condition.rows_per_state
    per_block = {"sweeps_per_block": np.array(sweeps, dtype=np.int64),
                 "residual_per_block": np.array(residuals, dtype=np.float64)}
    return RunResult(samples=gathered if world.rank == 0 else None, stats=stats,
                     per_block=per_block, model=model, placement=placement, placements=where,
                     config=config, labels=labels)
