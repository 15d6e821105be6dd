"""Emulated accelerators: score calls that take a device's time, on any machine.

``--emulate-latency T0[,T1]`` makes every score call of a rank last at least
T0 + T1 x rows seconds of wall time: the real score is computed, then the rank sleeps
for the remainder. That models a device whose evaluation time is flat in the batch up
to its width (T1 = 0) or grows with it (T1 > 0). Many such ranks on a few cores then
behave like one device per rank as long as the real work of all ranks fits in T0
(docs/scaling.md measures where that stops holding) and the ranks waiting in MPI
collectives sleep instead of spinning: :data:`QUIET_PROGRESS_ENV`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

#: MPICH (4.x/5.x, ch4) settings under which a rank waiting in a collective yields its
#: core with nanosleep between polls instead of busy-polling. Without them, ranks that
#: wait steal the cores of the ranks that compute once ranks outnumber cores
#: (docs/scaling.md, "Oversubscribed ranks"). Harmless on one rank per core.
QUIET_PROGRESS_ENV = {"MPIR_CVAR_ENABLE_HEAVY_YIELD": "1", "MPIR_CVAR_POLLS_BEFORE_YIELD": "1"}


class LatencyError(ValueError):
    """A --emulate-latency value that does not parse as T0[,T1] with T0, T1 >= 0."""


@dataclass(frozen=True)
class EmulatedLatency:
    """Every score call takes at least ``fixed + per_row * rows`` seconds."""
    fixed: float
    per_row: float = 0.0

    @classmethod
    def parse(cls, text: str) -> "EmulatedLatency | None":
        """"T0" or "T0,T1" (seconds, seconds per row); "" means no emulation."""
        if not text.strip():
            return None
        parts = text.split(",")
        if len(parts) > 2:
            raise LatencyError(f"--emulate-latency takes T0 or T0,T1, got {text!r}")
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise LatencyError(f"--emulate-latency takes numbers T0[,T1] in seconds, got {text!r}") from None
        if not all(math.isfinite(v) and v >= 0 for v in values):
            raise LatencyError(f"--emulate-latency values must be finite and >= 0, got {text!r}")
        return cls(*values)

    def seconds(self, rows: int) -> float:
        return self.fixed + self.per_row * rows

    def pad(self, started: float, rows: int) -> None:
        """Sleep until ``seconds(rows)`` have passed since ``started`` (perf_counter)."""
        remaining = self.seconds(rows) - (time.perf_counter() - started)
        if remaining > 0:
            time.sleep(remaining)
