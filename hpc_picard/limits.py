"""The range of every option, and whether a run fits in the node's memory.

:data:`RANGES` gives each numeric RunConfig field its smallest and largest accepted
value and the reason for them (docs/operations.md lists the same table). Values are
checked against it after the finer checks of ``RunConfig.validate``, so a value
nothing else objects to still cannot overflow the clock, wrap the noise key or
allocate without bound. :func:`check_memory` then refuses a run whose estimate
(:func:`rank_bytes`, the same figure ``--dry-run`` prints) exceeds what the node has
available, before anything large is allocated.
"""
from __future__ import annotations

import os

from .config import ConfigError, model_kind

INT32 = 2**31 - 1

#: field -> (smallest, largest, why) for every numeric RunConfig field, the sampler
#: classes' options included (tests/test_faults.py checks that none is missing). Bounds
#: are inclusive; T and delta also obey T > delta (validate). Sizes are bounded by
#: memory first (check_memory); these caps stop a typo (1e8 for 1e3) before it reaches
#: the estimate.
RANGES = {
    "dim": (0, INT32, "one sample's numbers must be indexable by a 32-bit int (BLAS, FFT); "
                      "0: the model's own d"),
    "num_samples": (1, INT32, "sample indices key the noise as 32-bit ints"),
    "blocks": (1, 100_000, "each block costs a collective round trip and a checkpoint"),
    "steps_per_block": (1, 1_000_000, "a block's slices are held in memory at once"),
    "picard_iters": (1, 100_000, "sweeps per block; more than the slices per block is no gain"),
    "tol": (0.0, 1e6, "residuals are normalised by the step's noise scale: O(1)"),
    "seed": (0, 2**64 - 1, "the noise generator is keyed by a 64-bit seed; larger values would wrap"),
    "T": (1e-6, 100.0, "exp(-2T) is far below float64 resolution long before T = 100; "
                       "beyond it the step arithmetic overflows"),
    "delta": (1e-8, 100.0, "below 1e-8 the last steps approach float64 round-off of t"),
    "time_ranks": (-1, 1 << 20, "ranks per sample group; 0: all ranks, -1: auto"),
    "max_batch": (0, INT32, "rows per score call"),
    "checkpoint_every": (1, 100_000, "blocks between checkpoints"),
    "grf_k0": (1e-6, 1e6, "the spectrum's corner wavenumber, in grid units"),
    "grf_alpha": (0.0, 64.0, "larger decay exponents underflow every eigenvalue but the first"),
    "gmm_components": (1, 100_000, "each component stores a d-vector and a column of every "
                                   "score call's weights"),
    "gmm_std": (1e-6, 1e6, "the component scale; outside it the mixture's logits overflow"),
    "gmm_radius": (0.0, 1e6, "the means' norm; larger radii overflow the mixture's logits"),
    "corrector_steps": (0, 10_000, "corrector slices per block end"),
    "corrector_time": (1e-9, 100.0, "reverse-time duration of the corrector"),
    "corrector_friction": (1e-9, 1e6, "the corrector's friction gamma"),
    "window": (1, 1 << 22, "paradigms' window; at most the total slices are used"),
    "anderson_depth": (0, 64, "differences kept; each costs a full state per sample"),
    "accuracy": (0.0, 1e3, "sqrt of the KL budget; 0 turns planning off"),
    "active_blocks": (0, 100_000, "wavefront blocks in flight; 0: all blocks"),
    "guidance_scale": (0.0, 1e3, "classifier-free guidance weight w; the guided score grows "
                                 "like (1 + 2w) times the score, so huge w only overflows"),
}

#: the whole time grid is built on every rank (float64 arrays of every slice)
MAX_TOTAL_SLICES = 1 << 22

MIB = 1 << 20
#: resident memory of a rank before sampling: Python, numpy, h5py, mpi4py, hpc_picard
#: (measured 86 MiB for a tiny run on Linux, x86-64; rounded up)
BASELINE_BYTES = 100 * MIB
#: more for the network models: torch and its kernels (measured 185 MiB; weights extra)
TORCH_BYTES = 250 * MIB
#: bytes of the time grid per slice: times, steps and the clock's tables in float64
GRID_BYTES_PER_SLICE = 8 * 8


def check_ranges(config):
    """ConfigError for the first field outside :data:`RANGES`."""
    for name, (lo, hi, why) in RANGES.items():
        value = getattr(config, name)
        if not lo <= value <= hi:
            raise ConfigError(f"--{name.replace('_', '-')} must be in [{lo:g}, {hi:g}] "
                              f"({why}), got {value:g}" if isinstance(value, float) else
                              f"--{name.replace('_', '-')} must be in [{lo}, {hi}] ({why}), "
                              f"got {value}")


def check_combinations(config):
    """ConfigError for values that are each in range but cannot work together: too many
    slices for the grid, more sweeps than exactness needs."""
    total = config.blocks * config.steps_per_block
    if total > MAX_TOTAL_SLICES:
        raise ConfigError(f"--blocks x --steps-per-block = {total} slices exceeds {MAX_TOTAL_SLICES} "
                          f"(the time grid is held on every rank); use fewer or shorter blocks")
    sampler = config.sampler_class
    sweeps_per_block = (sampler.time_parallel and not sampler.whole_trajectory
                        and any(option.name == "picard_iters" for option in sampler.options))
    if sweeps_per_block and config.tol == 0 and config.picard_iters > config.steps_per_block:
        raise ConfigError(
            f"--picard-iters {config.picard_iters} exceeds the {config.steps_per_block} slices per "
            f"block: with --tol 0 every block would run all {config.picard_iters} sweeps, but "
            f"{config.steps_per_block} already reproduce the sequential sampler exactly; use "
            f"--picard-iters {config.steps_per_block} or less")


# -- memory ------------------------------------------------------------------------------
def model_bytes(config) -> int:
    """The model's own memory (not its per-call temporaries, which the samplers bound by
    chunking): the analytic targets' tables, a network's weights and torch."""
    kind = model_kind(config.model)
    if config.model == "grf":
        return 4 * config.dim * 8               # |k|, eigenvalues and their half-grid views
    if config.model == "gmm":
        return 2 * config.gmm_components * config.dim * 8
    if kind == "diffusers":
        return TORCH_BYTES + _folder_bytes(config.model.split(":", 1)[1])
    return TORCH_BYTES


def _folder_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            if name.endswith((".safetensors", ".bin", ".pt", ".pth", ".ckpt")):
                try:
                    total += os.path.getsize(os.path.join(root, name))
                except OSError:
                    pass
    return total


def fixed_bytes(config) -> int:
    """What every rank holds whatever its share: the baseline, the model, the grid."""
    return (BASELINE_BYTES + model_bytes(config)
            + config.blocks * config.steps_per_block * GRID_BYTES_PER_SLICE)


def _cgroup_room() -> tuple | None:
    """(bytes the cgroup may still use, its file) or None where there is no limit."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit_file) as fh:
                text = fh.read().strip()
            if text == "max":
                continue
            limit = int(text)
            if limit >= 1 << 60:                # cgroup v1 spells "no limit" this way
                continue
            with open(usage_file) as fh:
                usage = int(fh.read().strip())
            return max(0, limit - usage), limit_file
        except (OSError, ValueError):
            continue
    return None


def available_memory() -> tuple:
    """(bytes this node can still give a job, where that figure comes from); (None, why)
    when the system does not say. The smaller of MemAvailable and the cgroup's room."""
    found = []
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    found.append((int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"))
                    break
    except (OSError, ValueError, IndexError):
        pass
    room = _cgroup_room()
    if room is not None:
        found.append((room[0], f"the cgroup limit ({room[1]})"))
    if not found:
        return None, "no /proc/meminfo"
    return min(found)


def address_space_room() -> int | None:
    """Bytes this process may still map under ``ulimit -v`` (RLIMIT_AS), None without
    a limit. The baseline the estimates count is already mapped, so it is given back."""
    import resource
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        with open("/proc/self/status") as fh:
            mapped = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))
    except (OSError, StopIteration, ValueError):
        return None
    return max(0, soft - mapped) + BASELINE_BYTES


def gib(n: float) -> str:
    return f"{n / (1 << 30):.3g} GiB" if n >= 1 << 30 else f"{n / MIB:.1f} MiB"


def fit_verdict(needed: int, ranks: int) -> str | None:
    """None if ``needed`` bytes for ``ranks`` ranks of one node fit, else why not."""
    available, source = available_memory()
    if available is None or needed <= available:
        return None
    return (f"the run needs about {gib(needed)} on this node ({ranks} rank(s), "
            f"estimate as --dry-run prints it) but only {gib(available)} is available "
            f"({source}): use fewer --num-samples per rank, more nodes, or a smaller --dim")


def check_memory(config, world):
    """ConfigError on every rank, before anything large is allocated, when the ranks of
    some node need more memory than it has available. Collective over ``world``."""
    from .dry_run import make_plan
    plan = make_plan(config, world.size)
    mine = plan["ranks"][world.rank]["memory_bytes"]
    node = world.node_local()
    needed = sum(node.allgather_obj(mine))
    verdict = fit_verdict(needed, node.size) if node.rank == 0 else None
    room = address_space_room()
    if room is not None and mine > room:
        verdict = (f"rank {world.rank} needs about {gib(mine)} but its address-space limit "
                   f"(ulimit -v) leaves {gib(room)}: raise the limit or shrink the run")
    failures = [v for v in world.allgather_obj(verdict) if v]
    if failures:
        raise ConfigError(failures[0])


def describe_fit(plan: dict, n_ranks_on_node: int) -> str:
    """--dry-run's memory line for ``n_ranks_on_node`` ranks of the plan on this node."""
    needed = sum(row["memory_bytes"] for row in plan["ranks"][:n_ranks_on_node])
    verdict = fit_verdict(needed, n_ranks_on_node)
    if verdict is not None:
        return f"memory: DOES NOT FIT: {verdict}"
    available, source = available_memory()
    room = f"{gib(available)} available ({source})" if available is not None else source
    return f"memory: fits: {gib(needed)} for {n_ranks_on_node} rank(s) on this node, {room}"
