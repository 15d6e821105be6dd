"""Watching a block's Picard sweeps: report each one, stop the ones that diverge.

Picard sweeps contract when the block is short enough for its slices (L * h small,
docs/method.md). When a block is too long, the error of sweep k behaves like
(L h)^k / k!: the residual grows for about L h sweeps before it can shrink, and with
K < M sweeps the block may end far from the fixed point. Writing such samples would be
writing garbage, so a residual that keeps growing stops the run with advice instead.
"""
from __future__ import annotations

import math

from .base import SamplingError

#: fewest consecutive growing sweeps that count as divergence. Healthy blocks of the
#: default grids grow for one or two sweeps (the first sweeps move every slice off Y_0);
#: coarse but usable grids for up to three, then contract.
MIN_GROWTH_SWEEPS = 3


class SweepMonitor:
    """One block's residual history and the divergence verdict.

    ``check(sweep, residual_sq)`` takes the squared residual max_m r_m after sweep
    ``sweep`` (1-based), the same on every rank of the time communicator, so every rank
    reaches the same verdict. The block diverges when

    - the residual is not finite;
    - it grew over max(3, K / 2) consecutive sweeps: half the budget spent going the
      wrong way leaves too few sweeps to come back;
    - after the last of K sweeps it is above tol and above its value after the first
      sweep, having grown over at least 3 consecutive sweeps on the way: the sweeps
      made no net progress. (Without the growth the block is merely unconverged, as
      every block is at small K, and studies of small K must still run.)

    Growth counts only above 1 (a change larger than one step's noise scale): below
    that the residual is near round-off and may wobble.
    """

    def __init__(self, block, max_sweeps: int, tol: float, on_sweep=None):
        self.block = block
        self.max_sweeps = max_sweeps
        self.tol = tol
        self.on_sweep = on_sweep
        self.history = []
        self.streak = 0           # consecutive growing sweeps up to now
        self.longest_streak = 0
        self.growth_limit = max(MIN_GROWTH_SWEEPS, max_sweeps // 2)
        # With K >= M sweeps the first M of them reproduce the sequential sampler
        # exactly whatever the transient does, so growth is not divergence there.
        self.watch = max_sweeps < block.num_slices

    def check(self, sweep: int, residual_sq: float):
        self.history.append(residual_sq)
        if self.on_sweep is not None:
            self.on_sweep(self.block.index, sweep, math.sqrt(residual_sq))
        if not math.isfinite(residual_sq):
            self._fail(f"the residual is {residual_sq} after sweep {sweep}")
        if not self.watch:
            return
        previous = self.history[-2] if len(self.history) > 1 else math.inf
        self.streak = self.streak + 1 if previous > 1.0 and residual_sq > previous else 0
        self.longest_streak = max(self.longest_streak, self.streak)
        if self.streak >= self.growth_limit:
            recent = self.history[-(self.streak + 1):]
            trail = " -> ".join(f"{math.sqrt(r):.3g}" for r in recent)
            self._fail(f"the residual grew over {self.streak} consecutive sweeps ({trail})")
        first = self.history[0]
        if (sweep == self.max_sweeps and self.longest_streak >= MIN_GROWTH_SWEEPS
                and residual_sq > max(self.tol**2, first, 1.0)):
            self._fail(f"after {sweep} sweeps the residual {math.sqrt(residual_sq):.3g} is "
                       f"larger than after the first ({math.sqrt(first):.3g})")

    def _fail(self, what: str):
        error = SamplingError(
            f"Picard sweeps diverge in block {self.block.index}: {what}; the block is too "
            f"long to converge in {self.max_sweeps} sweeps: use more --blocks (shorter blocks)")
        error.collective = True     # the residuals are reduced over all ranks
        raise error
