"""What a running job tells its user: a live progress line, rank-prefixed logs, and
the final summary table.

- :class:`Progress`: one self-overwriting line on rank 0's terminal (blocks, sweeps,
  current residual). Off when stderr is not a TTY (batch jobs, pipes) and with
  ``--no-progress``.
- :func:`configure_logging`: the ``hpc_picard`` logger writes ``[rank r] ...`` lines to
  stderr: rank 0's INFO events (resume, checkpoints) by default, every rank's per-block
  and per-sweep DEBUG detail with ``--verbose``.
- :func:`summary_table`: rounds, evaluations, the wall-time split and accuracy, the
  figures also stored in the output file's ``stats`` group.
"""
from __future__ import annotations

import logging
import sys
import time

LOGGER = "hpc_picard"


class Progress:
    """A live ``block n/N  sweep k/K  residual r`` line on ``stream``.

    ``enabled=None`` means: on if ``stream`` is a terminal. Redraws at most every
    ``interval`` seconds (a sweep can take microseconds on small problems), and always
    at a block's end.
    """

    def __init__(self, num_blocks: int, max_sweeps: int, stream=None, enabled=None,
                 interval: float = 0.1):
        self.stream = sys.stderr if stream is None else stream
        if enabled is None:
            enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = enabled
        self.num_blocks = num_blocks
        self.max_sweeps = max_sweeps
        self.interval = interval
        self._last_draw = -float("inf")
        self._width = 0
        self.blocks_done = 0

    def _draw(self, text: str, force: bool = False):
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last_draw < self.interval):
            return
        self._last_draw = now
        pad = max(0, self._width - len(text))
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self._width = len(text)

    # Blocks are numbered from 0 in every message (as in --dry-run's table, the
    # checkpoint's next block and the stats arrays); sweeps count 1 .. K.
    def sweep(self, block_index: int, sweep: int, residual: float):
        self._draw(f"picard-sample: block {block_index} (blocks 0-{self.num_blocks - 1})  "
                   f"sweep {sweep}/{self.max_sweeps}  residual {residual:.3g}")

    def block(self, block_index: int, stats):
        self.blocks_done = block_index + 1
        self._draw(f"picard-sample: block {block_index} (blocks 0-{self.num_blocks - 1}) done  "
                   f"({stats.sweeps} sweeps, residual {stats.residual:.3g})",
                   force=block_index + 1 == self.num_blocks)

    def close(self):
        if self.enabled and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0


def configure_logging(rank: int, verbose: bool = False, stream=None) -> logging.Logger:
    """Send the ``hpc_picard`` logger to ``stream`` (stderr) with a rank prefix.

    Default: INFO on rank 0, WARNING elsewhere; ``verbose``: DEBUG on every rank.
    """
    logger = logging.getLogger(LOGGER)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.setFormatter(logging.Formatter("[rank %(rank)s] %(levelname)s %(message)s"))
    handler.addFilter(_RankLabel(rank))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO if rank == 0 else logging.WARNING)
    logger.propagate = False
    return logger


class _RankLabel(logging.Filter):
    """Labels a record with the world rank it is about: its own ``extra={"rank": r}``
    when a rank reports for others (rank 0's placement lines), else the logging rank."""

    def __init__(self, rank: int):
        super().__init__()
        self.rank = rank

    def filter(self, record):
        if not hasattr(record, "rank"):
            record.rank = self.rank
        return True


class _StderrHandler(logging.Handler):
    """Writes to whatever sys.stderr is at the time of the record, not at setup."""

    def emit(self, record):
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # pragma: no cover - logging must never end the run
            self.handleError(record)


def sweep_logger(logger: logging.Logger):
    """An on_sweep callback writing each sweep's residual at DEBUG level."""
    def on_sweep(block_index: int, sweep: int, residual: float):
        logger.debug("block %d sweep %d residual %.4g", block_index, sweep, residual)
    return on_sweep


def summary_table(config, n_ranks: int, time_ranks: int, stats: dict, accuracy: dict) -> str:
    """The end-of-run table: cost, the wall-time split, accuracy (analytic targets)."""
    wall = stats["wall_time"]
    parts = [("score model", stats["score_time"]),
             ("communication", stats["communication_time"]),
             ("I/O (checkpoints, output)", stats.get("io_time", 0.0)),
             ("noise generation", stats["noise_time"]),
             ("setup (imports, model)", stats.get("setup_time", 0.0))]
    other = wall - sum(seconds for _, seconds in parts)
    rows = [
        ("rounds (critical path)", f"{stats['rounds']}"),
        ("sequential rounds, same grid",
         f"{stats['sequential_rounds']}  ({stats['sequential_rounds'] / max(stats['rounds'], 1):.1f}x)"),
        ("score evaluations / sample", f"{stats['evaluations']}"),
    ]
    if stats.get("network_rows_per_evaluation", 1) > 1:
        rows.append(("  network rows / sample",
                     f"{stats['evaluations'] * stats['network_rows_per_evaluation']} "
                     f"(guidance w={stats['guidance_scale']:g}: each evaluation is a "
                     f"conditional + unconditional pair)"))
    rows.append(("wall time", f"{wall:.3f} s"))
    rows += [(f"  {name}", f"{seconds:.3f} s  {100 * seconds / wall if wall > 0 else 0:5.1f}%")
             for name, seconds in parts + [("other (arithmetic)", max(other, 0.0))]]
    if stats.get("restarts"):
        rows.append(("restarts", f"{stats['restarts']} (times are summed over segments)"))
    rows += [(f"accuracy: {name}", f"{value:.4g}") for name, value in accuracy.items()
             if isinstance(value, float)]
    groups = n_ranks // time_ranks
    head = (f"picard-sample: {config.sampler} on {config.model} (d={config.dim}), "
            f"{config.num_samples} samples, {n_ranks} rank(s) = {groups} sample group(s) "
            f"x {time_ranks} time rank(s) -> {config.output}")
    width = max(len(name) for name, _ in rows)
    return "\n".join([head] + [f"  {name:<{width}}  {value}" for name, value in rows])
