"""A performance model of a sampling run, built from measured costs only.

    wall = setup + sum over rounds [ t_eval(rows per rank) + t_arith(rows per rank)
                                     + t_comm(P, bytes) ] + noise + output I/O

- t_eval is the measured batch-cost curve of the model on the rank's device: seconds
  of one score call against its rows (:func:`measure_eval`), interpolated piecewise
  linearly; ``--emulate-latency T0[,T1]`` turns it into max(T0 + T1 rows, t_eval).
- t_arith is the measured cost of a round's own work beyond its score calls, noise and
  collectives (arithmetic, bookkeeping, Python), fixed plus per number, per round kind
  (sequential step, blockwise sweep, ParaDiGMS window, wavefront round), timed through
  the samplers' own code on one rank (:func:`measure_rounds`).
- rows per round: a blockwise sweep scores the slices behind its block's frozen prefix
  (the critical rank's share), a window or wavefront round its window's slices over the
  time ranks; a classifier-free-guided sample is two model rows.
- t_comm of each collective (Exscan, Allreduce, Bcast, Allgather) is a latency plus
  bandwidth fit alpha_P + beta_P x bytes at each measured communicator size P,
  interpolated in log2 P, and extended beyond the largest measured P by the
  log2 P law of tree collectives.
- When a node holds more ranks than cores (a study on a small machine), each rank's own
  work (real score, t_arith, noise) shares the cores: it is stretched by ranks per node /
  cores (the profile records the cores it was measured with; a prediction for one rank
  per core or device has no stretch), and after an emulated device wait a round's
  collectives cost the measured "sync" round at that P (they wait for the last rank).

The rounds are an input: K per block as planned (an upper bound when tol > 0 stops
blocks early) or the sweeps a run measured, and likewise its evaluations (neither
depends on the rank count).
The profile (a JSON file, ``--perf-profile``) holds every measured number;
``drivers/profile_costs.py`` writes it. Nothing here is a constant of some machine.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from .grid import TimeGrid
from .parallel import balanced_range

F64 = 8
COLLECTIVES = ("exscan", "allreduce", "bcast", "allgather")
#: seconds of the emulated device wait before the "sync" reduction (measure_collectives)
SYNC_SLEEP = 0.02
SYNC_STATE_BYTES = 4096


@dataclass
class Curve:
    """seconds(rows): piecewise linear through measured points, linear beyond the last."""
    rows: list
    seconds: list

    def __call__(self, rows: float) -> float:
        if rows <= 0:
            return 0.0
        x, y = np.asarray(self.rows, float), np.asarray(self.seconds, float)
        if len(x) == 1 or rows <= x[-1]:
            return float(np.interp(rows, x, y))
        slope = max((y[-1] - y[-2]) / (x[-1] - x[-2]), 0.0)
        return float(y[-1] + slope * (rows - x[-1]))


@dataclass
class LinearCost:
    """fixed + per_unit x units, fitted by least squares (both clipped at 0)."""
    fixed: float
    per_unit: float

    @classmethod
    def fit(cls, units, seconds) -> "LinearCost":
        units, seconds = np.asarray(units, float), np.asarray(seconds, float)
        if len(set(units)) < 2:
            return cls(float(seconds.mean()), 0.0)
        slope, intercept = np.polyfit(units, seconds, 1)
        return cls(max(float(intercept), 0.0), max(float(slope), 0.0))

    def __call__(self, units: float) -> float:
        return self.fixed + self.per_unit * units


@dataclass
class NoiseCost:
    """Drawing the Gaussian increments: per slice (a generator call) and per number."""
    per_slice: float
    per_number: float

    def __call__(self, slices: int, samples: int, dim: int) -> float:
        return self.per_slice * slices + self.per_number * slices * samples * dim


@dataclass
class CollectiveCost:
    """Latency + bandwidth of one collective at each measured communicator size."""
    sizes: list
    alpha: list
    beta: list

    @classmethod
    def fit(cls, samples) -> "CollectiveCost":
        """``samples``: (P, bytes, seconds) triples; one alpha, beta per P."""
        sizes = sorted({int(p) for p, _, _ in samples if p > 1})
        alpha, beta = [], []
        for p in sizes:
            fit = LinearCost.fit([b for q, b, _ in samples if q == p],
                                 [s for q, _, s in samples if q == p])
            alpha.append(fit.fixed)
            beta.append(fit.per_unit)
        return cls(sizes, alpha, beta)

    def __call__(self, ranks: int, nbytes: float) -> float:
        if ranks <= 1 or not self.sizes:
            return 0.0
        logs = np.log2(self.sizes)
        here = math.log2(ranks)
        scale = 1.0
        if here > logs[-1]:
            # beyond the measured sizes: a tree collective's stages grow like log2 P
            scale, here = here / logs[-1], logs[-1]
        alpha = float(np.interp(here, logs, self.alpha))
        beta = float(np.interp(here, logs, self.beta))
        return scale * (alpha + beta * nbytes)


@dataclass
class CostProfile:
    """Every measured cost the model needs (``--perf-profile`` file)."""
    model: str
    dim: int
    cores: int                      # cores of the node the costs were measured on
    eval: Curve                     # one score call: seconds against rows (one time)
    sweep_arith: LinearCost         # a Picard sweep's own arithmetic: against numbers
    step_arith: LinearCost          # a sequential step's own arithmetic: against numbers
    noise: NoiseCost                # Gaussian increments
    io: LinearCost                  # writing the output file: against bytes
    setup: float                    # building the model, in seconds
    sleep_overshoot: float = 0.0    # how much longer than asked a 20 ms sleep lasts here
    reference_kernel: float = 0.0   # reference_kernel_seconds() when this was measured
    eval_per_time: float = 0.0      # extra seconds per distinct time in a score call
    comm: dict = field(default_factory=dict)   # collective name -> CollectiveCost
    #: round kind ("step", "sweep", "window", "wavefront") -> LinearCost: seconds of a
    #: round beyond its score calls, noise and collectives, against the numbers it
    #: scores, measured through the samplers' own code (measure_rounds); the
    #: synthetic kernels above stand in where a kind is missing
    round_overhead: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_dict(cls, data: dict) -> "CostProfile":
        data = dict(data)
        data["eval"] = Curve(**data["eval"])
        for name in ("sweep_arith", "step_arith", "io"):
            data[name] = LinearCost(**data[name])
        data["noise"] = NoiseCost(**data["noise"])
        data["comm"] = {k: CollectiveCost(**v) for k, v in data.get("comm", {}).items()}
        data["round_overhead"] = {k: LinearCost(**v) for k, v in data.get("round_overhead", {}).items()}
        return cls(**data)

    @classmethod
    def load(cls, path: str) -> "CostProfile":
        with open(path) as fh:
            return cls.from_dict(json.load(fh))

    def collective(self, name: str, ranks: int, nbytes: float) -> float:
        cost = self.comm.get(name)
        return cost(ranks, nbytes) if cost is not None else 0.0

    def overhead(self, kind: str, numbers: float) -> float:
        """Seconds of one round of ``kind`` beyond score, noise and collectives."""
        cost = self.round_overhead.get(kind)
        if cost is None:
            cost = self.step_arith if kind == "step" else self.sweep_arith
        return cost(numbers)


@dataclass
class Prediction:
    """Predicted seconds of a run, split like the run's own statistics."""
    wall: float
    rounds: int
    time_ranks: int
    score: float
    comm: float
    noise: float
    other: float    # arithmetic, setup and output I/O

    def as_dict(self) -> dict:
        return asdict(self)


# -- the model -------------------------------------------------------------------------
def round_kind(config) -> str:
    """Which round a run repeats: "step" (sequential), "sweep" (blockwise Picard),
    "window" (ParaDiGMS' sliding window) or "wavefront" (piadm --schedule wavefront)."""
    cls = config.sampler_class
    if not cls.time_parallel:
        return "step"
    if cls.whole_trajectory:
        return "window"
    return "wavefront" if getattr(config, "schedule", "blockwise") == "wavefront" else "sweep"


def network_rows_per_state(config) -> int:
    """Model rows per score evaluation: a classifier-free-guided pair is two."""
    return 2 if getattr(config, "guidance_scale", 0.0) > 0 else 1


def frozen_prefix_rows(slices: int, sweeps: list, time_ranks: int,
                       evaluations: float | None = None) -> list:
    """Per block, per sweep: the most slices one time rank scores (the critical path).

    A sweep scores only the slices after the block's frozen prefix (engine.py). The
    prefix is taken to grow linearly, f_i = floor(phi M i / K_b) in sweep i of a block
    of K_b sweeps (i from 0), with phi fitted so that the slices scored add up to the
    measured ``evaluations`` (per sample); without them phi = 0, and only the i slices
    that i sweeps make exact are frozen (the bound). The rank owning the last slices
    keeps its whole range longest. (On the host the engine re-splits a block as its
    front advances, BlockSweep.drop_frozen; the model leaves that out: it predicts
    devices with spare batch width and emulated ones, where piadm does not re-split.)
    """
    ranges = [balanced_range(slices, time_ranks, r) for r in range(time_ranks)]

    def frozen(phi: float, k: int) -> list:
        # at least i slices are exact after i sweeps (Picard's lower-triangular map)
        return [min(slices - 1, max(i, int(phi * slices * i / k))) for i in range(k)]

    def scored(phi: float) -> int:
        return sum(slices - f for k in sweeps if k for f in frozen(phi, k))

    phi = 0.0
    if evaluations is not None and scored(0.0) > evaluations:
        lo, hi = 0.0, float(max(sweeps, default=1))
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if scored(mid) > evaluations else (lo, mid)
        phi = hi
    return [[max(max(0, b - max(a, f)) for a, b in ranges) for f in frozen(phi, k)]
            for k in sweeps]


def predict(config, n_ranks: int, profile: CostProfile, time_ranks: int | None = None,
            sweeps=None, ranks_per_node: int | None = None,
            evaluations: float | None = None) -> Prediction:
    """Predicted wall time of ``config`` on ``n_ranks`` ranks.

    time_ranks: ranks per sample group (default: the config's own split);
    sweeps: rounds actually run, per block (a list) or in total (an int); default
            K per block, the plan's bound (the wavefront: window_bounds' rounds);
    ranks_per_node: ranks sharing one node's ``profile.cores`` cores (default: at most
            one per core, i.e. no contention). More ranks than cores stretch every
            rank's own work (real score, round overhead, noise) by ranks / cores: the
            ranks take turns on the cores, and each collective waits for the last;
    evaluations: score evaluations per sample a run made (they do not depend on the
            rank count either): the rows a round scores shrink as slices freeze.
    """
    from .emulation import EmulatedLatency
    grid = TimeGrid.build(config.T, config.delta, config.blocks, config.steps_per_block)
    kind = round_kind(config)
    if kind == "step":
        time_ranks = 1
    elif time_ranks is None:
        time_ranks = config.resolved_time_ranks(n_ranks)
    groups = n_ranks // time_ranks
    samples = balanced_range(config.num_samples, groups, 0)[1]      # the largest group
    dim = config.dim
    pair = network_rows_per_state(config)
    per_node = min(n_ranks, profile.cores) if ranks_per_node is None else ranks_per_node
    stretch = max(1.0, per_node / profile.cores)
    latency = EmulatedLatency.parse(config.emulate_latency)

    state_bytes = samples * dim * F64
    # after an emulated device wait a sweep's collectives also pay for the ranks'
    # scattered wake-ups (measure_collectives, "sync"); a lone sleep pays its overshoot
    emulated_round = latency is not None and "sync" in profile.comm and n_ranks > 1
    wake = profile.sleep_overshoot if latency is not None and (kind == "step" or not emulated_round) else 0.0

    def round_comm(time_ranks_: int) -> float:
        """The collectives of one round: Exscan in the group, the verdict over all ranks
        (or, after an emulated device wait, the measured emulated round)."""
        if emulated_round:
            # the emulated round measured with the group's Exscan ("sync/g"; "sync" has
            # one group of all ranks), its state's bytes beyond the measured ones added
            grouped = "sync" if time_ranks_ == n_ranks else f"sync/{time_ranks_}"
            more_bytes = max(profile.collective("exscan", time_ranks_, state_bytes)
                             - profile.collective("exscan", time_ranks_, SYNC_STATE_BYTES), 0.0)
            if grouped in profile.comm:
                return profile.collective(grouped, n_ranks, F64) + more_bytes
            # else swap the all-rank Exscan of "sync" for the group's
            waking = profile.collective("sync", n_ranks, F64) - \
                profile.collective("exscan", n_ranks, SYNC_STATE_BYTES)
            return max(waking, 0.0) + profile.collective("exscan", time_ranks_, state_bytes)
        return (profile.collective("exscan", time_ranks_, state_bytes)
                + profile.collective("allreduce", n_ranks, F64))

    def evaluate(states: int, times: int = 1) -> float:
        """One score call of ``states`` rows (x2 when guided) at ``times`` distinct times."""
        rows = states * pair
        real = stretch * (profile.eval(rows) + profile.eval_per_time * max(times - 1, 0))
        return max(real, latency.seconds(rows)) + wake if latency is not None and rows else real

    def round_cost(owned: int) -> tuple:
        """(score, overhead) of a round in which the critical rank scores ``owned`` slices."""
        rows = owned * samples
        return evaluate(rows, owned), stretch * profile.overhead(kind, rows * dim)

    def total_rounds(bound: int) -> int:
        if isinstance(sweeps, (list, tuple, np.ndarray)):
            return int(sum(sweeps))
        return int(sweeps) if sweeps is not None else bound

    score = comm = noise = other = 0.0
    if kind == "step":
        rounds = config.steps_per_block * grid.num_blocks
        score, other = (rounds * x for x in round_cost(1))
        noise = stretch * profile.noise(grid.total_slices, samples, dim)
    elif kind in ("window", "wavefront"):
        if kind == "window":
            width = min(config.window, grid.total_slices)
            bound = -(-grid.total_slices // config.window) * config.picard_iters
            # the ring (engine.RingWindow): the cyclic Exscan (round_comm's Exscan plus
            # one broadcast of a state) and the window's end state sent to the ranks
            # the entering slices land on (costed as a second broadcast); no row moves
            extra = 2 * profile.collective("bcast", time_ranks, state_bytes)
        else:
            from .samplers.wavefront import window_bounds
            bound, _, states_in_window = window_bounds(config, grid)
            width = states_in_window - 1
            # the front's verdict is a min and a max over all ranks; the rebalance ships
            # the states and increments of about the slices the front advanced (an
            # Alltoallv, costed as the all-gather fit of that many bytes)
            advance = grid.total_slices / max(total_rounds(bound), 1)
            extra = (profile.collective("allreduce", n_ranks, F64)
                     + profile.collective("allgather", time_ranks, 2 * advance * state_bytes))
        rounds = total_rounds(bound)
        if evaluations is not None and rounds:
            width = max(1, min(width, round(evaluations / rounds)))
        owned = balanced_range(width, time_ranks, 0)[1]
        score, other = (rounds * x for x in round_cost(owned))
        comm = rounds * (round_comm(time_ranks) + extra)
        noise = stretch * profile.noise(grid.total_slices, samples, dim)
    else:
        if sweeps is None:
            # a block is exact after as many sweeps as it has slices
            per_block = [min(config.picard_iters, grid.blocks[0].num_slices)] * grid.num_blocks
        elif isinstance(sweeps, (list, tuple, np.ndarray)):
            per_block = [int(k) for k in sweeps]
        else:
            per_block = _spread(int(sweeps), grid.num_blocks)
        rounds = sum(per_block)
        # blocks of equal slices (TimeGrid): one frozen-prefix profile for all
        slices = grid.blocks[0].num_slices
        for block, owned_per_sweep in zip(grid.blocks, frozen_prefix_rows(
                slices, per_block, time_ranks, evaluations)):
            for owned in owned_per_sweep:
                s, o = round_cost(owned)
                score, other = score + s, other + o
            comm += len(owned_per_sweep) * round_comm(time_ranks)
            comm += profile.collective("bcast", time_ranks, state_bytes)
            noise += stretch * profile.noise(balanced_range(block.num_slices, time_ranks, 0)[1],
                                             samples, dim)
    # setup: the model, the rank placement and process-grid splits; the end: gathering
    # the samples on rank 0 and writing them
    comm += 4 * profile.collective("allreduce", n_ranks, F64)
    comm += profile.collective("bcast", groups, config.num_samples * dim * F64 / max(groups, 1))
    other += profile.setup + profile.io(config.num_samples * dim * F64)
    return Prediction(wall=score + comm + noise + other, rounds=rounds, time_ranks=time_ranks,
                      score=score, comm=comm, noise=noise, other=other)


def _spread(total: int, parts: int) -> list:
    return [balanced_range(total, parts, i)[1] - balanced_range(total, parts, i)[0]
            for i in range(parts)]


def time_rank_choices(config, n_ranks: int) -> list:
    """Every valid ranks-per-group count of ``config`` on ``n_ranks`` ranks."""
    if not config.sampler_class.time_parallel:
        return [1]
    whole = config.sampler_class.whole_trajectory
    return [t for t in range(1, n_ranks + 1)
            if n_ranks % t == 0 and n_ranks // t <= config.num_samples
            and (whole or t <= config.steps_per_block)]


def choose_time_ranks(config, n_ranks: int, profile: CostProfile, sweeps=None,
                      ranks_per_node: int | None = None, evaluations: float | None = None) -> int:
    """The time x sample split with the smallest predicted wall time (``--time-ranks
    auto``); ties go to fewer time ranks (fewer collectives on the critical path)."""
    choices = time_rank_choices(config, n_ranks)
    if not choices:
        from .config import ConfigError
        raise ConfigError(f"no time x sample split of {n_ranks} ranks fits "
                          f"{config.num_samples} samples and {config.steps_per_block} slices")
    walls = [(predict(config, n_ranks, profile, t, sweeps, ranks_per_node, evaluations).wall, t)
             for t in choices]
    return min(walls)[1]


def best_data_parallel(config, n_ranks: int, profile: CostProfile,
                       ranks_per_node: int | None = None) -> Prediction:
    """sequential-sde with the samples split over at most ``n_ranks`` ranks (one sample
    group per rank; ranks beyond the sample count idle): the baseline to beat."""
    ranks = min(n_ranks, config.num_samples)
    base = config.replace(sampler="sequential-sde" if config.sampler != "piadm-ode"
                          and config.sampler != "sequential-ode" else "sequential-ode")
    return predict(base, ranks, profile, ranks_per_node=ranks_per_node)


# -- measuring ---------------------------------------------------------------------------
def _best_of(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls (after one warm-up): on a shared
    machine the median is what a run of many calls pays per call, the minimum is not."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def measure_eval(model, rows_list, repeats: int = 5, seed: int = 0) -> tuple:
    """(curve, per_time): seconds of one score call against its rows, all rows at one
    time, through the samplers' own score path (chunking, the finiteness check) on the
    model's device; and the extra seconds per distinct time in a batch (an analytic
    target filters each time separately; a network costs the same)."""
    from .parallel import Communicator
    from .samplers.base import SamplerContext
    from .samplers.sequential import SequentialSampler
    rng = np.random.default_rng(seed)
    context = SamplerContext(model=model, comm=Communicator.self_comm(), samples=np.arange(1),
                             dtype=np.dtype(np.float64), seed=seed)
    sampler = SequentialSampler(context)
    same, extra = [], []
    for rows in rows_list:
        states = rng.standard_normal((1, rows, model.dim))
        one = _best_of(lambda: sampler.score(states, np.array([0.5]), 0, 0), repeats)
        same.append(one)
        if rows > 1:
            spread = states.reshape(rows, 1, model.dim)
            times = np.linspace(1.0, 0.1, rows)
            many = _best_of(lambda: sampler.score(spread, times, 0, 0), repeats)
            extra.append(max(many - one, 0.0) / (rows - 1))
    return Curve(list(map(int, rows_list)), same), float(np.median(extra)) if extra else 0.0


def _sweep_kernel(states, g, weight, growth, scale):
    """The arithmetic of one Picard sweep on ``states`` (owned + 1, S, d), as in piadm."""
    owned = len(states) - 1
    np.multiply(states[:owned], weight, out=g)
    for i in range(1, owned):
        g[i] += g[i - 1]
    rebuilt = np.empty_like(states)
    np.add(states[0], g, out=rebuilt[1:])
    rebuilt[0] = states[0]
    rebuilt *= growth
    np.subtract(rebuilt[1:], states[1:], out=g)
    np.square(g, out=g)
    return float((g.sum(axis=2) / scale).max())


def measure_arithmetic(dim: int, rows_list, repeats: int = 5) -> tuple:
    """(sweep, step) arithmetic costs against numbers (rows x dim) on this core."""
    sweep_units, sweep_seconds, step_units, step_seconds = [], [], [], []
    rng = np.random.default_rng(1)
    for rows in rows_list:
        states = rng.standard_normal((rows + 1, 1, dim))
        g = np.empty((rows, 1, dim))
        weight = np.full((rows, 1, 1), 0.5)
        growth = np.full((rows + 1, 1, 1), 1.01)
        scale = np.ones((rows, 1))
        sweep_units.append(rows * dim)
        sweep_seconds.append(_best_of(lambda: _sweep_kernel(states, g, weight, growth, scale), repeats))
        y, s, xi = states[0, 0], states[1, 0], states[-1, 0]
        step_units.append(dim)
        step_seconds.append(_best_of(lambda: (1.01 * y + 0.5 * s + 0.1 * xi).astype(np.float64),
                                     repeats))
    return LinearCost.fit(sweep_units, sweep_seconds), LinearCost.fit(step_units, step_seconds)


def measure_noise(dim: int, shapes=((4, 1), (64, 1), (4, 64), (32, 16)), repeats: int = 3) -> "NoiseCost":
    """Gaussian increments of (slices, samples) blocks: a cost per slice (one generator
    call each) plus a cost per number, fitted by least squares."""
    from . import noise
    design, seconds = [], []
    for slices, samples in shapes:
        design.append((slices, slices * samples * dim))
        seconds.append(_best_of(lambda: noise.gaussian_slices(0, noise.STREAM_INCREMENT, 0,
                                                              range(slices), np.arange(samples), dim),
                                repeats))
    coef = np.linalg.lstsq(np.asarray(design, float), np.asarray(seconds), rcond=None)[0]
    return NoiseCost(max(float(coef[0]), 0.0), max(float(coef[1]), 0.0))


def reference_kernel_seconds(repeats: int = 5) -> float:
    """Seconds of a fixed numpy kernel on this core: the ratio of two such timings says
    how much slower the (shared) node runs now than when a profile was measured."""
    x = np.random.default_rng(0).standard_normal((128, 128))
    return _best_of(lambda: [x @ x for _ in range(8)], repeats)


def measure_sleep_overshoot(seconds: float = SYNC_SLEEP, repeats: int = 25) -> float:
    """Mean time by which time.sleep(seconds) overruns: an emulated device call's
    wake-up delay on this (possibly loaded) node. The mean, not the median: the rare
    long delays on a loaded node are what a run of many calls pays for."""
    over = []
    for _ in range(repeats):
        start = time.perf_counter()
        time.sleep(seconds)
        over.append(time.perf_counter() - start - seconds)
    return float(np.mean(over))


def measure_io(directory: str, sizes=(1 << 12, 1 << 20), repeats: int = 3) -> LinearCost:
    """Writing an output file (atomic HDF5 write with fsync) against bytes."""
    from .output import write_atomic
    units, seconds = [], []
    path = os.path.join(directory, f".io-probe-{os.getpid()}.h5")
    try:
        for nbytes in sizes:
            data = np.zeros(nbytes // F64)
            units.append(nbytes)
            seconds.append(_best_of(lambda: write_atomic(
                path, lambda fh: fh.create_dataset("samples", data=data)), repeats))
    finally:
        if os.path.exists(path):
            os.unlink(path)
    return LinearCost.fit(units, seconds)


#: the runs measure_rounds times per round kind: (sampler, extra config) on one rank
ROUND_RUNS = {"step": ("sequential-sde", {}), "sweep": ("piadm-sde", {}),
              "window": ("paradigms", {}), "wavefront": ("piadm-sde", {"schedule": "wavefront"})}


def measure_rounds(config, sizes=((1, 16), (4, 64)), repeats: int = 2) -> dict:
    """Round kind -> LinearCost: the seconds of a round beyond its score calls, noise
    and collectives (the sampler's own arithmetic, bookkeeping and Python), against
    the numbers it scores (rows x d), from whole runs on one rank through
    runner.run. ``sizes``: (samples, slices per block) of the timed runs; each is the
    median of ``repeats`` runs after a warm-up run."""
    from .parallel import Communicator
    from .runner import run
    # a grid on which every sampler converges within its sweeps (the study's)
    base = dict(model=config.model, dim=config.dim, T=10.0, delta=1e-3, blocks=4, tol=0.05,
                picard_iters=60, seed=0, window=64)
    out = {}
    for kind, (sampler, extra) in ROUND_RUNS.items():
        units, seconds = [], []
        for samples, slices in sizes:
            from .config import RunConfig
            cfg = RunConfig.from_dict(dict(base, sampler=sampler, num_samples=samples,
                                           steps_per_block=slices, **extra)).validate(1)
            per_round = []
            for _ in range(repeats + 1):
                stats = run(cfg, Communicator.self_comm(), placement_log=lambda line: None).stats
                own = stats["wall_time"] - sum(stats[k] for k in (
                    "score_time", "noise_time", "communication_time", "io_time", "setup_time"))
                per_round.append(max(own, 0.0) / stats["rounds"])
                rows = stats["evaluations"] * samples / stats["rounds"]
            units.append(rows * cfg.dim)
            seconds.append(float(np.median(per_round[1:])))
        out[kind] = LinearCost.fit(units, seconds)
    return out


def measure_collectives(world, sizes, byte_counts, repeats: int = 20) -> dict:
    """Collective name -> (P, bytes, seconds) samples on sub-communicators of ``sizes``.

    Collective over ``world`` (a Communicator). The ranks outside a sub-communicator
    wait in a sleeping poll so that they take no core from the measured ones.
    """
    from mpi4py import MPI
    comm = world.comm
    samples = {name: [] for name in COLLECTIVES + ("sync",)}
    for size in sizes:
        if size < 2 or size > world.size:
            continue
        inside = world.rank < size
        sub = comm.Split(0 if inside else MPI.UNDEFINED, world.rank)
        groups = {}
        if inside:
            for nbytes in byte_counts:
                local = np.ones(max(1, nbytes // F64))
                out = np.empty_like(local)
                gathered = np.empty(local.size * size)
                ops = {"exscan": lambda: sub.Exscan(local, out, MPI.SUM),
                       "allreduce": lambda: sub.Allreduce(local, out, MPI.SUM),
                       "bcast": lambda: sub.Bcast(local, root=size - 1),
                       "allgather": lambda: sub.Allgather(local, gathered)}
                if nbytes == byte_counts[0]:
                    # an emulated round: every rank wakes from a device wait (the sleep of
                    # --emulate-latency), then the sweep's Exscan and verdict Allreduce.
                    # On a loaded node the ranks wake one by one and each collective stage
                    # waits for a sleeping rank to be scheduled: "sync" is that round's
                    # cost beyond the wait, measured as such
                    state = np.ones(SYNC_STATE_BYTES // F64)
                    ops["sync"] = lambda: (time.sleep(SYNC_SLEEP),
                                           sub.Exscan(state, np.empty_like(state), MPI.SUM),
                                           sub.Allreduce(local, out, MPI.MAX))
                    # the same round split into sample groups of g time ranks: the Exscan
                    # runs in each group at once, the verdict over all ("sync/g"); with
                    # more ranks than cores a long scan chain waits for more wake-ups
                    for g in (g for g in sync_groups(size) if g < size):
                        group = groups.setdefault(g, sub.Split(sub.Get_rank() // g, sub.Get_rank()))
                        ops[f"sync/{g}"] = lambda group=group: (
                            time.sleep(SYNC_SLEEP),
                            group.Exscan(state, np.empty_like(state), MPI.SUM),
                            sub.Allreduce(local, out, MPI.MAX))
                for name, op in ops.items():
                    sub.Barrier()
                    op()
                    start = time.perf_counter()
                    for _ in range(repeats):
                        op()
                    elapsed = (time.perf_counter() - start) / repeats
                    # the slowest rank's time is the collective's time
                    elapsed = sub.allreduce(elapsed, op=MPI.MAX)
                    bytes_moved = local.nbytes * (size if name == "allgather" else 1)
                    if name.startswith("sync"):
                        elapsed = max(elapsed - SYNC_SLEEP, 0.0)
                    samples.setdefault(name, []).append((size, bytes_moved, elapsed))
            for group in groups.values():
                group.Free()
            sub.Free()
        sleeping_barrier(comm)
    return samples


def sync_groups(size: int) -> list:
    """Group sizes at which an emulated round on ``size`` ranks is measured: powers of 2."""
    return [1 << k for k in range(size.bit_length()) if (1 << k) <= size]


def sleeping_barrier(comm, nap: float = 0.02):
    """A barrier (on an mpi4py communicator) whose waiting ranks sleep ``nap`` seconds
    between polls, leaving the cores to the ranks still working."""
    request = comm.Ibarrier()
    while not request.Test():
        time.sleep(nap)


def build_profile(config, world, sizes=None, byte_counts=(8, 1 << 12, 1 << 16),
                  rows_list=None, directory: str = ".", repeats: int = 20) -> CostProfile:
    """Measure everything the model needs for ``config``'s model (collective on world;
    the per-rank costs on world rank 0 while the others sleep). Returns it on every rank."""
    from .models import build_model
    profile = None
    if world.rank == 0:
        start = time.perf_counter()
        model = build_model(config)
        setup = time.perf_counter() - start
        dim = int(model.dim)
        # up to the widest call the study makes (a wavefront round of 4 x 64 slices x 4
        # samples on one rank): the curve is then interpolated, not extrapolated
        rows_list = rows_list or [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
        sweep, step = measure_arithmetic(dim, rows_list[::2])
        curve, per_time = measure_eval(model, rows_list)
        profile = CostProfile(
            model=config.model, dim=dim, cores=usable_cores(), eval_per_time=per_time,
            eval=curve, sweep_arith=sweep, step_arith=step,
            noise=measure_noise(dim), io=measure_io(directory), setup=setup,
            sleep_overshoot=measure_sleep_overshoot(),
            reference_kernel=reference_kernel_seconds(),
            round_overhead=measure_rounds(config))
    # the other ranks nap long while rank 0 times things: short naps of many ranks would
    # take its core and inflate every per-rank cost
    sleeping_barrier(world.comm, nap=0.05)
    if sizes is None:
        sizes = [2 ** k for k in range(1, world.size.bit_length()) if 2 ** k <= world.size]
    samples = measure_collectives(world, sizes, byte_counts, repeats)
    # world rank 0 is in every measured communicator, so it alone holds every sample;
    # one fit for all ranks keeps their model choices (--time-ranks auto) identical
    samples = world.comm.bcast(samples, root=0)
    profile = world.comm.bcast(profile, root=0)
    profile.comm = {name: CollectiveCost.fit(s) for name, s in samples.items() if s}
    return profile


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, e.g. a batch job's share),
    else the node's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def profile_for(config, n_ranks_hint: int = 1) -> CostProfile:
    """The --perf-profile file's costs, with the eval curve re-measured here if the file
    was made for another model or dimension (communication costs are kept)."""
    from .models import build_model
    profile = CostProfile.load(config.perf_profile) if config.perf_profile else None
    if profile is not None and profile.model == config.model and profile.dim == config.dim:
        return profile
    start = time.perf_counter()
    model = build_model(config)
    setup = time.perf_counter() - start
    dim = int(model.dim)
    rows = [1, 4, 16, 64, 256]
    sweep, step = measure_arithmetic(dim, rows[::2], repeats=3)
    curve, per_time = measure_eval(model, rows, repeats=3)
    fresh = CostProfile(model=config.model, dim=dim, cores=usable_cores(),
                        eval=curve, eval_per_time=per_time, sweep_arith=sweep,
                        step_arith=step, noise=measure_noise(dim, repeats=2),
                        io=profile.io if profile else LinearCost(0.0, 0.0), setup=setup,
                        comm=profile.comm if profile else {},
                        round_overhead=profile.round_overhead if profile else {},
                        sleep_overshoot=profile.sleep_overshoot if profile else measure_sleep_overshoot())
    return fresh


# -- the CLI's uses: --time-ranks auto and the --dry-run prediction ----------------------
def resolve_auto_time_ranks(config, n_ranks: int, comm=None):
    """``config`` with --time-ranks auto replaced by the model's choice.

    The costs are measured (or read) on rank 0 only and the choice is broadcast, so
    every rank takes the same split. A no-op unless time_ranks is auto.
    """
    from .config import TIME_RANKS_AUTO
    if config.time_ranks != TIME_RANKS_AUTO:
        return config
    choice = None
    # ranks sharing this node's cores: more than cores stretch every rank's own work
    per_node = None
    if comm is not None:
        local = comm.node_local()
        per_node = local.size
        local.free()
    if comm is None or comm.rank == 0:
        choice = choose_time_ranks(config, n_ranks, profile_for(config), ranks_per_node=per_node)
    if comm is not None:
        choice = comm.bcast_obj(choice, root=0)
    return config.replace(time_ranks=choice).validate(n_ranks)


def format_prediction(config, n_ranks: int, profile: CostProfile) -> str:
    """The --dry-run lines: predicted wall time, its split, and the speed-up over the
    best data-parallel sequential run on the same ranks."""
    mine = predict(config, n_ranks, profile)
    base = best_data_parallel(config, n_ranks, profile)
    source = config.perf_profile or "measured now on this process's device"
    bound = "at most " if config.sampler_class.time_parallel and getattr(config, "tol", 0) > 0 else ""
    lines = [
        f"predicted wall time: {bound}{mine.wall:.3g} s ({mine.rounds} rounds; score {mine.score:.3g} s, "
        f"communication {mine.comm:.3g} s, noise {mine.noise:.3g} s, other {mine.other:.3g} s)",
        f"best data-parallel sequential run on {min(n_ranks, config.num_samples)} rank(s): "
        f"{base.wall:.3g} s ({base.rounds} rounds) -> predicted speed-up {base.wall / mine.wall:.2f}x",
        f"costs: {source}" + ("" if profile.comm else "; no communication costs (no --perf-profile)"),
    ]
    return "\n".join(lines)
