"""What every sampler shares: the block interface, score evaluation, statistics."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..parallel import balanced_range
from ..errors import ConfigError
from .engine import BlockSweep
from .options import Cost

if TYPE_CHECKING:
    from ..parallel import Communicator

#: numbers per score call when max_batch is 0 (auto)
DEFAULT_CHUNK = 1 << 18
#: bytes of one float64 number: the samplers accumulate in float64 whatever the dtype
F64 = 8


class SamplingError(RuntimeError):
    """A failure of the numerics (non-finite scores, diverging sweeps): ends the run.

    ``collective``: every rank raises it alike (a verdict on shared residuals), so the
    CLI prints it once, on rank 0, instead of once per rank.
    """

    collective = False


@dataclass
class BlockStats:
    """What one block cost and how it ended.

    sweeps:      rounds on the critical path spent on this block (Picard sweeps, or
                 sequential steps);
    evaluations: score evaluations per sample spent on this block, all slices and
                 sweeps together;
    residual:    the last convergence residual (section "convergence test"), or 0 for
                 samplers without one.
    """
    sweeps: int
    evaluations: int
    residual: float = 0.0


@dataclass
class Timers:
    score_seconds: float = 0.0
    noise_seconds: float = 0.0


@dataclass
class SamplerContext:
    """Everything a sampler needs besides the grid: the model and where it runs.

    comm:     the time communicator (ranks that share this sample group's slices);
    samples:  global indices of the samples this rank holds (keys of the noise);
    dtype:    the state's dtype; sums are accumulated in float64 regardless;
    seed:     the run's seed;
    max_batch: the most rows one score call receives (larger batches are chunked);
    on_sweep: called as on_sweep(block_index, sweep, residual) after each Picard sweep
              (progress display, --verbose logs), or None;
    verdicts: the communicator convergence verdicts reduce over (every sample group,
              so that all groups sweep alike); None: ``comm``;
    backend:  the sweep engine's array backend (hpc_picard.arrays); None: numpy;
    condition: the labels of these samples and the guidance scale
              (:class:`hpc_picard.conditioning.Condition`), or None: unconditional.
    latency:  an :class:`hpc_picard.emulation.EmulatedLatency` that pads every score
              call to an emulated device's time (--emulate-latency), or None.
    """
    model: object
    comm: Communicator
    samples: np.ndarray
    dtype: np.dtype
    seed: int
    max_batch: int = 0
    timers: Timers = field(default_factory=Timers)
    on_sweep: object = None
    condition: object = None
    latency: object = None
    verdicts: Communicator | None = None
    backend: object = None

    def __post_init__(self):
        if self.verdicts is None:
            self.verdicts = self.comm
        if self.backend is None:
            from ..arrays import Backend
            self.backend = Backend(np)


class Sampler:
    """A sampler advances the state of its samples across one block at a time.

    ``run_block(block, y0)`` takes the block's start state y0, shape (S, d) (the same on
    every rank of the time communicator) and returns the block's end state, identical
    on every rank of the time communicator, and a :class:`BlockStats`.

    The class also answers for its options before any run exists (docs/design.md,
    "Adding a sampler"): ``options`` (the RunConfig fields it reads), ``validate``,
    ``bounds`` (dry-run rounds and evaluations), ``memory_bytes``, ``owned_slices``
    and ``plan_options``. config.py, cli.py, plans.py and dry_run.py ask these and
    never branch on a sampler's name.
    """

    name = "sampler"
    path = "sde"
    #: whether the sampler spreads a block's slices over ranks (else ranks split samples)
    time_parallel = True
    #: whether the sampler works on the whole trajectory at once (ParaDiGMS's sliding
    #: window): the runner then calls run_trajectory(grid, y0) instead of run_block
    whole_trajectory = False
    #: the RunConfig options this sampler reads (samplers/options.py); each becomes a
    #: config field, a TOML key and a command-line flag
    options: tuple = ()
    #: whether its sweeps run the engine's compiled host kernels (kernels.py) on the
    #: numpy backend; the runner then loads them before sampling starts
    host_kernels = False
    #: whether ``--balance auto`` steals score evaluations between time ranks on host
    #: arrays (samplers/balance.py); samplers whose rounds use score_balancer set it
    balance_auto = False

    # -- the class's answers about a configuration (no run, no MPI) -------------------
    @classmethod
    def validate(cls, config) -> None:
        """ConfigError for option combinations this sampler cannot run.

        Each option's own range is checked by :meth:`Option.check`; this is for what
        involves several options or the rest of the configuration.
        """
        if cls.whole_trajectory and config.checkpoint:
            raise ConfigError(f"{cls.name} works on the whole trajectory at once and has "
                              f"no block boundaries to checkpoint at; drop --checkpoint")

    @classmethod
    def plan_options(cls, config) -> dict:
        """Option values an ``--accuracy`` plan sets besides T and the grid (plans.py)."""
        return {}

    @classmethod
    def owned_slices(cls, config, time_ranks: int, time_rank: int) -> tuple:
        """[lo, hi): the slices of a block that time rank ``time_rank`` of
        ``time_ranks`` evaluates (a sample-parallel sampler owns them all)."""
        if not cls.time_parallel:
            return (0, config.steps_per_block)
        return balanced_range(config.steps_per_block, time_ranks, time_rank)

    @classmethod
    def bounds(cls, config) -> Cost:  # pragma: no cover
        """Rounds and score evaluations per sample of a run of ``config`` (--dry-run)."""
        raise NotImplementedError

    @classmethod
    def memory_bytes(cls, config, samples: int, time_ranks: int, time_rank: int) -> int:  # pragma: no cover
        """Working arrays of one rank holding ``samples`` samples, in bytes (the
        model's own temporaries and rank 0's output copy not included: dry_run.py adds
        those)."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, config, context) -> "Sampler":
        """The sampler with its options' values from a resolved RunConfig, passed as
        keyword arguments named like the options."""
        return cls(context, **{option.name: getattr(config, option.name) for option in cls.options})

    def __init__(self, context: SamplerContext, **options):
        self.ctx = context
        #: --balance (options.BALANCE) for the samplers whose rounds use score_balancer
        self.balance = options.get("balance", "auto")
        self._balancer = None

    def run_block(self, block, y0):  # pragma: no cover
        raise NotImplementedError

    def run_trajectory(self, grid, y0):  # pragma: no cover
        """For whole-trajectory samplers: (end state, one BlockStats for the grid)."""
        raise NotImplementedError

    # -- helpers ----------------------------------------------------------------------
    def engine(self, sample_shape: tuple, components: int = 1) -> BlockSweep:
        """The sweep engine for states of ``components`` x sample_shape, kept from block
        to block with its work arrays."""
        key = (tuple(sample_shape), components)
        engines = self.__dict__.setdefault("_engines", {})
        if key not in engines:
            engines[key] = BlockSweep(self.ctx.comm, self.ctx.verdicts, self.ctx.backend,
                                      self.ctx.dtype, sample_shape, components)
        return engines[key]

    def score_balancer(self, sample_shape: tuple):
        """The :class:`~hpc_picard.samplers.balance.ScoreBalancer` that shares each
        round's score evaluations between the time ranks (``--balance``; auto: where the
        class's ``balance_auto`` says so, on host arrays without an emulated latency),
        kept from block to block."""
        from .balance import ScoreBalancer
        balancer = self._balancer
        if balancer is None or balancer.sample_shape != tuple(sample_shape):
            backend = self.ctx.backend
            enabled = self.balance == "on" or (
                self.balance == "auto" and self.balance_auto and backend.is_host()
                and self.ctx.latency is None)
            S, d = sample_shape
            balancer = self._balancer = ScoreBalancer(
                self.ctx.comm, self.evaluate, backend, self.ctx.dtype, sample_shape,
                rows_per_call=-(-self.chunk_rows(d) // S), enabled=enabled)
        return balancer

    def score(self, states: np.ndarray, times: np.ndarray, block_index: int,
              first_slice: int, out: np.ndarray | None = None) -> np.ndarray:
        """Scores at states of shape (J, S, d), slice j at forward time times[j].

        The batch is handed to the model in chunks of ``max_batch`` rows and written
        into ``out`` if given. With max_batch 0 the model picks (:meth:`auto_chunk`).
        Non-finite output is an error naming the block, the slice and the rank.
        """
        J, S, d = states.shape
        if J == 0:          # a rank without slices (more ranks than a window's slices)
            return np.empty(states.shape, dtype=states.dtype) if out is None else out
        flat = states.reshape(J * S, d)
        t = np.repeat(np.asarray(times, dtype=np.float64), S)
        if out is None:
            out = np.empty(states.shape, dtype=states.dtype)
        dest = out.reshape(J * S, d)
        self._score_rows(flat, t, dest, S)
        finite = np.isfinite(out.reshape(J, -1)).all(axis=1)
        if not finite.all():
            bad = int(np.flatnonzero(~finite)[0])
            raise SamplingError(
                f"non-finite score in block {block_index}, slice {first_slice + bad} "
                f"(forward time t={float(times[bad]):.6g}) on time rank {self.ctx.comm.rank}")
        return out

    def evaluate(self, states, times: np.ndarray, out):
        """Scores at the engine's states (J, S, d), slice j at forward time times[j],
        written into ``out`` (an engine buffer of the same shape and backend).

        The model sees its own array type when the engine's backend is that type, and
        host numpy arrays otherwise (zero-copy views of CPU tensors). Finiteness is
        checked by the engine on its prefix sums, not here (one pass fewer).
        """
        J = states.shape[0]
        if J == 0:
            return out
        be = self.ctx.backend
        # a conditional call pairs and labels rows on the host (conditioning.Condition)
        native = (getattr(self.ctx.model, "array_backend", "numpy") == be.name
                  and be.name != "numpy" and self.ctx.condition is None)
        x = states if native else be.host_view(states)
        target = out if native or be.is_host() else np.empty(tuple(out.shape), dtype=self.ctx.dtype)
        dest = target if native else be.host_view(target) if be.is_host() else target
        S, d = x.shape[1:]
        flat, flat_out = x.reshape(J * S, d), dest.reshape(J * S, d)
        t = np.repeat(np.asarray(times, dtype=np.float64), S)
        self._score_rows(flat, t, flat_out, S)
        if target is not out:
            out[...] = be.asarray(target)
        return out

    def _score_rows(self, flat, t, flat_out, num_samples: int):
        """Model calls for rows flat (R, d) at forward times t (R,) into flat_out, in
        chunks; row i belongs to the rank's sample i % num_samples (its label)."""
        rows_total, d = flat.shape
        chunk = self.chunk_rows(d)
        cond = self.ctx.condition
        start = time.perf_counter()
        if cond is None:
            for i in range(0, rows_total, chunk):
                flat_out[i:i + chunk] = self.ctx.model.score(flat[i:i + chunk], t[i:i + chunk])
        else:
            # A guided pair is two network rows: halve the states per call so a call
            # still holds at most max_batch rows.
            chunk = max(1, chunk // cond.rows_per_state)
            for i in range(0, rows_total, chunk):
                rows = slice(i, i + chunk)
                owners = np.arange(i, min(i + chunk, rows_total)) % num_samples
                flat_out[rows] = cond.score(self.ctx.model, flat[rows], t[rows], owners)
        if self.ctx.latency is not None:
            # one emulated device call per batch, whatever the CPU chunking; a guided
            # pair is two network rows
            network_rows = rows_total * (1 if cond is None else cond.rows_per_state)
            self.ctx.latency.pad(start, network_rows)
        self.ctx.timers.score_seconds += time.perf_counter() - start

    def chunk_rows(self, dim: int) -> int:
        """Rows per model call: ``--max-batch``, or :meth:`auto_chunk` when it is 0."""
        return self.ctx.max_batch if self.ctx.max_batch > 0 else self.auto_chunk(dim)

    def auto_chunk(self, dim: int) -> int:
        """Rows per score call when --max-batch is 0.

        A model that knows its device says so (``preferred_batch()``: a GPU model sizes
        chunks to its free device memory, a network on the CPU to its cache); otherwise
        about 2^18 numbers a chunk, which keeps an analytic target's temporaries in
        cache and out of the page-fault path.
        """
        preferred = getattr(self.ctx.model, "preferred_batch", None)
        if preferred is not None:
            return max(1, int(preferred()))
        return max(1, DEFAULT_CHUNK // dim)

    def increments(self, block, slices, out=None, scale=None) -> np.ndarray:
        """The Gaussian increments xi_j of this block's given slices: (J, S, d), float64,
        into ``out`` if given; ``scale``: a factor per slice (noise.gaussian_slices)."""
        from .. import noise
        start = time.perf_counter()
        out = noise.gaussian_slices(self.ctx.seed, noise.STREAM_INCREMENT, block.index, slices,
                                    self.ctx.samples, self.ctx.model.dim, out=out, scale=scale)
        self.ctx.timers.noise_seconds += time.perf_counter() - start
        return out
