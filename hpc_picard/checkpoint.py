"""Checkpoints between blocks: the whole sampler state in one HDF5 file.

Between blocks the run is defined by the index of the next block, the block-end states
of all samples (num_samples, d), and the counters so far (docs/method.md, "The MPI
decomposition"). A checkpoint stores exactly that, plus the resolved configuration and
a hash of the fields that change the samples, so that ``--resume`` continues the same
computation or refuses to.

Layout:

    /states                 (num_samples, d), the run's dtype, fletcher32-checksummed
    /sweeps_per_block       (next_block,) int64, fletcher32
    /residual_per_block     (next_block,) float64, fletcher32
    /window_states          (num_samples, rows + 1, d), only under --schedule wavefront:
                            the states of the blocks in flight, from the accepted front
    /window_history         (num_samples, rows, 2 + 2m, d) float64, only under
                            --schedule wavefront with --accelerate anderson (depth m):
                            each window slice's Anderson row (last residual and image
                            of the state it rebuilds, m differences of each)
    /labels                 (num_samples,) int64, conditional runs only
    / attrs: window (JSON counters of the wavefront, if any), format, next_block,
             evaluations, restarts, config (JSON), config_hash,
             n_ranks, hpc_picard_version, and the cumulative seconds of earlier segments
             (wall_time, score_time, noise_time, communication_time, io_time,
             setup_time)

The first HEADER_SIZE bytes are an HDF5 user block (ignored by HDF5) that holds a
SHA-256 digest of every byte after it: data, attributes and HDF5's own structures. A
read checks the digest before HDF5 parses anything, so a flipped byte anywhere, a
truncation or an appended tail is refused as corrupt, never half believed.

Writes go through :func:`hpc_picard.output.write_atomic` (temporary file, fsync,
rename): the previous checkpoint stays valid until the new one is complete, and a
checkpoint at the final path is never half written.

Only world rank 0 touches the file. :func:`save` and :func:`load` are collective over
the process grid: states are gathered to rank 0 before a write, and the verdict of a
read (a state or a refusal) is broadcast, so every rank raises the same error.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field

import h5py
import numpy as np

from . import __version__
from .output import write_atomic

FORMAT = 2

#: the user block: MAGIC, the hex digest of the rest of the file, a newline, zeros
HEADER_SIZE = 512
MAGIC = b"hpc_picard checkpoint sha256 "

#: RunConfig fields that do not change the samples: where files go and how the work is
#: split over ranks (results at another rank count agree to round-off). Every other
#: field, including ones added later, counts towards the config hash.
NON_RESULT_FIELDS = ("output", "checkpoint", "checkpoint_every", "time_ranks", "max_batch")

#: cumulative wall-clock seconds carried from one segment of a run to the next
TIMINGS = ("wall_time", "score_time", "noise_time", "communication_time", "io_time",
           "setup_time")


class CheckpointError(Exception):
    """A checkpoint that cannot be used: reported as one line, exit code 2."""


class CheckpointWriteError(Exception):
    """A checkpoint that could not be written (rank 0 only): one line, exit code 1;
    the previous checkpoint stays intact."""


@dataclass
class RunState:
    """The state of a run between blocks.

    next_block:  index of the first block still to run (0 .. num_blocks);
    states:      (num_samples, d) block-end states of all samples, in sample order,
                 at reverse time = end of block next_block - 1 (or Y_0 at block 0);
    sweeps, residuals: per finished block, as in RunResult.per_block;
    evaluations: score evaluations per sample so far;
    restarts:    how many times the run was resumed to reach this state;
    timings:     cumulative seconds of earlier segments (TIMINGS), rank 0's clock;
    window:      under --schedule wavefront, the in-flight window: its counters (front,
                 front_sweeps, rounds, evaluations, residual, fresh_from; with Anderson
                 mixing its counters, "mixing") and ``window_states``
                 (num_samples, rows + 1, d); ``states`` is then the front's state.
    window_history: with Anderson mixing on the window, its rows
                 (num_samples, rows, 2 + 2m, d), else None.
    labels:      every sample's class label (conditional runs), else None.
    """
    next_block: int
    states: np.ndarray
    sweeps: list = field(default_factory=list)
    residuals: list = field(default_factory=list)
    evaluations: int = 0
    restarts: int = 0
    timings: dict = field(default_factory=dict)
    window: dict | None = None
    window_states: np.ndarray | None = None
    labels: np.ndarray | None = None
    window_history: np.ndarray | None = None


def check_labels(state: RunState, labels, path: str):
    """CheckpointError unless the checkpoint's labels are the run's (a --labels file can
    change under an unchanged configuration)."""
    same = (state.labels is None and labels is None) or (
        state.labels is not None and labels is not None and np.array_equal(state.labels, labels))
    if not same:
        raise CheckpointError(f"checkpoint {path} was written with other class labels than "
                              f"--labels gives now; restore the labels or start over without --resume")


def result_fields(config) -> dict:
    """The configuration fields that change the samples, by name."""
    values = json.loads(config.to_json())
    return {k: v for k, v in values.items() if k not in NON_RESULT_FIELDS}


def config_hash(config) -> str:
    """sha256 of the result fields (sorted JSON): equal hashes, equal computations."""
    text = json.dumps(result_fields(config), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def differing_fields(stored_json: str, config) -> list:
    """Names of the result fields whose stored value differs from ``config``'s."""
    stored = json.loads(stored_json)
    current = result_fields(config)
    names = sorted(set(current) | (set(stored) - set(NON_RESULT_FIELDS)))
    return [name for name in names if stored.get(name, "<absent>") != current.get(name, "<absent>")]


# -- the file (rank 0 only) -----------------------------------------------------------
def write(path: str, state: RunState, config, n_ranks: int) -> None:
    """Write ``state`` atomically to ``path`` (one rank)."""
    def fill(fh):
        _checksummed(fh, "states", state.states)
        _checksummed(fh, "sweeps_per_block", np.asarray(state.sweeps, dtype=np.int64))
        _checksummed(fh, "residual_per_block", np.asarray(state.residuals, dtype=np.float64))
        if state.window is not None:
            _checksummed(fh, "window_states", state.window_states)
            fh.attrs["window"] = json.dumps(state.window)
            if state.window_history is not None:
                _checksummed(fh, "window_history", state.window_history)
        if state.labels is not None:
            _checksummed(fh, "labels", np.asarray(state.labels, dtype=np.int64))
        fh.attrs["format"] = FORMAT
        fh.attrs["next_block"] = state.next_block
        fh.attrs["evaluations"] = state.evaluations
        fh.attrs["restarts"] = state.restarts
        fh.attrs["config"] = config.to_json()
        fh.attrs["config_hash"] = config_hash(config)
        fh.attrs["n_ranks"] = n_ranks
        fh.attrs["hpc_picard_version"] = __version__
        for name in TIMINGS:
            fh.attrs[name] = float(state.timings.get(name, 0.0))
    write_atomic(path, fill, userblock_size=HEADER_SIZE, seal=_seal)


def _digest_after_header(fh) -> str:
    fh.seek(HEADER_SIZE)
    digest = hashlib.sha256()
    for chunk in iter(lambda: fh.read(1 << 22), b""):
        digest.update(chunk)
    return digest.hexdigest()


def _header(digest: str) -> bytes:
    return (MAGIC + digest.encode() + b"\n").ljust(HEADER_SIZE, b"\0")


def _seal(image: bytes) -> bytes:
    """The whole file: the header with the digest of ``image``, then ``image``."""
    return _header(hashlib.sha256(image).hexdigest()) + image


def verify(path: str):
    """CheckpointError unless ``path`` is a regular file whose user block holds the
    digest of the rest of it (the whole header is compared, padding included)."""
    from .fileguard import refuse_non_regular
    try:
        refuse_non_regular(path)
        with open(path, "rb") as fh:
            header = fh.read(HEADER_SIZE)
            digest = _digest_after_header(fh)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read ({_reason(exc)})") from None
    if not header.startswith(MAGIC):
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated (no hpc_picard "
                              f"checksum header; not a format-{FORMAT} checkpoint?); restore it "
                              f"or start over without --resume")
    if header != _header(digest):
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated (content checksum "
                              f"mismatch); restore it or start over without --resume")


def _checksummed(fh, name: str, array: np.ndarray):
    """A dataset in row chunks of about a megabyte, each with a fletcher32 checksum that
    h5py verifies on read (an empty array has no chunks to check)."""
    if array.size == 0:
        fh.create_dataset(name, data=array)
        return
    rows = max(1, min(array.shape[0], (1 << 20) // max(1, array[0].nbytes)))
    fh.create_dataset(name, data=array, fletcher32=True, chunks=(rows,) + array.shape[1:])


def read(path: str, config) -> RunState:
    """Read and check the checkpoint at ``path`` against ``config`` (one rank).

    Raises CheckpointError if the file is unreadable, truncated or corrupt (checksum),
    was written by a run whose result fields differ, or holds inconsistent shapes.
    """
    verify(path)
    try:
        with h5py.File(path, "r") as fh:
            attrs = {name: fh.attrs[name] for name in fh.attrs}
            if attrs.get("format") != FORMAT:
                raise CheckpointError(f"checkpoint {path} is not an hpc_picard checkpoint "
                                      f"(format {attrs.get('format')!r}, expected {FORMAT})")
            stored_config = str(attrs["config"])
            if attrs["config_hash"] != config_hash(config):
                names = differing_fields(stored_config, config)
                stored = json.loads(stored_config)
                detail = ", ".join(f"{n} (checkpoint {stored.get(n)!r}, now {getattr(config, n, None)!r})"
                                   for n in names)
                raise CheckpointError(
                    f"checkpoint {path} was written with a different configuration: {detail or 'unknown fields'}; "
                    f"rerun with the checkpoint's values or start over without --resume")
            states = fh["states"][...]
            sweeps = [int(v) for v in fh["sweeps_per_block"][...]]
            residuals = [float(v) for v in fh["residual_per_block"][...]]
            window = json.loads(str(attrs["window"])) if "window" in attrs else None
            window_states = fh["window_states"][...] if window is not None else None
            window_history = fh["window_history"][...] \
                if window is not None and "window_history" in fh else None
            labels = fh["labels"][...] if "labels" in fh else None
    except CheckpointError:
        raise
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except Exception as exc:
        # Past the digest this is a file we wrote, or a foreign one given our header:
        # whatever HDF5 or the parsing below raises, the file is not usable.
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({_reason(exc)}); "
                              f"restore it or start over without --resume") from None
    try:
        next_block = int(attrs["next_block"])
        evaluations, restarts = int(attrs["evaluations"]), int(attrs["restarts"])
        timings = {name: float(attrs.get(name, 0.0)) for name in TIMINGS}
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({_reason(exc)}); "
                              f"restore it or start over without --resume") from None
    expected = (config.num_samples, config.dim)
    if (states.shape != expected or states.dtype != np.dtype(config.dtype)
            or not 0 <= next_block <= config.blocks
            or len(sweeps) != next_block or len(residuals) != next_block
            or (window is not None and (window_states.ndim != 3 or window_states.shape[0] != expected[0]
                                        or window_states.shape[2] != expected[1]))
            or (window_history is not None and (
                window_history.ndim != 4 or window_history.dtype != np.float64
                or window_history.shape[0] != expected[0] or window_history.shape[3] != expected[1]
                or window_history.shape[1] != window_states.shape[1] - 1))):
        raise CheckpointError(f"checkpoint {path} is inconsistent: states {states.shape} "
                              f"{states.dtype}, {len(sweeps)} block records, next block "
                              f"{next_block}; expected {expected} {config.dtype}")
    return RunState(next_block=next_block, states=states, sweeps=sweeps, residuals=residuals,
                    evaluations=evaluations, restarts=restarts, timings=timings,
                    window=window, window_states=window_states, labels=labels,
                    window_history=window_history)


def check_history(state: RunState, width: int, path: str):
    """CheckpointError unless the window's Anderson history fits the run: rows of
    ``width`` entries per state where the run mixes its window (width > 0), none where
    it does not (width 0). A window without one cannot be resumed by a mixing run:
    fresh history would mix otherwise than the run that wrote it."""
    if state.window is None:
        return
    held = state.window_history
    if width and (held is None or "mixing" not in state.window):
        raise CheckpointError(f"checkpoint {path} holds no Anderson mixing history, which "
                              f"--accelerate anderson with --schedule wavefront needs to "
                              f"repeat the run; start over without --resume")
    if width and held.shape[2] != width:
        raise CheckpointError(f"checkpoint {path} is inconsistent: Anderson history rows of "
                              f"{held.shape[2]} entries, expected {width}")
    if not width and held is not None:
        raise CheckpointError(f"checkpoint {path} holds an Anderson mixing history but the "
                              f"run does not mix; resume with the checkpoint's "
                              f"--accelerate anderson or start over without --resume")


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]


# -- collective over the process grid -------------------------------------------------
def save(pgrid, path: str, y_local: np.ndarray, state: RunState, config) -> float:
    """Gather every group's states to world rank 0 and write the checkpoint there.

    Collective over ``pgrid.samples`` on time rank 0 of each group (every time rank of
    a group holds the same states). ``state.states`` is ignored and replaced by the
    gathered array. Returns the seconds rank 0 spent writing (0 elsewhere).
    """
    gathered = pgrid.samples.gather_rows(y_local, root=0) if pgrid.time.rank == 0 else None
    if state.window_states is not None:
        # (rows + 1, S_local, d) -> sample-major, so that groups concatenate by sample
        local = np.ascontiguousarray(np.swapaxes(state.window_states, 0, 1))
        state.window_states = pgrid.samples.gather_rows(local, root=0) if pgrid.time.rank == 0 else None
    if state.window_history is not None:
        # (rows, 2 + 2m, S_local, d) -> sample-major likewise
        local = np.ascontiguousarray(np.moveaxis(state.window_history, 2, 0))
        state.window_history = pgrid.samples.gather_rows(local, root=0) if pgrid.time.rank == 0 else None
    if pgrid.world.rank != 0:
        return 0.0
    start = time.perf_counter()
    state.states = gathered
    try:
        write(path, state, config, pgrid.world.size)
    except OSError as exc:
        from .fileguard import short_reason
        raise CheckpointWriteError(f"could not write checkpoint {path} ({short_reason(exc)}); "
                                   f"the previous checkpoint is intact: free space and "
                                   f"rerun with --resume") from None
    return time.perf_counter() - start


def load(pgrid, path: str, config) -> tuple:
    """Read the checkpoint on world rank 0 and share it with every rank.

    Returns (RunState, seconds rank 0 spent reading) on every rank, with state None
    when there is no file at ``path``. Raises CheckpointError on every rank alike when
    rank 0 refuses the file. The states, (num_samples, d), reach every rank; each
    takes its own sample rows.
    """
    start = time.perf_counter()
    verdict, state = None, None
    if pgrid.world.rank == 0:
        if not os.path.lexists(path):
            verdict = ("missing", None)
        else:
            try:
                state = read(path, config)
                # the counters travel as a small object, the states as a buffer
                verdict = ("ok", RunState(state.next_block, None, state.sweeps, state.residuals,
                                          state.evaluations, state.restarts, state.timings,
                                          state.window, _shape(state.window_states),
                                          state.labels, _shape(state.window_history)))
            except CheckpointError as exc:
                verdict = ("refused", str(exc))
            except Exception as exc:     # never a traceback for a damaged file
                verdict = ("refused", f"checkpoint {path} is corrupt or truncated "
                                      f"({_reason(exc)}); restore it or start over without --resume")
    elapsed = time.perf_counter() - start
    kind, detail = pgrid.world.bcast_obj(verdict, root=0)
    if kind == "refused":
        raise CheckpointError(detail)
    if kind == "missing":
        return None, elapsed
    states = state.states if state is not None else \
        np.empty((config.num_samples, config.dim), dtype=config.dtype)
    detail.states = pgrid.world.bcast_array(states, root=0)
    for name in ("window_states", "window_history"):
        shape = getattr(detail, name)
        if shape is not None:
            whole = getattr(state, name) if state is not None else np.empty(shape)
            setattr(detail, name, pgrid.world.bcast_array(
                np.ascontiguousarray(whole, dtype=np.float64), root=0))
    return detail, elapsed


def _shape(array):
    return None if array is None else array.shape
