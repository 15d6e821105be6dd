"""The time grid: reverse time [0, T - delta] cut into blocks, each cut into slices.

The grid is uniform in a warped clock

    u(t) = log t      for t < 1     (geometric near the data end)
    u(t) = t - 1      for t >= 1    (uniform in the bulk)

which is continuous with a continuous derivative at t = 1. Blocks are equal intervals
of u between u(delta) and u(T), and the slices of a block are equal intervals of u
inside it. In the bulk this gives blocks of equal length in t with uniform slices; near
the data end blocks and slices shrink geometrically (slices uniform in log t), so the
step length stays proportional to the noise level t while the score's Lipschitz
constant grows like 1 / (lambda_min + t). L * h, and with it the Picard contraction
factor, stays bounded in every block (docs/method.md, "The time grid").
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def warp(t):
    """u(t): log t below t = 1, t - 1 above (forward time in, warped clock out)."""
    t = np.asarray(t, dtype=np.float64)
    return np.where(t < 1.0, np.log(np.minimum(t, 1.0)), t - 1.0)


def unwarp(u):
    """Inverse of :func:`warp`."""
    u = np.asarray(u, dtype=np.float64)
    return np.where(u < 0.0, np.exp(np.minimum(u, 0.0)), u + 1.0)


@dataclass(frozen=True)
class Block:
    """One block of the grid.

    index:   block number n, counted in reverse time (0 starts at pure noise).
    times:   forward times t_0 > t_1 > ... > t_M of the slice boundaries, shape (M+1,).
    """

    index: int
    times: np.ndarray

    @property
    def num_slices(self) -> int:
        return len(self.times) - 1

    @property
    def tau(self) -> np.ndarray:
        """Reverse time since the block start at every slice boundary, shape (M+1,)."""
        return self.times[0] - self.times

    @property
    def steps(self) -> np.ndarray:
        """Reverse-time lengths e_j = tau_{j+1} - tau_j of the slices, shape (M,)."""
        return self.times[:-1] - self.times[1:]

    @property
    def score_times(self) -> np.ndarray:
        """Forward times at which slice j freezes the score (its start), shape (M,)."""
        return self.times[:-1]


@dataclass(frozen=True)
class TimeGrid:
    """N blocks of slices covering forward time [delta, T] (reverse time [0, T - delta])."""

    T: float
    delta: float
    blocks: tuple

    @classmethod
    def build(cls, T: float, delta: float, num_blocks: int, slices_per_block) -> "TimeGrid":
        """Warped-uniform grid; ``slices_per_block`` is an int or one int per block."""
        if not (T > delta > 0):
            raise ValueError(f"need T > delta > 0, got T={T}, delta={delta}")
        if num_blocks < 1:
            raise ValueError(f"need at least one block, got {num_blocks}")
        per_block = np.broadcast_to(np.asarray(slices_per_block, dtype=int), (num_blocks,))
        if (per_block < 1).any():
            raise ValueError(f"need at least one slice per block, got {slices_per_block}")
        edges = np.linspace(warp(T), warp(delta), num_blocks + 1)
        blocks = []
        for n in range(num_blocks):
            u = np.linspace(edges[n], edges[n + 1], per_block[n] + 1)
            t = unwarp(u)
            # Pin the shared block boundaries and the ends exactly.
            t[0] = T if n == 0 else blocks[-1].times[-1]
            if n == num_blocks - 1:
                t[-1] = delta
            blocks.append(Block(n, t))
        return cls(float(T), float(delta), tuple(blocks))

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def total_slices(self) -> int:
        return sum(b.num_slices for b in self.blocks)

    def all_times(self) -> np.ndarray:
        """Every slice boundary in forward time, from T down to delta."""
        return np.concatenate([self.blocks[0].times[:1]] + [b.times[1:] for b in self.blocks])

    def describe(self) -> list:
        """One dict per block: index, slices, forward-time range; for plans and docs."""
        return [
            {"block": b.index, "slices": b.num_slices, "t_start": float(b.times[0]),
             "t_end": float(b.times[-1]), "min_step": float(b.steps.min()),
             "max_step": float(b.steps.max())}
            for b in self.blocks
        ]
