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

Ranks own contiguous slices of the window, and only those: rank r holds the states at
window positions lo_r .. hi_r of its balanced range of slices [lo_r, hi_r) (the
states it scores plus the one its last slice rebuilds), the increments xi of its
slices and, with Anderson, their history rows: O(window / P) per rank. A round:

    score the own slices -> h_j -> local composition of z -> alpha_j z + h_j
    -> one Exscan of the composed maps (Communicator.exscan_affine). Rank 0 applies
       its maps to the front state it holds and sends the result with factor 0, which
       cuts the segmented scan there: every other rank receives its first state
       Y_lo (its predecessor's end, carried across block boundaries by the scan)
    -> rebuild of the own states, residual, one verdict reduction
    -> [Anderson on the positions behind the verdict (acceleration.WindowMixer)]
    -> rebalance: the window moves by the accepted prefix and is re-split over the
       ranks for its new size (blocks retired at the front, entered at the back);
       one Alltoallv each (Communicator.move_rows) ships the states, the increments
       and Anderson's rows to their new owners, each position from the rank that
       rebuilt it. Slices that entered are initialised and their increments drawn by
       their first owner (each xi once per run).

The end of the run (a window of no slices) leaves the end state on every rank. A
checkpoint gathers the whole window to rank 0 (:func:`whole_window`), with Anderson's
history rows and counters (:func:`whole_history`, WindowMixer.counters) where it
mixes; a resume hands every rank the whole window once and each keeps its part. The
split and the scan's order depend on the rank count, so another rank count agrees to
round-off (1e-12), the same one bitwise.

Anderson mixing (``mixer``, ``--accelerate anderson``) mixes the states behind the
front's verdict only (positions advance + 1 ..), with the triangular least squares of
acceleration.py over the window: the accepted states keep their image, so tol = 0
stays exact, and each row's history moves with its state when the window moves.

:class:`Wavefront` runs the schedule on any linear-algebra "problem" (the sampler's
score and noise, or the exact per-mode coefficients of linear_analysis).

Why not engine.BlockSweep: a window-wide integrating factor G_m = prod_{j<m} alpha_j
would let a plain Exscan SUM replace the affine op, but G must be invertible and the
ou part's alpha = 2 - e^{e} vanishes at a step of ln 2 (and G spans e^{+-T} over the
trajectory), while the affine composition divides by nothing; the engine's window
also has a single start and no entry, retirement or corrector stop. Shared with the
engine: its row plan for the Alltoallv (engine.row_plan) and its rule that a slice
is scored only while it can change. Accepted slices are never scored again; every
other slice of the window is scored once a round, its input having been rebuilt in
the last one. An input the rebuild left bitwise unchanged is not detected (that would
need each h_j kept and moved with its row); outside the accepted prefix it takes an
exact fixed point. ``evaluations`` counts the slices scored, all ranks together.
"""
from __future__ import annotations

import numpy as np

from ..parallel import balanced_range
from ..process import step_coefficients, step_noise_scale
from .engine import row_plan

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
    """What defines a run between rounds (what a checkpoint stores, window gathered).

    front: global index of the window's first state (accepted); rows: the window's
    slices front .. front + rows - 1, so its states are the positions 0 .. rows
    (Y_front .. Y_front+rows); states: the positions this rank holds, lo .. hi for its
    slices [lo, hi) (:meth:`Wavefront.held`), or the whole window (rows + 1 states,
    as a checkpoint holds it, taken apart by :meth:`Wavefront.run`);
    front_sweeps: rounds since the front entered its block; rounds, evaluations,
    residual: the counters; fresh_from: positions past it entered the window since the
    last round; mixing: Anderson's counters (WindowMixer.counters), None without it.
    """

    def __init__(self, front, states, front_sweeps=0, rounds=0, evaluations=0, residual=0.0,
                 rows=None, fresh_from=0, mixing=None):
        self.front = int(front)
        self.states = states
        self.rows = len(states) - 1 if rows is None else int(rows)
        self.front_sweeps = int(front_sweeps)
        self.rounds = int(rounds)
        self.evaluations = int(evaluations)
        self.residual = float(residual)
        self.noise = None           # xi of the held slices (noisy paths)
        # Anderson's rows for slices lo .. hi - 1 (positions lo + 1 .. hi), or the whole
        # window's (rows of them, as a checkpoint holds it)
        self.history = None
        self.fresh_from = int(fresh_from)
        self.mixing = mixing

    def counters(self) -> dict:
        """The scalars of the state (the window attribute of a checkpoint)."""
        counters = {"front": self.front, "front_sweeps": self.front_sweeps,
                    "rounds": self.rounds, "evaluations": self.evaluations,
                    "residual": self.residual, "fresh_from": self.fresh_from}
        if self.mixing is not None:
            counters["mixing"] = dict(self.mixing)
        return counters


class Wavefront:
    """The schedule on a problem.

    problem.score(rows, slices)     -> s at rows (J, ...) of the given global slices;
    problem.increments(slices)      -> xi of those slices (J, ...), float64;
    problem.residual(diff)          -> (J,): max over samples of |diff|^2 / d per row;
    problem.corrects                -> whether there is a corrector at block ends;
    problem.correct(block, state)   -> (corrected state, rounds, evaluations).

    ``mixer``: an acceleration.WindowMixer (Anderson) or None.
    """

    def __init__(self, problem, trajectory: Trajectory, comm, sweeps: int, tol: float,
                 active_blocks: int = 0, initial_guess: str = "constant", on_round=None,
                 verdicts=None, mixer=None):
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
        self.mixer = mixer
        self.noisy = bool(trajectory.b.any())

    # -- ownership ----------------------------------------------------------------------
    def held(self, rows: int, rank: int | None = None) -> tuple:
        """[lo, hi): the window slices of a rank (this one by default); it holds the
        window's states at positions lo .. hi (hi + 1 - lo of them)."""
        return balanced_range(rows, self.comm.size, self.comm.rank if rank is None else rank)

    def _draw(self, st: WavefrontState):
        """The increments of the held slices after those already held (the rows that
        arrived with the window): drawn once, by the slice's first owner."""
        if not self.noisy:
            return
        lo, hi = self.held(st.rows)
        start = lo + (0 if st.noise is None else len(st.noise))
        fresh = self.problem.increments(np.arange(st.front + start, st.front + hi)) \
            if hi > start else None
        if st.noise is None or len(st.noise) == 0:
            st.noise = fresh if fresh is not None else np.empty((0,) + st.states.shape[1:])
        elif fresh is not None:
            st.noise = np.concatenate([st.noise, fresh])

    def _take_apart(self, st: WavefrontState) -> WavefrontState:
        """This rank's part of a whole window (a resumed checkpoint), and the mixer's
        counters as they were."""
        lo, hi = self.held(st.rows)
        if len(st.states) == st.rows + 1 and hi + 1 - lo != len(st.states):
            st.states = np.ascontiguousarray(st.states[lo:hi + 1])
        if self.noisy and st.noise is None:
            self._draw(st)
        if self.mixer is not None:
            if st.history is None or st.mixing is None:
                # fresh rows would mix otherwise than the run that wrote the window
                raise ValueError("a resumed window needs Anderson's history and counters")
            if len(st.history) == st.rows and hi - lo != st.rows:
                st.history = np.ascontiguousarray(st.history[lo:hi])
            self.mixer.restore(st.mixing)
        return st

    def _rebalance(self, st: WavefrontState, image, advance: int, new_front: int,
                   corrected=None) -> WavefrontState:
        """Move the window ``advance`` positions on, to the blocks in flight from
        ``new_front``, and re-split it over the ranks (one Alltoallv each for the
        states, the increments and Anderson's history); the slices that entered are
        initialised and their increments drawn by their new owners.

        image: the states this rank rebuilt this round (positions lo .. hi, the first
        one only authoritative on rank 0), mixed where Anderson mixes.
        """
        comm, rows, rank = self.comm, st.rows, self.comm.rank
        new_rows = self.traj.window_end(new_front, self.active) - new_front \
            if new_front < self.traj.total else 0
        old = [self.held(rows, r) for r in range(comm.size)]
        new = [self.held(new_rows, r) for r in range(comm.size)]
        lo, hi = new[rank]
        # Each position of the old window is sent by the rank that rebuilt it (rank 0
        # also holds the front); a rank wanting positions past the old end gets it.
        held = [(0 if r == 0 else a + 1, b + 1) for r, (a, b) in enumerate(old)]
        wanted = [(min(a + advance, rows), min(b + advance, rows) + 1) for a, b in new]
        states = np.empty((hi + 1 - lo,) + image.shape[1:])
        got = comm.move_rows(image if rank == 0 else image[1:], states,
                             row_plan(held, wanted, rank))
        states[got:] = states[got - 1]          # the constant guess: the old end state
        out = WavefrontState(new_front, states, st.front_sweeps, st.rounds, st.evaluations,
                             st.residual, rows=new_rows)
        out.fresh_from = rows - advance
        if self.mixer is not None:
            out.mixing = self.mixer.counters()
        if self.noisy:
            out.noise = np.empty((hi - lo,) + st.noise.shape[1:])
            got = comm.move_rows(st.noise, out.noise, row_plan(
                old, [(min(a + advance, rows), min(b + advance, rows)) for a, b in new], rank))
            out.noise = out.noise[:got]
            self._draw(out)
        if self.mixer is not None:
            out.history = np.zeros((hi - lo,) + st.history.shape[1:])
            comm.move_rows(st.history, out.history, row_plan(
                [(a + 1, b + 1) for a, b in old],
                [(min(a + 1 + advance, rows + 1), min(b + advance, rows) + 1) for a, b in new],
                rank))
        if self.initial_guess == "noise" and self.noisy and new_rows > out.fresh_from:
            self._noise_guess(out)
        if corrected is not None and lo == 0:
            states[0] = corrected
        return out

    def _noise_guess(self, st: WavefrontState):
        """The slices past ``fresh_from`` start from the score-free trajectory from the
        old end state: the step with the lagged part's score term left out (s = -kappa
        Y), one affine scan over the ranks that hold them."""
        lo, hi = self.held(st.rows)
        first = max(lo, st.fresh_from)
        if first >= hi:
            known, slices = None, np.arange(0)
        else:
            known = st.states[first - lo] if lo <= st.fresh_from else None
            slices = np.arange(first, hi)
        h = self.traj.b[st.front + slices].reshape((-1,) + (1,) * (st.states.ndim - 1)) \
            * st.noise[slices - lo]
        built = self._scan(self.traj.alpha[st.front + slices], h, known, st.states.shape[1:])
        if hi > st.fresh_from:
            st.states[first - lo:] = built

    # -- one round --------------------------------------------------------------------
    def _scan(self, alpha, h, known, row_shape) -> np.ndarray:
        """States after the maps z -> alpha_j z + h_j of this rank's slices, chained
        over the ranks: (n + 1, ...), row 0 this rank's input. ``known``: the input
        where this rank knows it (rank 0: the front), which cuts the segmented scan
        there; the other ranks get theirs from the Exscan. h is overwritten."""
        n = len(alpha)
        shape = (-1,) + (1,) * len(row_shape)
        if n:
            cumulative = np.cumprod(alpha)
            factors = cumulative.reshape(shape)
            for i in range(1, n):           # local inclusive scan from the identity map
                h[i] += alpha[i] * h[i - 1]
        out = np.empty((n + 1,) + tuple(row_shape))
        if known is not None:
            out[0] = known
            if n:
                out[1:] = factors * known + h
            send = (0.0, out[-1])
        else:
            send = (float(cumulative[-1]), h[-1]) if n else (1.0, np.zeros(row_shape))
        _, offset = self.comm.exscan_affine(*send)
        if known is None:
            out[0] = offset                 # a lower rank's cut: the factor is 0
            if n:
                out[1:] = factors * offset + h
        return out

    def _lagged(self, x, idx, noise):
        """h_j = c_j (s(Y_j) + kappa Y_j) + b_j xi_j for this rank's slices."""
        traj = self.traj
        shape = (-1,) + (1,) * (x.ndim - 1)
        h = self.problem.score(x, idx)
        h *= traj.c[idx].reshape(shape)
        if traj.kappa:
            h += (traj.kappa * traj.c[idx]).reshape(shape) * x
        if self.noisy:
            h += traj.b[idx].reshape(shape) * noise
        return h

    def start(self, y0) -> WavefrontState:
        y = np.asarray(y0, dtype=np.float64)[None]
        st = WavefrontState(0, y, rows=0)
        if self.noisy:
            st.noise = np.empty((0,) + y.shape[1:])
        if self.mixer is not None:
            st.history = self.mixer.empty_history(0, y.shape[1:])
        return self._rebalance(st, y, 0, 0)

    def round(self, st: WavefrontState) -> WavefrontState:
        traj, comm = self.traj, self.comm
        front, rows = st.front, st.rows
        lo, hi = self.held(rows)
        idx = np.arange(front + lo, front + hi)
        x = st.states
        h = self._lagged(x[:hi - lo], idx, st.noise) if hi > lo else None
        image = self._scan(traj.alpha[idx], h, x[0] if comm.rank == 0 else None, x.shape[1:])
        residual = (self.problem.residual(image[1:] - x[1:]) / traj.scale[idx] if hi > lo
                    else np.empty(0))
        failing = np.flatnonzero(residual > self.tol**2)
        first_local = lo + 1 + int(failing[0]) if failing.size else rows + 1
        first_fail = int(self.verdicts.allreduce_min(float(first_local)))
        advance = min(first_fail, rows)
        accepted = residual[:max(0, min(first_fail - 1, rows) - lo)]
        accepted_max = self.verdicts.allreduce_max(float(accepted.max()) if accepted.size else 0.0)

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
                    front_block, self._position(image, advance, rows))
                rounds += extra_rounds
                evaluations += extra_evals
        if self.mixer is not None and advance < rows:
            self._mix(st, x, image, advance)
        new_front = front + advance
        if int(traj.block_of[min(new_front, traj.total - 1)]) != front_block or new_front == traj.total:
            front_sweeps = 0
        st.front_sweeps, st.rounds, st.evaluations = front_sweeps, rounds, evaluations
        st.residual = max(st.residual, accepted_max)
        out = self._rebalance(st, image, advance, new_front, corrected)
        if self.on_round is not None:
            self.on_round(out, rows, advance)
        return out

    def _mix(self, st, x, image, advance: int):
        """Anderson on the positions the front left behind (advance + 1 ..): the
        accepted ones keep their image, so tol 0 stays exact."""
        lo, hi = self.held(st.rows)
        first = min(max(advance - lo, 0), hi - lo)            # first mixed row past lo
        positions = np.arange(lo + 1 + first, hi + 1)
        mixed = self.mixer.mix(x[1 + first:], image[1 + first:], st.history[first:],
                               positions > st.fresh_from)
        image[1 + first:] = mixed

    def _position(self, image, position: int, rows: int):
        """The state at a window position, on every rank (from the rank that rebuilt it)."""
        owner = next(r for r in range(self.comm.size)
                     if position <= self.held(rows, r)[1])
        lo, _ = self.held(rows)
        buffer = image[position - lo].copy() if self.comm.rank == owner else \
            np.empty(image.shape[1:])
        return self.comm.bcast_array(buffer, root=owner)

    def run(self, y0=None, state: WavefrontState | None = None, on_state=None):
        """Rounds until the front reaches the trajectory's end: the final state, whose
        states[0] is the end state on every rank."""
        if self.mixer is not None:
            self.mixer.reset()
        st = self._take_apart(state) if state is not None else self.start(y0)
        while st.front < self.traj.total:
            st = self.round(st)
            if on_state is not None:
                on_state(st)
        return st


def whole_window(comm, st: WavefrontState):
    """The whole window's states (rows + 1, ...) on rank 0 of ``comm`` (the time
    communicator), None elsewhere: what a checkpoint stores. Collective."""
    local = st.states if comm.rank == 0 else st.states[1:]
    return comm.gather_rows(np.ascontiguousarray(local), root=0)


def whole_history(comm, st: WavefrontState):
    """Anderson's history rows of the whole window, (rows, 2 + 2m, ...), on rank 0 of
    ``comm``, None elsewhere (and None on every rank without mixing). Collective."""
    if st.history is None:
        return None
    return comm.gather_rows(st.history, root=0)


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


def window_arrays(config, grid, time_ranks: int, time_rank: int) -> int:
    """Float64 states' worth of memory a time rank needs for its part of the widest
    window: its states, their image and the copy a rebalance receives, the lagged
    increments, the noise held and received; Anderson's history rows, held and
    received; on time rank 0 with --checkpoint the whole window gathered, with its
    history rows."""
    width = window_bounds(config, grid)[2] - 1
    part = -(-width // time_ranks) + 1
    history = 2 * config.anderson_depth + 2 if config.accelerate == "anderson" else 0
    arrays = 6 * part + 2 * history * part
    if config.checkpoint and time_rank == 0:
        arrays += width + 1 + history * width
    return arrays


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
