"""The sweep engine: one distributed Picard sweep for every parallel sampler.

PIADM's block sweeps (piadm.py), the Langevin corrector's sweeps (corrector.py) and
ParaDiGMS' sliding window (paradigms.py) all iterate the same fixed-point map on a
sequence of slices j = 0 .. L-1 with states Y_0 .. Y_L:

    Y_m = G_m ( G_w^{-1} Y_w + sum_{w <= j < m} g_j ),
    g_j = weight_j s(Y_j) + fixed_j [+ linear_j Y_j],

where Y_w is the start of the window [w, w + size) being swept (w = 0 for a block),
G_m the integrating factor (e^{tau_m} for PIADM, the 2 x 2 e^{A tau_m} for the
corrector's (X, V) pairs, 1 for ParaDiGMS' additive form), weight_j the weight of the
score, fixed_j the part of g_j that no sweep changes (the noise) and linear_j an
optional lagged linear term (ParaDiGMS' additive form: the ring only). A state has
``components`` parts (1; 2 for the corrector's (X, V)) of shape (S, d); the score is
evaluated at component 0.

One :meth:`BlockSweep.sweep`, for the window's slices spread over the ranks of the
time communicator (rank r owns the contiguous slices [lo, hi), balanced):

    scores of the owned, not yet frozen slices (one batched model call)
    -> g -> local inclusive prefix sum (continuing the frozen prefix's running sum)
    -> Exscan of the local totals (rank 0 adds the start, so no rank needs Y_w but
       rank 0, which holds it as its first state)
    -> rebuild of the owned states Y_m = G_m (base + prefix)
    -> normalised residual r_m = max over samples |Y_m^new - Y_m^old|^2 / scale_m
    -> one verdict reduction: the largest r_m and the first failing m, over the
       verdict communicator (every sample group, so that all groups sweep alike).

No wasted evaluations (the *front* F): slice j's score is evaluated only while it can
change. After k sweeps from a fixed start, Y_0 .. Y_k are exact, so slices j < k are
frozen; with a tolerance, a slice whose state and every earlier state moved by at most
tol (r <= tol^2) in the last sweep is frozen too (ParaDiGMS' window rule, applied
inside a block). Frozen slices keep their increments g_j and their part of the prefix
sum; the states up to Y_F no longer move and are not rebuilt. The window is done when
every slice is frozen (:attr:`BlockSweep.done`).

ParaDiGMS' sliding window is the same sweep on a ring (:class:`RingWindow`): slice j
lives at ring position j mod p on one rank for as long as the window holds it, the
runs of a rank's positions get their bases from one cyclic Exscan, and nothing but
those totals, the verdict and the window's end state goes between ranks.

Arrays: every array of a state's size lives on the engine's :class:`~hpc_picard.
arrays.Backend` (numpy, torch or cupy), allocated once per shape and reused from block
to block. States are in the run's dtype; increments, their prefix sums and the start
are float64 (sums of many small increments), residuals are accumulated in float64.
The arithmetic of a sweep is memory-bound, so it is fused by cache blocking: rows in
order, on the host in blocks of samples, each row's increment, prefix sum, state and
move formed while the block is in cache (:meth:`BlockSweep._sweep_rows`; without
Anderson mixing the states are updated in place). Time rank 0, whose start is known,
stores no prefix sums at all: it rebuilds each row in the same pass and sends its last
running sum to the Exscan (:meth:`BlockSweep._sweep_running`); so do the runs of
ParaDiGMS' ring whose base is known. On numpy arrays with one component and no lagged
term the same arithmetic runs as compiled kernels where numba is installed
(hpc_picard/kernels.py), with the same states bit for bit. docs/design.md has the
measurements.

Usage (one block of PIADM, see piadm.py for the whole thing)::

    engine = BlockSweep(comm, verdicts, backend, dtype, sample_shape=(S, d))
    lo, hi = engine.assign(num_slices)                  # this rank's slices
    engine.start(y0, growth, weight, scale, fixed=noise_rows)
    while not engine.done and engine.sweeps < K:
        x, slices = engine.pending()                    # states to score, their indices
        engine.sweep(score(x, slices))                  # -> engine.residual, engine.front
    y_end = engine.end()                                # Y_L, on every rank
"""
from __future__ import annotations

import numpy as np

from .. import kernels
from ..parallel import balanced_range


def exact_sweeps_evaluations(slices: int, sweeps: int) -> tuple:
    """(sweeps made, score evaluations per sample) of at most ``sweeps`` sweeps over
    ``slices`` slices when only exact slices freeze (tol = 0): sweep k scores slices
    k-1 .. M-1, and the window is done after M sweeps."""
    made = min(sweeps, slices)
    return made, made * slices - made * (made - 1) // 2


class BlockSweep:
    """Distributed Picard sweeps over a window of slices; owns the state arrays.

    comm:       the time communicator (ranks sharing the slices);
    verdicts:   the communicator the convergence verdicts reduce over (the time
                communicator, or every rank when sample groups must agree);
    backend:    an :class:`hpc_picard.arrays.Backend`;
    dtype:      the states' dtype (float32 or float64);
    sample_shape: (S, d), the shape of one component of one state;
    components: parts of a state (2 for the corrector's (X, V)).

    After :meth:`start`: :attr:`states` row i is Y at window position lo + i,
    i = 0 .. owned, shape (owned + 1, C, S, d); ``front`` is the first slice (window
    position) not frozen; ``residual`` the last sweep's max r_m over every rank;
    ``first_failing`` the first position with r_m > tol^2 (size + 1: none);
    ``sweeps`` the sweeps done; ``evaluations`` the score evaluations per sample that
    the sweeps made, all ranks together.
    """

    def __init__(self, comm, verdicts, backend, dtype, sample_shape, components: int = 1):
        self.comm = comm
        self.verdicts = verdicts
        self.backend = backend
        self.dtype = np.dtype(dtype)
        self.sample_shape = tuple(int(n) for n in sample_shape)
        self.components = int(components)
        self._capacity = -1
        self.size = self.owned = self.lo = self.hi = 0

    # -- set-up ------------------------------------------------------------------------
    def assign(self, size: int) -> tuple:
        """Spread a window of ``size`` slices over the ranks; (lo, hi) of this rank's."""
        self.size = int(size)
        self.ranges = [balanced_range(self.size, self.comm.size, r) for r in range(self.comm.size)]
        self.lo, self.hi = self.ranges[self.comm.rank]
        self.owned = self.hi - self.lo
        self._allocate(self.owned)
        return self.lo, self.hi

    def _allocate(self, owned: int):
        """The work arrays, kept while they are large enough: fresh multi-megabyte
        arrays every block cost more in page faults than the arithmetic they hold."""
        if owned <= self._capacity:
            return
        be, rows = self.backend, owned + 1
        row = (self.components,) + self.sample_shape
        self._capacity = owned
        self._states = [be.empty((rows,) + row, self.dtype) for _ in range(2)]
        # g, then its prefix sums: not stored by time rank 0 with one component
        # (_sweep_running)
        stored = self.comm.rank > 0 or self.components > 1
        self._cum = be.empty((rows,) + row, np.float64) if stored else None
        self._scores = be.empty((rows,) + self.sample_shape, self.dtype)
        # allocated when first needed: the fixed increments (SDE noise)
        self._fixed = []
        # per row and sample: the squared move of the state, summed over d
        self._moved = be.empty((rows, self.sample_shape[0]), np.float64)
        # the sample blocks a sweep works on row by row (arrays.Backend.block_numbers)
        samples, rest = self.sample_shape[0], int(np.prod(row[2:], dtype=np.int64))
        per_block = be.block_numbers // (self.components * rest) if be.block_numbers else samples
        width = min(samples, max(1, per_block))
        self._chunks = [slice(a, min(a + width, samples)) for a in range(0, samples, width)]
        self._width = width
        self._slots = np.zeros(rows, dtype=np.int64)     # kernels.accumulate: one buffer
        # one block of work rows: (C + 2) float64 (base + prefix, the 2 x 2 growth's
        # sums) and the state differences
        self._work = be.empty((self.components + 2, width) + row[2:], np.float64)
        self._diff = be.empty((width,) + row[2:], self.dtype)
        self._fresh = be.empty((self.components, width) + row[2:], self.dtype)
        self._base = be.empty(row, np.float64)
        self._zero = be.zeros(row, np.float64)
        self._received = be.empty(row, np.float64)
        self._total = be.empty(row, np.float64)       # rank 0's running sum at its end
        self._end = be.empty(row, self.dtype)

    def start(self, y0, growth, weight, scale, fixed=None, tol: float = 0.0,
              freeze: bool = True, offset: int = 0, describe=None):
        """Begin sweeping the window [offset, offset + size) from the constant guess Y_w.

        y0:     the start state Y_w, (C, S, d), or (S, d) when C = 1, on every rank;
        growth: G_m at every position of the whole sequence, host (L + 1,) or (L + 1, C, C);
        weight: the score's weight per slice, (L,) or (L, C);
        scale:  the residual normaliser of position j + 1, per slice j, (L,);
        fixed:  this rank's rows fixed_j for its owned slices, (owned, [C,] S, d), host
                or backend array, or a function fixed(out) that writes them into out, a
                host float64 array of that shape (the engine's own rows on a host
                backend: no copy); None: zero;
        tol:    the residual tolerance (tol^2 bounds r_m); 0: only exact slices freeze;
        freeze: False keeps slices live however little they move (only exact ones
                freeze: Anderson mixing needs every row);
        describe: describe(position) -> str naming a window position in errors.
        """
        C = self.components
        self.offset = int(offset)
        self.tol_sq = float(tol) ** 2
        self.freeze_tolerance = bool(freeze) and tol > 0
        self.describe = describe or (lambda position: f"window position {position}")
        # host coefficients, passed to the backend one scalar per row: Python floats
        # (numpy's float64 scalars cost numpy a third more per call on a 1 MiB block)
        growth = np.asarray(growth, dtype=np.float64)
        self._growth = growth.reshape(len(growth), C, C).tolist()
        # and the same as arrays, for the compiled kernels (C = 1)
        self._growth_array = growth.reshape(-1)
        self._weight_array = np.asarray(weight, dtype=np.float64).reshape(-1)
        self._weight = self._weight_array.reshape(-1, C).tolist()
        self._scale = np.asarray(scale, dtype=np.float64)
        rows = self.owned + 1
        self.current = 0
        self._states[0][:rows] = self._as_row(y0)
        # The other buffer is written row by row as rows are rebuilt or freeze; only
        # the first row (rank 0's Y_w, never rebuilt) must be there from the start.
        self._states[1][0] = self._states[0][0]
        self._other_stale = False
        self._fixed_rows = None
        self._carried_base = False
        if fixed is not None:
            self._fixed_rows = rows = self._fixed_buffer(0)
            if not callable(fixed):
                rows[:self.owned] = self._as_rows(fixed)
            else:
                host = (self.backend.host_view(rows[:self.owned]) if self.backend.is_host()
                        else np.empty((self.owned,) + rows.shape[1:], dtype=np.float64))
                fixed(host if self.components > 1 else host[:, 0])
                if not self.backend.is_host():
                    rows[:self.owned] = self._as_rows(host)
        self.evaluations = 0
        # Time rank 0, one component: its start is known, so its prefix sums are not
        # stored (_sweep_running)
        self._running = self.comm.rank == 0 and C == 1
        if self._running:
            self._start_in_frame(out=self._base)
        self._reset_window()

    def _fixed_buffer(self, index: int):
        while len(self._fixed) <= index:
            self._fixed.append(self.backend.empty(
                (self._capacity + 1, self.components) + self.sample_shape, np.float64))
        return self._fixed[index]

    def _reset_window(self):
        # The prefix sums need no clearing: the first sweep (front 0) writes every row.
        self.front = 0
        self.sweeps = 0
        self.residual = np.inf
        self.first_failing = 0
        self._r_positions = np.empty(0, dtype=np.int64)
        self._r_values = np.empty(0)

    def _as_row(self, y):
        y = y if _is_backend_array(self.backend, y) else self.backend.asarray(np.asarray(y))
        return y.reshape((self.components,) + self.sample_shape)

    def _as_rows(self, rows):
        rows = rows if _is_backend_array(self.backend, rows) else self.backend.asarray(
            np.asarray(rows, dtype=np.float64))
        return rows.reshape((-1, self.components) + self.sample_shape)

    # -- views ---------------------------------------------------------------------------
    @property
    def states(self):
        """Y at window positions lo .. hi: (owned + 1, C, S, d), the current iterate."""
        return self._states[self.current][:self.owned + 1]

    @property
    def done(self) -> bool:
        """Every slice of the window is frozen: its end state moves no more."""
        return self.front >= self.size

    def _live_rows(self) -> tuple:
        """(first owned row whose slice is scored, first row whose state is rebuilt)."""
        scored = min(max(self.front - self.lo, 0), self.owned)
        rebuilt = min(max(self.front + 1 - self.lo, 0), self.owned + 1)
        return scored, rebuilt

    def pending(self) -> tuple:
        """(states to score: (J, S, d) view of component 0; the window positions of
        their slices, a range) for the next sweep. J is 0 on ranks whose slices are
        all frozen (or that own none): they still take part in the sweep."""
        first, _ = self._live_rows()
        return self._states[self.current][first:self.owned, 0], range(self.lo + first, self.hi)

    def score_buffer(self, rows: int):
        """A reusable (rows, S, d) array in the state dtype for one sweep's scores."""
        return self._scores[:rows]

    def local_residuals(self) -> tuple:
        """(window positions, r_m) this rank measured in the last sweep (host arrays)."""
        return self._r_positions, self._r_values

    # -- the sweep -----------------------------------------------------------------------
    def initialize_from_fixed(self):
        """Replace the constant guess by the trajectory of the fixed part of g alone
        (the score set to zero: PIADM's "noise" initial guess); costs no evaluation."""
        self._sweep_rows(None, measure=False, target=self.current)
        self._other_stale = True

    def sweep(self, scores, mixer=None):
        """One Picard sweep with the scores at :meth:`pending`'s states, (J, S, d).

        Updates the states, ``residual``, ``first_failing``, ``front`` and the
        counters. Collective over the verdict communicator. ``mixer`` (Anderson, C = 1
        and host arrays only) mixes the new iterate unless the window converged.
        """
        be, n = self.backend, self.owned
        first, rebuilt = self._live_rows()
        if mixer is None:
            # In place: each row's move is measured before it is overwritten, and a
            # sweep writes the states once instead of a second buffer (memory traffic).
            self._sweep_rows(scores, measure=True, target=self.current)
            self._other_stale = True
        else:
            # Anderson mixes the iterate and its image: the image goes to the other
            # buffer, whose frozen rows must then hold the current states too.
            new, old = self._states[1 - self.current], self._states[self.current]
            if self._other_stale:
                be.copy(old[:rebuilt], new[:rebuilt])
                self._other_stale = False
            self._sweep_rows(scores, measure=True, target=1 - self.current)
        self.evaluations += self.size - self.front
        self.sweeps += 1
        self._verdict(max(rebuilt, 1))
        if self._running and not self.done:
            self._freeze_into_base(scores, first)
        if mixer is None:
            return
        if not (self.tol_sq > 0 and self.residual <= self.tol_sq):
            image, iterate = be.host_view(new[:n, 0]), be.host_view(old[:n, 0])
            mixed = mixer.mix(iterate, image)
            new[:n, 0] = mixed if be.is_host() and self.backend.name == "numpy" else be.asarray(mixed)
        # Rows the new front froze stop being rebuilt: both buffers must agree on them.
        _, still = self._live_rows()
        if still > rebuilt:
            be.copy(new[rebuilt:still], old[rebuilt:still])
        self.current = 1 - self.current

    def _sweep_rows(self, scores, measure: bool, target: int):
        """The sweep's arithmetic: increments and their local prefix sums, the Exscan,
        the rebuild of the states into state buffer ``target`` and (``measure``) their
        squared moves. Time rank 0 with one component: :meth:`_sweep_running`.

        Row by row and, on the host, in blocks of samples (``_chunks``): each row's
        increments, prefix sum, state and move are formed while the row is in cache, so
        a sweep streams each large array through memory once (scores and fixed rows
        read, prefix sums written, states read and written) instead of once per
        operation. One rank rebuilds each row right after its prefix sum (its base, the
        start, is known); with several ranks the rebuild waits for the Exscan.
        ``scores`` None: g is the fixed part alone.
        """
        if self._running:
            return self._sweep_running(scores, measure, target)
        be, n = self.backend, self.owned
        first, rebuilt = self._live_rows()
        alone = self.comm.size == 1
        if first < n:
            if self.comm.rank == 0 and first == 0 and not self._carried_base:
                # the prefix sums start from G_w^{-1} Y_w: within a window it never
                # changes, so the prefix sums carry it and rank 0's rebuild is a multiply
                self._start_in_frame(out=self._base)
            # compiled: one component, so never rank 0 (_sweep_running) nor one rank
            jit = None if scores is None else self._kernels()
            if jit is not None:
                at, fixed = self.offset + self.lo, self._fixed_rows
                before = self._cum[first - 1] if first else None
                # the fixed rows as one of the ring's buffers: (1, rows, S, d), from row first
                rows = self._zero[None] if fixed is None else fixed[:, 0][None]
                jit.accumulate(scores, self._weight_array[at + first:at + n], rows,
                               self._slots[:n - first], first, fixed is not None,
                               *self._row_or_dummy(before), self._cum[first:n, 0], self._width)
            else:
                for chunk in self._chunks:
                    self._accumulate(scores, first, _Block(self, chunk, target),
                                     rebuild=alone, measure=measure)
            if not be.all_finite(self._cum[n - 1]):
                self._raise_non_finite(scores, first)
        if self.comm.size > 1:
            # rank 0 takes part too; its base, the start, stays as it is
            send = self._cum[n - 1] if n else self._zero
            self.comm.exscan_sum_into(send, self._base if self.comm.rank else self._received)
        if alone:
            return
        jit = self._kernels()
        if jit is None:
            for chunk in self._chunks:
                block = _Block(self, chunk, target)
                for m in range(rebuilt, n + 1):
                    self._rebuild_row(m, block, measure)
            return
        at, old, new = self.offset + self.lo, self._states[self.current][:, 0], self._states[target][:, 0]
        m = rebuilt
        if m == 0:                      # a first row that is not the start: Y = G base
            jit.rebuild(self._base, *self._row_or_dummy(None), self._growth_array[at:at + 1],
                        old[:1], new[:1], self._moved[:1], self._width)
            m = 1
        if m <= n:
            jit.rebuild(self._cum[m - 1:n, 0], *self._row_or_dummy(self._base),
                        self._growth_array[at + m:at + n + 1], old[m:n + 1], new[m:n + 1],
                        self._moved[m:n + 1], self._width)

    def _sweep_running(self, scores, measure: bool, target: int):
        """Time rank 0, one component: :meth:`_sweep_rows` without storing the prefix
        sums.

        Rank 0's start is known, so each of its rows is rebuilt as soon as its prefix
        sum is formed, and the prefix sum needs to outlive the row only at the front:
        the sweep keeps a running sum per block of samples, starting from ``_base``
        (G_w^{-1} Y_w plus the increments of the frozen slices, taken in by
        :meth:`_freeze_into_base`): Y_{i+1} = G_{i+1} running_i. A sweep reads the
        scores and the fixed rows and reads and writes the states: no prefix-sum rows
        are written and read back. With several ranks, the last running sum is rank
        0's total for the Exscan, sent once its rows are rebuilt: the other ranks form
        their prefix sums meanwhile, a pass that reads and writes as much, so no rank
        waits longer, and rank 0 makes one pass over its rows instead of two.
        """
        be, n = self.backend, self.owned
        first, _ = self._live_rows()
        at, fixed = self.offset + self.lo, self._fixed_rows
        total = self._total
        jit = self._kernels()
        if first >= n:                  # every slice frozen: the sum at the front
            be.copy(self._base, total)
        elif jit is not None and scores is not None:
            # the fixed rows as one of the ring's buffers: (1, rows, S, d), from row first
            rows = self._zero[None] if fixed is None else fixed[:, 0][None]
            old, new = self._states[self.current][:, 0], self._states[target][:, 0]
            jit.sweep_running(scores, self._weight_array[at + first:at + n], rows,
                              self._slots[:n - first], first, fixed is not None,
                              self._base[0], self._growth_array[at + first:at + n + 1],
                              old[first:n + 1], new[first:n + 1], self._moved[first:n + 1],
                              False, True, total[0], self._width)
        else:
            for chunk in self._chunks:
                v = _Block(self, chunk, target)
                running, term = v.work[0:1], v.work[1]
                be.copy(v.base, running)
                for i in range(first, n):
                    if scores is not None:
                        self._take_in(running[0], term, scores[i - first, chunk], i, chunk)
                    elif fixed is not None:     # g is the fixed part alone
                        be.add(running[0], fixed[i, 0, chunk], out=running[0])
                    self._store(i + 1, running, v, measure)
                be.copy(running, total[:, chunk])
        if first < n and not be.all_finite(self._states[target][n]):
            self._raise_non_finite(scores, first)
        if self.comm.size > 1:
            self.comm.exscan_sum_into(total, self._received)

    def _kernels(self):
        """The compiled kernels where they apply: one component (_host_kernels)."""
        return _host_kernels(self.backend, self.components == 1)

    def _row_or_dummy(self, row):
        """For a kernel: (row (S, d), True) of a row (1, S, d), or a stand-in and False
        for None."""
        if row is None:
            return self._zero[0], False
        return row[0], True

    def _freeze_into_base(self, scores, first: int):
        """Rank 0, after the verdict: the increments of the slices that just froze join
        ``_base``, with the same operations as the sweep's running sum (so the same
        numbers as if it had been stored)."""
        at = self.offset + self.lo
        now, _ = self._live_rows()
        if now <= first:
            return
        fixed, jit = self._fixed_rows, self._kernels()
        if jit is not None:
            rows = (self._zero, False) if fixed is None else (fixed[first:now, 0], True)
            jit.add_increments(scores[:now - first], self._weight_array[at + first:at + now],
                               *rows, self._base[0])
            return
        for chunk in self._chunks:
            running, term = self._base[0, chunk], self._work[1, :chunk.stop - chunk.start]
            for i in range(first, now):
                self._take_in(running, term, scores[i - first, chunk], i, chunk)

    def _take_in(self, running, term, score, i: int, chunk):
        """running += g_i = weight_i score (+ the fixed row i) for the samples ``chunk``,
        through ``term``: rank 0's running sum, as the compiled ``sweep_running`` and
        ``add_increments`` form it."""
        be = self.backend
        be.scale_into(score, self._weight[self.offset + self.lo + i][0], out=term)
        if self._fixed_rows is not None:
            be.add(term, self._fixed_rows[i, 0, chunk], out=term)
        be.add(running, term, out=running)

    def _accumulate(self, scores, first: int, v, rebuild: bool, measure: bool):
        """Rows first .. owned - 1 of g and its prefix sum, for the samples of block
        ``v``; ``rebuild`` (one rank alone; two components, else _sweep_running): rows
        first + 1 .. owned rebuilt too, each right after the prefix sum it needs."""
        be, C, n = self.backend, self.components, self.owned
        cum, at = v.cum, self.offset + self.lo
        fixed = None if self._fixed_rows is None else self._fixed_rows[:, :, v.chunk]
        scores = None if scores is None else scores[:, v.chunk]
        for i in range(first, n):
            row = cum[i]
            if scores is None:
                be.copy(fixed[i], row)
            else:
                weight = self._weight[at + i]
                for a in range(C):
                    be.scale_into(scores[i - first], weight[a], out=row[a])
                if fixed is not None:
                    be.add(row, fixed[i], out=row)
            if i > 0:                   # continue the running sum
                be.add(row, cum[i - 1], out=row)
            elif self.comm.rank == 0:   # from the start, in the integrating factor's frame
                be.add(row, v.base, out=row)
            if rebuild and i > first:
                self._rebuild_row(i, v, measure)
        if rebuild:
            self._rebuild_row(n, v, measure)

    def _rebuild_row(self, m: int, v, measure: bool):
        """Y_m = G_m (base + prefix_{m-1}) for this rank's row m and the samples of
        block ``v``, into its target state buffer; ``measure``: its squared move from
        the current state, summed over d, into the residual rows."""
        C = self.components
        if m == 0:
            u = v.base
        elif self.comm.rank == 0:       # the start is in the prefix sums already
            u = v.cum[m - 1]
        else:
            u = v.work[:C]
            self.backend.add(v.cum[m - 1], v.base, out=u)
        self._store(m, u, v, measure)

    def _store(self, m: int, u, v, measure: bool):
        """Y_m = G_m u, u (C, block samples, ...) in float64, for row m and the samples
        of block ``v``, into its target state buffer; ``measure``: its squared move
        from the current state, summed over d, into the residual rows."""
        be, C = self.backend, self.components
        out = v.target[m]
        # measured in place: formed aside, compared with the old state, then stored
        new = v.fresh if measure and v.in_place else out
        g = self._growth[self.offset + self.lo + m]
        if C == 1:
            be.multiply(u[0], g[0][0], out=new[0])
        else:
            # (C, C) times (C, S, d): accumulated in float64, then stored
            total, term = v.work[C], v.work[C + 1]
            for a in range(C):
                be.multiply(u[0], g[a][0], out=total)
                for b in range(1, C):
                    be.multiply(u[b], g[a][b], out=term)
                    be.add(total, term, out=total)
                be.copy(total, new[a])
        if measure:
            be.subtract(new[0], v.old[m, 0], out=v.diff)
            be.sum_squares_into(v.diff, out=v.moved[m])
            if new is not out:
                be.copy(new, out)

    def _start_in_frame(self, out):
        """G_w^{-1} Y_w (float64) into out, from rank 0's first state."""
        y = self._states[self.current][0]
        inverse = np.linalg.inv(np.array(self._growth[self.offset]))
        if self.components == 1:
            self.backend.multiply(y, float(inverse[0, 0]), out=out)
            return
        for a in range(self.components):
            self.backend.multiply(y[0], float(inverse[a, 0]), out=out[a])
            for b in range(1, self.components):
                out[a] += float(inverse[a, b]) * y[b]

    def _verdict(self, first_row: int):
        """r_m for this rank's rebuilt positions, then one reduction over the verdict
        communicator: (largest r_m, first failing position)."""
        be, n = self.backend, self.owned
        local_max, local_fail = 0.0, self.size + 1
        positions, r = np.empty(0, dtype=np.int64), np.empty(0)
        if first_row <= n:
            per_row = be.to_host(be.max_last(self._moved[first_row:n + 1]))   # (rows,)
            slices = slice(self.offset + self.lo + first_row - 1, self.offset + self.hi)
            r = per_row / self._scale[slices]
            positions = np.arange(self.lo + first_row, self.hi + 1)
            local_max = float(r.max())
            failing = np.flatnonzero(~(r <= self.tol_sq))
            if failing.size:
                local_fail = int(positions[failing[0]])
        self._r_positions, self._r_values = positions, r
        self.residual, self.first_failing = self.verdicts.sweep_verdict(local_max, local_fail)
        front = max(self.front, self.sweeps)                       # exact after k sweeps
        if self.freeze_tolerance:
            front = max(front, self.first_failing)
        if self.tol_sq > 0 and self.residual <= self.tol_sq:
            front = self.size
        self.front = min(front, self.size)

    def _raise_non_finite(self, scores, first: int):
        from .base import SamplingError
        host = self.backend.to_host(scores).reshape(scores.shape[0], -1)
        bad = np.flatnonzero(~np.isfinite(host).all(axis=1))
        position = self.lo + first + (int(bad[0]) if bad.size else 0)
        raise SamplingError(f"non-finite score in {self.describe(position)} "
                            f"on time rank {self.comm.rank}")

    # -- results and moves -----------------------------------------------------------------
    def end(self):
        """Y at the window's end position, (C, S, d), the same on every rank."""
        last_owner = min(self.comm.size, self.size) - 1
        if self.comm.rank == last_owner:
            self.backend.copy(self.states[-1], self._end)
        return self.comm.bcast_array(self._end, root=last_owner)

    # -- re-splitting a block as its front advances ----------------------------------------
    def unbalanced(self, slack: int = 2) -> bool:
        """Whether the live slices [front, size) are spread so unevenly over the ranks
        that some rank scores ``slack`` or more rows beyond its even share."""
        if self.comm.size == 1 or self.front == 0 or self.done:
            return False
        live = [max(0, hi - max(lo, self.front)) for lo, hi in self.ranges]
        even = -(-(self.size - self.front) // self.comm.size)
        return max(live) - even >= slack

    def drop_frozen(self):
        """Drop the frozen prefix [0, front) and spread the live slices evenly again.

        The front freezes a block's slices from its start, so with a contiguous split
        the first ranks run out of slices to score and wait for the last. The window
        becomes [front, size): its start state is the frozen Y_front, and the prefix
        sum carried into it is the float64 one that rebuilt Y_front (broadcast by the
        rank that held it), not G^{-1} Y_front, so nothing is rounded to the state's
        dtype. States and fixed rows move with one Alltoallv each (the row plan); the
        front's exactness count starts again (the slices after a frozen state are exact
        after as many sweeps again), which keeps the same fronts, evaluations and
        sweeps as the undivided window. Host or device arrays; collective.
        """
        be, advance = self.backend, self.front
        old_ranges, old_size = self.ranges, self.size
        owner = next(r for r, (lo, hi) in enumerate(old_ranges) if lo <= advance - 1 < hi)
        if self.comm.rank == owner and self._running:
            # rank 0's running sum at the front: the frozen slices are in it
            be.copy(self._base, self._received)
        elif self.comm.rank == owner:
            row = self._cum[advance - 1 - self.lo]
            if owner == 0:
                be.copy(row, self._received)
            else:
                be.add(row, self._base, out=self._received)
        carried = self.comm.bcast_array(self._received, root=owner)
        if carried is not self._received:
            be.copy(carried, self._received)
        old_states, old_fixed = self._states[self.current], self._fixed_rows
        self.offset += advance
        self.assign(old_size - advance)
        new_states = self._states[1 - self.current]
        last_owner = min(self.comm.size, old_size) - 1
        held = [(lo, hi + (r == last_owner)) for r, (lo, hi) in enumerate(old_ranges)]
        wanted = [(lo + advance, hi + advance + 1) for lo, hi in self.ranges]
        self.comm.move_rows(old_states, new_states, row_plan(held, wanted, self.comm.rank))
        if old_fixed is not None:
            spare = self._fixed_buffer(1) if old_fixed is self._fixed_buffer(0) else self._fixed[0]
            wanted = [(lo + advance, hi + advance) for lo, hi in self.ranges]
            self.comm.move_rows(old_fixed, spare, row_plan(old_ranges, wanted, self.comm.rank))
            self._fixed_rows = spare
        self.current = 1 - self.current
        self._states[1 - self.current][0] = new_states[0]
        self._other_stale = True
        if self.comm.rank == 0:
            be.copy(self._received, self._base)
        self._carried_base = True
        self._reset_window()


class _Block:
    """Views of a sweep's arrays for one block of samples ``chunk`` (axis 2 of the
    (rows, C, S, ...) arrays), made once per block rather than per row."""

    __slots__ = ("chunk", "cum", "old", "target", "in_place", "base", "work", "diff",
                 "fresh", "moved")

    def __init__(self, engine, chunk, target: int):
        width = chunk.stop - chunk.start
        self.chunk = chunk
        self.cum = None if engine._cum is None else engine._cum[:, :, chunk]
        self.old = engine._states[engine.current][:, :, chunk]
        self.target = engine._states[target][:, :, chunk]
        self.in_place = target == engine.current
        self.base = engine._base[:, chunk]
        self.work = engine._work[:, :width]          # float64: (C + 2, width, ...)
        self.diff = engine._diff[:width]
        self.fresh = engine._fresh[:, :width]
        self.moved = engine._moved[:, chunk]


def row_plan(held, wanted, rank: int) -> tuple:
    """Who sends which rows to whom when positions move between ranks.

    held[r] = [a, b): the positions rank r holds as rows 0.., starting at a;
    wanted[s] = [a, b): the positions rank s needs as its rows 0.., in order.
    Returns (sends, receives) for ``rank``: per peer (first row, row count).
    """
    def overlap(h, w):
        a, b = max(h[0], w[0]), min(h[1], w[1])
        return (a, b - a) if b > a else (h[0], 0)

    sends = []
    for w in wanted:
        a, count = overlap(held[rank], w)
        sends.append((a - held[rank][0], count))
    receives = []
    for h in held:
        a, count = overlap(h, wanted[rank])
        receives.append((a - wanted[rank][0] if count else 0, count))
    return sends, receives


def _host_kernels(backend, applies: bool):
    """The compiled kernels (kernels.py) for an engine on ``backend`` whose sweep they
    can do (``applies``: one component, no lagged term); None where they cannot, or
    there are none: the backend's operations then."""
    return kernels.get() if applies and backend.name == "numpy" else None


def _is_backend_array(backend, array) -> bool:
    if backend.name == "torch":
        return isinstance(array, backend.torch.Tensor)
    return isinstance(array, backend.xp.ndarray)


class RingWindow:
    """ParaDiGMS' sliding window on a ring of positions: slices never change ranks.

    The window [w, w + size) over a trajectory of L slices (size = min(p, L - w)) sits
    on a ring of p = min(window, L) positions: slice j at ring position j mod p, and
    rank r owns the ring positions [lo, hi) (balanced) for the whole run. When the
    window slides, the slices it accepts leave their positions to the slices it takes
    in, on the same rank. A contiguous split of the window would instead hand each
    slice's state and noise from rank to rank as the window passes over it, (P - 1)
    times in its life: on 2 ranks that was a fifth of the wall time (docs/design.md).

    In window order, a rank's positions form one run, except on the rank that holds
    the window's first slice (ring position w mod p; "first" below), whose positions
    wrap: its first run opens the window and its second closes it. One :meth:`sweep`,
    with the scores at :meth:`pending`'s states:

      increments g and their prefix sums, run by run; the opening run's start from
      G_w^{-1} Y_w; on one rank every run is rebuilt as it goes (the closing run
      continues the opening one)
      -> one cyclic Exscan of the runs' totals (Communicator.cyclic_exscan_into): every
         other run's base, in window order, without a subtraction
      -> the runs rebuilt from their bases; residuals; one verdict reduction.

    The window's end state Y_{w + size} is rebuilt by the rank whose run closes the
    window, in an extra row; when the window slides it goes to the ranks the new slices
    land on (they start from it, as in ParaDiGMS), and at the end to every rank.

    Noise (``draw``): a slice's fixed row is drawn once, by the rank that owns its ring
    position. Each rank keeps a second row per position and draws into it, a few rows a
    round, the noise of the slice that will enter there next (slice j + p), most urgent
    first, so that the rows that enter in one round, which mostly belong to one rank,
    do not leave the other ranks waiting while that rank draws them.

    States are updated in place (one state buffer); arrays live on the backend and the
    arithmetic is cache-blocked like :class:`BlockSweep`'s. With the compiled kernels,
    the runs whose base is known (the opening run, and on one rank every run) are
    rebuilt in the pass that sums them, which reads and writes as much as forming their
    prefix sums, so the opening run's total is ready no later; elsewhere every rank
    rebuilds after the scan. Components: 1.
    """

    def __init__(self, comm, verdicts, backend, dtype, sample_shape):
        self.comm = comm
        self.verdicts = verdicts
        self.backend = backend
        self.dtype = np.dtype(dtype)
        self.sample_shape = tuple(int(n) for n in sample_shape)

    # -- set-up --------------------------------------------------------------------------
    def start(self, y0, total: int, window: int, growth, weight, scale, draw, linear=None,
              tol: float = 0.0, describe=None):
        """Open the window [0, min(window, total)) with every state at y0, (S, d).

        growth: G_m at every position 0 .. L, (L + 1,); weight: the score's weight per
        slice, (L,); scale: the residual normaliser of position j + 1, per slice j;
        draw(j, out): writes slice j's fixed row (float64, (S, d), host) into out;
        linear: the coefficient of Y_j in g_j per slice, or None; tol: the residual
        tolerance; describe(slice) -> str names a slice in errors.
        """
        self.total = int(total)
        self.ring = min(int(window), self.total)
        self.ring_ranges = [balanced_range(self.ring, self.comm.size, r)
                            for r in range(self.comm.size)]
        self.lo, self.hi = self.ring_ranges[self.comm.rank]
        self.owned = c = self.hi - self.lo
        self._growth_array = np.asarray(growth, dtype=np.float64)
        self._weight_array = np.asarray(weight, dtype=np.float64)
        self._growth = self._growth_array.tolist()
        self._weight = self._weight_array.tolist()
        self._scale = np.asarray(scale, dtype=np.float64)
        self._linear = None if linear is None else np.asarray(linear, dtype=np.float64).tolist()
        self.tol_sq = float(tol) ** 2
        self._draw = draw
        self.describe = describe or (lambda j: f"slice {j}")
        self._allocate(c)
        self.offset, self.size = 0, self.ring
        self.evaluations = 0
        self.residual, self.first_failing = np.inf, 0
        self._r_positions, self._r_values = np.empty(0, dtype=np.int64), np.empty(0)
        self._occ = np.arange(self.lo, self.hi, dtype=np.int64)
        self._slot = np.zeros(c, dtype=np.int64)        # which fixed buffer is current
        self._ahead = np.full(c, -1, dtype=np.int64)    # slice drawn in the other buffer
        self.drawn = self.drawn_ahead = 0
        y = self._as_state(y0)
        for k in range(c + 1):
            self._states[k] = y
        for k in range(c):
            self._draw_row(int(self._occ[k]), 0, k)
        self._layout()

    def _allocate(self, c: int):
        be, (S, d) = self.backend, self.sample_shape
        self._states = be.empty((c + 1, S, d), self.dtype)        # row c: the window end
        self._scores = be.empty((max(c, 1), S, d), self.dtype)
        self._cum = be.empty((max(c, 1), S, d), np.float64)
        self._fixed = be.empty((2, max(c, 1), S, d), np.float64)
        self._moved = be.empty((c + 1, S), np.float64)
        self._base = be.empty((S, d), np.float64)
        self._received = be.zeros((S, d), np.float64)
        self._zero = be.zeros((S, d), np.float64)
        self._end = be.empty((S, d), self.dtype)
        per_block = be.block_numbers // d if be.block_numbers else S
        width = min(S, max(1, per_block))
        self._chunks = [slice(a, min(a + width, S)) for a in range(0, S, width)]
        self._width = width
        self._work = be.empty((width, d), np.float64)
        self._diff = be.empty((width, d), self.dtype)
        self._fresh = be.empty((width, d), self.dtype)

    def _as_state(self, y):
        if not _is_backend_array(self.backend, y):
            y = self.backend.asarray(np.asarray(y))
        return y.reshape(self.sample_shape)

    def _draw_row(self, j: int, slot: int, k: int):
        """Slice j's fixed row into buffer ``slot``, row k."""
        be, row = self.backend, self._fixed[slot, k]
        if be.is_host():
            self._draw(j, be.host_view(row))
        else:
            host = np.empty(self.sample_shape, dtype=np.float64)
            self._draw(j, host)
            be.copy(be.asarray(host), row)
        self.drawn += 1

    def _owner(self, q: int) -> int:
        """The rank that owns ring position q."""
        for rank, (lo, hi) in enumerate(self.ring_ranges):
            if lo <= q < hi:
                return rank
        raise ValueError(f"ring position {q} outside the ring of {self.ring}")

    def _layout(self):
        """This rank's runs in window order (first row, stop row, first position), the
        rank holding the window's first slice, and the owner of its end state."""
        w, p, size = self.offset, self.ring, self.size
        positions = self._occ - w
        live = positions < size
        runs, k = [], 0
        while k < self.owned:
            if not live[k]:
                k += 1
                continue
            k1 = k + 1
            while k1 < self.owned and live[k1] and positions[k1] == positions[k1 - 1] + 1:
                k1 += 1
            runs.append((k, k1, int(positions[k])))
            k = k1
        self.runs = sorted(runs, key=lambda run: run[2])
        self.first_rank = self._owner(w % p)
        self.end_owner = self._owner((w + size - 1) % p)

    # -- views ---------------------------------------------------------------------------
    def pending(self) -> list:
        """The states to score for the next sweep, in runs of adjacent rows: a list of
        (states (J, S, d), their slices (J,), the score buffer to fill (J, S, d))."""
        spans = []
        for k0, k1, _ in sorted(self.runs):
            if spans and spans[-1][1] == k0:
                spans[-1][1] = k1
            else:
                spans.append([k0, k1])
        return [(self._states[a:b], self._occ[a:b], self._scores[a:b]) for a, b in spans]

    def local_residuals(self) -> tuple:
        """(window positions, r_m) this rank measured in the last sweep (host arrays)."""
        return self._r_positions, self._r_values

    # -- the sweep -----------------------------------------------------------------------
    def sweep(self):
        """One Picard sweep of the whole window with the scores written into
        :meth:`pending`'s buffers; sets ``residual``, ``first_failing`` and the counters.
        Collective over the verdict communicator."""
        be, alone = self.backend, self.comm.size == 1
        # the lead of each run: "start" (opens the window), "follow" (continues the
        # run before it, on one rank) or "scan" (its base comes from the cyclic Exscan)
        leads = ["start" if i0 == 0 else "follow" if alone else "scan" for _, _, i0 in self.runs]
        if self.runs and leads[0] == "start":
            k0 = self.runs[0][0]
            be.multiply(self._states[k0], 1.0 / self._growth[self.offset], out=self._base)
        # compiled kernels (kernels.py) on numpy arrays, exponential form
        jit = _host_kernels(be, self._linear is None)
        if jit is not None:
            self._accumulate_jit(jit, leads)
        else:
            for chunk in self._chunks:
                previous = None
                for run, lead in zip(self.runs, leads):
                    previous = self._accumulate(run, lead, chunk, previous)
        for run in self.runs:
            if not be.all_finite(self._cum[run[1] - 1]):
                self._raise_non_finite(run)
        if not alone:
            # the opening run's total on the first rank, the one run's on the others
            local = self._cum[self.runs[0][1] - 1] if self.runs else self._zero
            self.comm.cyclic_exscan_into(self.first_rank, local, self._received)
        if jit is not None:
            self._rebuild_jit(jit, leads)
        elif not alone:
            for chunk in self._chunks:
                for run, lead in zip(self.runs, leads):
                    self._rebuild_run(run, chunk, folded=lead == "start")
        self.evaluations += self.size
        self._verdict()

    def _accumulate(self, run, lead: str, chunk, previous):
        """g and its prefix sums over one run's rows, for the samples ``chunk``; runs
        whose base is known ("start", "follow") are rebuilt row by row as they go, each
        row once its own increment (which may read its old state) is formed. Returns
        the run's last prefix-sum row (the next run's "previous")."""
        be, k0, k1, i0 = self.backend, *run
        cum = self._cum[:, chunk]
        scores, old = self._scores[:, chunk], self._states[:, chunk]
        rebuild = self.comm.size == 1     # alone, every base is known as it goes
        for k in range(k0, k1):
            j, row = int(self._occ[k]), cum[k]
            be.scale_into(scores[k], self._weight[j], out=row)
            fixed = self._fixed[int(self._slot[k]), k, chunk]
            be.add(row, fixed, out=row)
            if self._linear is not None:
                lagged = self._work[:row.shape[0]]
                be.scale_into(old[k], self._linear[j], out=lagged)
                be.add(row, lagged, out=row)
            before = cum[k - 1] if k > k0 else (
                self._base[chunk] if lead == "start" else previous if lead == "follow" else None)
            if rebuild and (k > k0 or lead == "follow"):
                self._rebuild(k, before, chunk)
            if before is not None:
                be.add(row, before, out=row)
        if rebuild and i0 + k1 - k0 == self.size:
            self._rebuild(self.owned, cum[k1 - 1], chunk)
        return cum[k1 - 1]

    def _accumulate_jit(self, jit, leads):
        """:meth:`_accumulate` for every run and sample at once, compiled. A run whose
        base is known ("start", "follow") is rebuilt in the same pass, with a running
        sum (``sweep_running``: its prefix sums are not stored, only its total, in its last
        prefix-sum row); the others' rows follow in :meth:`_rebuild_jit`."""
        previous = None
        for (k0, k1, _), lead in zip(self.runs, leads):
            weight = self._weight_array[self._occ[k0:k1]]
            if lead == "scan":
                jit.accumulate(self._scores[k0:k1], weight, self._fixed, self._slot[k0:k1],
                               k0, True, self._zero, False, self._cum[k0:k1], self._width)
            else:
                jit.sweep_running(self._scores[k0:k1], weight, self._fixed, self._slot[k0:k1],
                                  k0, True, self._base if lead == "start" else previous,
                                  self._growth_array[self._occ[k0:k1]], self._states[k0:k1],
                                  self._states[k0:k1], self._moved[k0:k1], lead == "follow",
                                  False, self._cum[k1 - 1], self._width)
            previous = self._cum[k1 - 1]

    def _rebuild_jit(self, jit, leads):
        """The rows of the runs whose base comes from the scan, rebuilt, compiled: the
        first from the scan's base, the others from the row before's prefix sum plus
        it; and the window's end, from the total of the run that closes it."""
        states, moved, w = self._states, self._moved, self._width
        end = self._growth_array[self.offset + self.size:self.offset + self.size + 1]
        for (k0, k1, i0), lead in zip(self.runs, leads):
            growth = self._growth_array[self._occ[k0:k1]]
            plus = self._received if lead == "scan" else None
            add = (self._zero if plus is None else plus, plus is not None)
            if lead == "scan":          # the others were rebuilt as they were summed
                jit.rebuild(self._received[None], self._zero, False, growth[:1],
                            states[k0:k0 + 1], states[k0:k0 + 1], moved[k0:k0 + 1], w)
                if k1 - k0 > 1:
                    jit.rebuild(self._cum[k0:k1 - 1], *add, growth[1:], states[k0 + 1:k1],
                                states[k0 + 1:k1], moved[k0 + 1:k1], w)
            if i0 + k1 - k0 == self.size:           # this run closes the window: its end
                last = slice(self.owned, self.owned + 1)
                jit.rebuild(self._cum[k1 - 1:k1], *add, end, states[last], states[last],
                            moved[last], w)

    def _rebuild_run(self, run, chunk, folded: bool):
        """A run's rows after the scan: Y = G (base + prefix), the base the scan's
        (``folded``: the opening run, whose prefix sums hold the start already and
        whose first row is the start itself)."""
        be, (k0, k1, i0) = self.backend, run
        cum = self._cum[:, chunk]
        if folded:
            for k in range(k0 + 1, k1):
                self._rebuild(k, cum[k - 1], chunk)
            if i0 + k1 - k0 == self.size:
                self._rebuild(self.owned, cum[k1 - 1], chunk)
            return
        base = self._received[chunk]
        u = self._work[:base.shape[0]]
        self._rebuild(k0, base, chunk)
        for k in range(k0 + 1, k1):
            be.add(cum[k - 1], base, out=u)
            self._rebuild(k, u, chunk)
        if i0 + k1 - k0 == self.size:
            be.add(cum[k1 - 1], base, out=u)
            self._rebuild(self.owned, u, chunk)

    def _rebuild(self, k: int, u, chunk):
        """State row k (row ``owned``: the window's end) = G u for the samples ``chunk``,
        in place, its squared move summed over d into the residual rows."""
        be = self.backend
        width = chunk.stop - chunk.start
        j = self.offset + self.size if k == self.owned else int(self._occ[k])
        fresh, old = self._fresh[:width], self._states[k, chunk]
        be.multiply(u, self._growth[j], out=fresh)
        diff = self._diff[:width]
        be.subtract(fresh, old, out=diff)
        be.sum_squares_into(diff, out=self._moved[k, chunk])
        be.copy(fresh, old)

    def _verdict(self):
        """r_m at the positions this rank rebuilt, then one reduction over the verdict
        communicator: (largest r_m, first failing position)."""
        rows, positions = [], []
        for k0, k1, i0 in self.runs:
            first = k0 + 1 if i0 == 0 else k0
            rows.extend(range(first, k1))
            positions.extend(range(i0 + first - k0, i0 + k1 - k0))
            if i0 + k1 - k0 == self.size:
                rows.append(self.owned)
                positions.append(self.size)
        local_max, local_fail = 0.0, self.size + 1
        positions = np.asarray(positions, dtype=np.int64)
        r = np.empty(0)
        if rows:
            moved = self.backend.to_host(self.backend.max_last(self._moved[rows]))
            r = moved / self._scale[self.offset + positions - 1]
            local_max = float(r.max())
            failing = np.flatnonzero(~(r <= self.tol_sq))
            if failing.size:
                local_fail = int(positions[failing].min())
        self._r_positions, self._r_values = positions, r
        self.residual, self.first_failing = self.verdicts.sweep_verdict(local_max, local_fail)

    def _raise_non_finite(self, run):
        from .base import SamplingError
        k0, k1, _ = run
        host = self.backend.to_host(self._scores[k0:k1]).reshape(k1 - k0, -1)
        bad = np.flatnonzero(~np.isfinite(host).all(axis=1))
        j = int(self._occ[k0 + (int(bad[0]) if bad.size else 0)])
        raise SamplingError(f"non-finite score in {self.describe(j)} on time rank {self.comm.rank}")

    # -- results and slides ----------------------------------------------------------------
    def end(self):
        """Y at the window's end position, (S, d), the same on every rank."""
        if self.comm.rank == self.end_owner:
            self.backend.copy(self._states[self.owned], self._end)
        end = self.comm.bcast_array(self._end, root=self.end_owner)
        if end is not self._end:
            self.backend.copy(end, self._end)
        return self._end

    def _share_end(self, receivers):
        """The window's end state from its owner into ``_end`` on the ranks in
        ``receivers`` (one Alltoallv of one row, skipped when the owner is the only
        receiver)."""
        owner, rank = self.end_owner, self.comm.rank
        if rank == owner:
            self.backend.copy(self._states[self.owned], self._end)
        others = receivers - {owner}
        if others:
            sends = [(0, int(rank == owner and r in others)) for r in range(self.comm.size)]
            receives = [(0, int(r == owner and rank in others)) for r in range(self.comm.size)]
            self.comm.move_rows(self._states[self.owned:self.owned + 1], self._end[None],
                                (sends, receives))
        return self._end

    def slide(self, advance: int, size: int):
        """Move the window ``advance`` slices on and resize it to ``size`` slices.

        The slices that enter take the ring positions of those accepted, on the same
        rank, and start from the old window's end state, which its owner sends to the
        ranks that need it (those the new slices and the new end land on, often only
        itself); their fixed rows come from the rows drawn ahead, or are drawn now.
        Then every rank draws ahead about its share of the rows that entered (most
        urgent first).
        """
        old_end, new_end = self.offset + self.size, self.offset + advance + size
        receivers = {self._owner(j % self.ring) for j in range(old_end, new_end)}
        receivers.add(self._owner((new_end - 1) % self.ring))
        end = self._share_end(receivers)
        entering = new_end - old_end
        self.offset += advance
        self.size = size
        w, p = self.offset, self.ring
        occ = w + (np.arange(self.lo, self.hi, dtype=np.int64) - w) % p
        drawn_before = self.drawn
        for k in np.flatnonzero((occ != self._occ) & (occ < w + size)):
            self.backend.copy(end, self._states[k])
            j = int(occ[k])
            if self._ahead[k] == j:
                self._slot[k] = 1 - self._slot[k]
                self._ahead[k] = -1
            else:
                self._draw_row(j, int(self._slot[k]), k)
        self._occ = occ
        self._layout()
        if self.comm.rank == self.end_owner:
            self.backend.copy(end, self._states[self.owned])
        budget = -(-entering // self.comm.size) + 1 - (self.drawn - drawn_before)
        live = occ < w + size
        later = occ + p
        stale = np.flatnonzero(live & (later < self.total) & (self._ahead != later))
        for k in stale[np.argsort(occ[stale], kind="stable")][:max(budget, 0)]:
            self._draw_row(int(later[k]), 1 - int(self._slot[k]), k)
            self._ahead[k] = later[k]
            self.drawn_ahead += 1
