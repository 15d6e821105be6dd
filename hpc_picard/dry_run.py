"""``--dry-run``: what a run would do, computed from the configuration alone.

The plan needs no MPI and no score evaluation: the time grid, how the process grid
splits ranks into sample groups and time ranks, which slices and samples each rank
owns, the rounds and score evaluations (the sampler class's ``bounds``: exact, or the
most and fewest when tol > 0 lets the sweeps stop early), an estimate of each rank's
working memory (:func:`memory_bytes`), and the device each rank would use.
"""
from __future__ import annotations

import os

import numpy as np

from .grid import TimeGrid
from .limits import describe_fit, fixed_bytes
from .parallel import balanced_range


def make_plan(config, n_ranks: int) -> dict:
    """The plan of a validated config on ``n_ranks`` ranks, as plain data."""
    grid = TimeGrid.build(config.T, config.delta, config.blocks, config.steps_per_block)
    sampler = config.sampler_class
    time_ranks = config.resolved_time_ranks(n_ranks)
    groups = n_ranks // time_ranks
    cost = sampler.bounds(config)

    ranks = []
    for rank in range(n_ranks):
        group, position = divmod(rank, time_ranks)
        first, stop = balanced_range(config.num_samples, groups, group)
        ranks.append({"rank": rank, "group": group, "time_rank": position,
                      "samples": (first, stop),
                      "slices": sampler.owned_slices(config, time_ranks, position),
                      "memory_bytes": memory_bytes(config, n_ranks, rank),
                      "device": "cpu"})
    return {
        "sampler": config.sampler, "model": config.model, "dim": config.dim,
        "num_samples": config.num_samples, "n_ranks": n_ranks,
        "time_ranks": time_ranks, "sample_groups": groups,
        "blocks": grid.describe(),
        "rounds": cost.rounds, "min_rounds": cost.min_rounds,
        "sequential_rounds": grid.total_slices,
        "evaluations_per_sample": cost.evaluations,
        "min_evaluations_per_sample": cost.min_evaluations,
        "sweeps_per_block": cost.rounds // grid.num_blocks, "rounds_detail": cost.detail,
        "early_stopping": not cost.exact,
        "checkpoints": (-(-grid.num_blocks // config.checkpoint_every) if config.checkpoint else 0),
        "ranks": ranks,
    }


def memory_bytes(config, n_ranks: int, rank: int) -> int:
    """Resident memory of world rank ``rank`` of ``n_ranks``, in bytes: the interpreter,
    libraries, model and time grid (limits.fixed_bytes), the sampler's arrays for its
    samples and slices (the class's ``memory_bytes``), plus, on rank 0, every sample
    twice: once gathered for the output and the checkpoints, once as the file's image
    built in memory (output.hdf5_image). The model's per-call temporaries are not
    included.
    """
    time_ranks = config.resolved_time_ranks(n_ranks)
    group, position = divmod(rank, time_ranks)
    first, stop = balanced_range(config.num_samples, n_ranks // time_ranks, group)
    total = fixed_bytes(config)
    total += config.sampler_class.memory_bytes(config, stop - first, time_ranks, position)
    if rank == 0:
        total += 2 * config.num_samples * config.dim * np.dtype(config.dtype).itemsize
    return int(total)


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def format_plan(plan: dict, max_rows: int = 16) -> str:
    """The plan as text; long block and rank lists are cut to their ends."""
    bound = "at most " if plan["early_stopping"] else ""
    lines = [
        f"plan: {plan['sampler']} on {plan['model']} (d={plan['dim']}), "
        f"{plan['num_samples']} samples, {plan['n_ranks']} rank(s)",
        f"process grid: {plan['sample_groups']} sample group(s) x {plan['time_ranks']} time rank(s)",
        f"rounds: {bound}{plan['rounds']} ({plan['rounds_detail']}; "
        f"sequential: {plan['sequential_rounds']})",
        f"score evaluations per sample: {bound}{plan['evaluations_per_sample']}",
        f"checkpoints: {plan['checkpoints']}",
        # a node rarely runs more ranks than it has cores
        describe_fit(plan, min(plan["n_ranks"], os.cpu_count() or 1)),
        "blocks (forward time t, from T down to delta):",
        "  block  slices   t_start       t_end         min_step      max_step",
    ]
    for row in _cut(plan["blocks"], max_rows):
        lines.append("  ..." if row is None else
                     f"  {row['block']:>5}  {row['slices']:>6}   {row['t_start']:<12.6g}  "
                     f"{row['t_end']:<12.6g}  {row['min_step']:<12.4g}  {row['max_step']:<12.4g}")
    lines.append("ranks:")
    lines.append("  rank  group  time_rank  samples       slices      memory      device")
    for row in _cut(plan["ranks"], max_rows):
        if row is None:
            lines.append("  ...")
            continue
        samples = f"[{row['samples'][0]}, {row['samples'][1]})"
        slices = f"[{row['slices'][0]}, {row['slices'][1]})"
        lines.append(f"  {row['rank']:>4}  {row['group']:>5}  {row['time_rank']:>9}  {samples:<12}  "
                     f"{slices:<10}  {_bytes(row['memory_bytes']):<10}  {row['device']}")
    return "\n".join(lines)


def _cut(rows: list, max_rows: int) -> list:
    if len(rows) <= max_rows:
        return rows
    half = max_rows // 2
    return rows[:half] + [None] + rows[-half:]
