"""The wavefront schedule of PIADM: several blocks in flight at once.

Blockwise PIADM sweeps block n until it converges, then starts block n + 1 from its
end: its rounds are the sum of every block's sweeps. The wavefront keeps a window of
up to W consecutive blocks in flight (``--active-blocks W``, 0 for all). Every round
sweeps every slice of the window at once, and each block starts from its
predecessor's end *of the same round*:

    Y_{j+1} = alpha_j Y_j + h_j,   h_j = c_j (s(Y_j, t_j) + kappa Y_j) + b_j xi_j,
    alpha_j = a_j - kappa c_j,

is the sequential step of ALGORITHM.md section 2 written with a linear part alpha_j
that is integrated exactly and a remainder h_j that lags one round (the score at the
previous iterate). A round is one affine prefix scan over the window's slices: the
composition of the maps z -> alpha_j z + h_j, rank-local first, then one MPI Exscan of
each rank's composed map (a non-commutative user-defined op, Communicator.
exscan_affine). Block boundaries need nothing special: a block's start is its
predecessor's end, and any move of the start reaches every later state through the
exact linear response prod alpha (e^{tau_m} for kappa = 0, ALGORITHM.md section 4b) in
the same round, at no extra cost.

``kappa`` (``linear``): "exp" (kappa = 0) is PIADM's integrating factor, alpha = e^{e}:
only the score lags. "ou" (kappa = 1) also integrates the reference score -Y of a
unit-variance Gaussian exactly (alpha = 2 - e^{e} on the SDE path, 1 on the ODE path)
and lags only s(Y) + Y, the part of the score a standardised data set does not
explain. Both have the fixed point of the sequential sampler, and both leave the
map lower triangular: after k rounds from a fixed start the first k + 1 states are
exact.

Acceptance (ParaDiGMS' window rule, at the window's front): after a round,
r_m = max over samples |Y_m^new - Y_m^old|^2 / (d v_m); the front advances to the
first m with r_m > tol^2 (accepted too: it was rebuilt from accepted states only) or
to the window end. tol = 0 therefore advances one slice a round and reproduces the
sequential sampler on the same grid and noise to round-off. ``picard_iters`` K caps
the sweeps of a block once its start is final (the front entered it): after K such
rounds the whole block is accepted, as blockwise PIADM stops after K sweeps. A block
retires when the front passes its end; blocks enter at the back as others retire,
initialised from the window's last state (``initial_guess`` "constant": that state;
"noise": the score-free trajectory from it).

The ODE path's Langevin corrector acts at each block end as the front passes it:
the front stops there for the corrector's sweeps (its rounds and evaluations count),
and the next block restarts from the corrected state.

Ranks: the window's slices are split over the time communicator in balanced
contiguous ranges, recomputed every round (so the split follows the window as blocks
retire and enter). Each rank holds the window's states (the rebuilt states are
all-gathered after the scan, as in ParaDiGMS); only its own slices are scored.

:class:`Wavefront` runs the schedule on any linear-algebra "problem" (the sampler's
score and noise, or the exact per-mode coefficients of linear_analysis).

Onto the sweep engine (issue 8, samplers/engine.py once it lands): the window is one
engine window over the active blocks' slices with the integrating factor
G_m = prod_{j<m} alpha_j (window-wide, so a plain Exscan SUM replaces the affine op
while G stays in range, e^{+-T}), weight_j = c_j / G_{j+1}, fixed_j = b_j xi_j / G_{j+1}
and the lagged linear term kappa c_j / G_{j+1}; the engine's front/freeze rule is the
acceptance above, and its slide (Alltoallv) lets each rank own only its slices instead
of the all-gathered window. What stays here: block entry/retirement, the K cap, the
corrector stop at block ends, and the checkpointed window.
"""
from __future__ import annotations

import numpy as np

from ..parallel import balanced_range
from ..process import step_coefficients, step_noise_scale

SCHEDULES = ("blockwise", "wavefront")
LINEAR_PARTS = {"ou": 1.0, "exp": 0.0}      # the default first


class Trajectory:
    """The grid's slices end to end, with the coefficients of the split step."""

    def __init__(self, grid, path: str, linear: str = "exp"):
        self.grid = grid
        times = grid.all_times()
        steps = times[:-1] - times[1:]
        a, c, b = step_coefficients(steps, path)
        kappa = LINEAR_PARTS[linear]
        self.alpha = a - kappa * c
        self.kappa = kappa
        self.c, self.b = c, b
        self.times = times
        self.scale = step_noise_scale(steps)
        self.block_of = np.concatenate([np.full(bl.num_slices, bl.index) for bl in grid.blocks])
        self.local = np.concatenate([np.arange(bl.num_slices) for bl in grid.blocks])
        self.block_end = np.cumsum([bl.num_slices for bl in grid.blocks])   # exclusive ends
        self.total = len(steps)

    def window_end(self, front: int, active: int) -> int:
        """End of the window whose first block holds slice ``front``."""
        first = int(self.block_of[front])
        last = self.grid.num_blocks - 1 if active <= 0 else min(first + active - 1,
                                                                 self.grid.num_blocks - 1)
        return int(self.block_end[last])


class WavefrontState:
    """What defines a run between rounds (what a checkpoint stores).

    front: global index of the window's first state (accepted); states: the window's
    states Y_front .. Y_end, shape (end - front + 1, ...); front_sweeps: rounds since
    the front entered its block; rounds, evaluations, residual: the counters.
    """

    def __init__(self, front, states, front_sweeps=0, rounds=0, evaluations=0, residual=0.0):
        self.front = int(front)
        self.states = states
        self.front_sweeps = int(front_sweeps)
        self.rounds = int(rounds)
        self.evaluations = int(evaluations)
        self.residual = float(residual)

    def counters(self) -> dict:
        return {"front": self.front, "front_sweeps": self.front_sweeps, "rounds": self.rounds,
                "evaluations": self.evaluations, "residual": self.residual}


class Wavefront:
    """The schedule on a problem.

    problem.score(rows, slices)     -> s at rows (J, ...) of the given global slices;
    problem.increments(slices)      -> xi of those slices (J, ...), float64;
    problem.residual(diff)          -> (J,): max over samples of |diff|^2 / d per row;
    problem.corrects                -> whether there is a corrector at block ends;
    problem.correct(block, state)   -> (corrected state, rounds, evaluations).
    """

    def __init__(self, problem, trajectory: Trajectory, comm, sweeps: int, tol: float,
                 active_blocks: int = 0, initial_guess: str = "constant", on_round=None,
                 verdicts=None):
        self.problem = problem
        self.traj = trajectory
        self.comm = comm
        # the front's verdicts span every sample group, so that all groups advance alike
        # (and any split of the samples equals one rank); None: ``comm``
        self.verdicts = comm if verdicts is None else verdicts
        self.sweeps = int(sweeps)
        self.tol = float(tol)
        self.active = int(active_blocks)
        self.initial_guess = initial_guess
        self.on_round = on_round
        self._noise = {}

    # -- pieces -----------------------------------------------------------------------
    def _increments(self, slices) -> np.ndarray:
        missing = [j for j in slices if j not in self._noise]
        if missing:
            for j, xi in zip(missing, self.problem.increments(np.array(missing))):
                self._noise[j] = xi
        return np.stack([self._noise[j] for j in slices]) if len(slices) else None

    def _extend(self, states: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Append the initial iterate of global slices [start, stop) to ``states``."""
        if stop <= start:
            return states
        new = np.empty((stop - start,) + states.shape[1:])
        last = states[-1]
        if self.initial_guess == "noise" and self.traj.b[start:stop].any():
            xi = self._increments(range(start, stop))
            for i, j in enumerate(range(start, stop)):
                # The step with the lagged part's score term left out (s = -kappa Y).
                last = self.traj.alpha[j] * last + self.traj.b[j] * xi[i]
                new[i] = last
        else:
            new[...] = last
        return np.concatenate([states, new])

    def start(self, y0) -> WavefrontState:
        y = np.asarray(y0, dtype=np.float64)[None]
        end = self.traj.window_end(0, self.active)
        return WavefrontState(0, self._extend(y, 0, end))

    # -- one round --------------------------------------------------------------------
    def round(self, st: WavefrontState) -> WavefrontState:
        traj, comm = self.traj, self.comm
        front = st.front
        rows = st.states.shape[0] - 1
        lo, hi = balanced_range(rows, comm.size, comm.rank)
        idx = np.arange(front + lo, front + hi)
        x = st.states[lo:hi]
        if hi > lo:
            h = self.problem.score(x, idx)
            h *= traj.c[idx].reshape((-1,) + (1,) * (x.ndim - 1))
            if traj.kappa:
                h += (traj.kappa * traj.c[idx]).reshape((-1,) + (1,) * (x.ndim - 1)) * x
            if traj.b[idx].any():
                h += traj.b[idx].reshape((-1,) + (1,) * (x.ndim - 1)) * self._increments(idx)
            # Local inclusive scan of z -> alpha z + h, from the identity map.
            factors = np.cumprod(traj.alpha[idx])
            for i in range(1, hi - lo):
                h[i] += traj.alpha[idx[i]] * h[i - 1]
            total_factor, total_offset = float(factors[-1]), h[-1]
        else:
            h, factors = None, None
            total_factor, total_offset = 1.0, np.zeros(st.states.shape[1:])
        pre_factor, pre_offset = comm.exscan_affine(total_factor, total_offset)
        if hi > lo:
            base = pre_factor * st.states[0] + pre_offset            # Y_{front + lo}
            rebuilt = factors.reshape((-1,) + (1,) * (x.ndim - 1)) * base + h
            residual = self.problem.residual(rebuilt - st.states[lo + 1:hi + 1]) / traj.scale[idx]
        else:
            rebuilt = np.empty((0,) + st.states.shape[1:])
            residual = np.empty(0)
        failing = np.flatnonzero(residual > self.tol**2)
        first_local = lo + 1 + int(failing[0]) if failing.size else rows + 1
        first_fail = int(self.verdicts.allreduce_min(float(first_local)))
        advance = min(first_fail, rows)
        accepted = residual[:max(0, min(first_fail - 1, rows) - lo)]
        accepted_max = self.verdicts.allreduce_max(float(accepted.max()) if accepted.size else 0.0)
        counts = [b - a for a, b in (balanced_range(rows, comm.size, r) for r in range(comm.size))]
        states = np.concatenate([st.states[:1], comm.allgather_rows(rebuilt, counts)])

        front_block = int(traj.block_of[front])
        block_end = int(traj.block_end[front_block])
        front_sweeps = st.front_sweeps + 1
        if front_sweeps >= self.sweeps:
            advance = max(advance, block_end - front)      # K sweeps from a final start
        rounds, evaluations = st.rounds + 1, st.evaluations + rows
        corrected = None
        if getattr(self.problem, "corrects", False):
            # The corrector acts at a block end before anything after it is accepted.
            advance = min(advance, block_end - front)
            if front + advance == block_end:
                corrected, extra_rounds, extra_evals = self.problem.correct(
                    front_block, states[advance])
                rounds += extra_rounds
                evaluations += extra_evals
        new_front = front + advance
        if int(traj.block_of[min(new_front, traj.total - 1)]) != front_block or new_front == traj.total:
            front_sweeps = 0
        states = states[advance:]
        if corrected is not None:
            states[0] = corrected
        if new_front < traj.total:
            end = front + rows
            states = self._extend(states, end, traj.window_end(new_front, self.active))
        for j in [j for j in self._noise if j < new_front]:
            del self._noise[j]
        out = WavefrontState(new_front, states, front_sweeps, rounds, evaluations,
                             max(st.residual, accepted_max))
        if self.on_round is not None:
            self.on_round(out, rows, advance)
        return out

    def run(self, y0=None, state: WavefrontState | None = None, on_state=None):
        """Rounds until the front reaches the trajectory's end: the final state."""
        st = state if state is not None else self.start(y0)
        while st.front < self.traj.total:
            st = self.round(st)
            if on_state is not None:
                on_state(st)
        return st


def window_bounds(config, grid) -> tuple:
    """(most rounds, most evaluations per sample, most states in the window) of a
    wavefront run: tol 0 accepts one slice a round (plus the corrector's sweeps at
    every block end), and a round scores at most the W blocks in flight."""
    active = config.active_blocks if config.active_blocks > 0 else grid.num_blocks
    width = max(sum(b.num_slices for b in grid.blocks[n:n + active]) for n in range(grid.num_blocks))
    corrector = 0
    if config.sampler == "piadm-ode" and config.corrector_steps > 0:
        corrector = min(config.picard_iters, config.corrector_steps)
    rounds = grid.total_slices + grid.num_blocks * corrector
    evaluations = grid.total_slices * width + grid.num_blocks * corrector * config.corrector_steps
    return rounds, evaluations, width + 1


class SamplerProblem:
    """The wavefront's problem for a sampler: its model's scores and its noise."""

    def __init__(self, sampler, trajectory: Trajectory, corrector=None):
        self.sampler = sampler
        self.traj = trajectory
        self.corrector = corrector
        self.corrects = corrector is not None

    def score(self, rows, slices):
        ctx = self.sampler.ctx
        first = int(slices[0])
        out = self.sampler.score(rows.astype(ctx.dtype, copy=False), self.traj.times[slices],
                                 int(self.traj.block_of[first]), int(self.traj.local[first]))
        return out.astype(np.float64)

    def increments(self, slices):
        # The sampler draws (and times) the noise block by block.
        blocks = self.traj.block_of[slices]
        return np.concatenate([
            self.sampler.increments(self.traj.grid.blocks[n], self.traj.local[slices[blocks == n]])
            for n in np.unique(blocks)])

    @staticmethod
    def residual(diff):
        return np.square(diff).sum(axis=-1).max(axis=-1) / diff.shape[-1]

    def correct(self, block_index, state):
        block = self.traj.grid.blocks[block_index]
        x, sweeps, evaluations = self.corrector.run(self.sampler, block, state)
        return np.asarray(x, dtype=np.float64), sweeps, evaluations
