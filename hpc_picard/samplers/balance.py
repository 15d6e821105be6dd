"""Work stealing of score evaluations between the time ranks, inside each round.

A Picard round ends in collectives (the Exscan of the block totals, the verdict), so the
rank that finishes its scores first waits there for the slowest. The engines split a
round's slices evenly, but equal rows are not equal time: the cores of one machine run
at different speeds from round to round, ranks own different numbers of live rows near
a trajectory's end, and the noise a rank draws ahead varies by round. On the 2-core
development machine that wait was paradigms' communication time (docs/design.md, "Work
stealing"), and a plan from the previous rounds' speeds did not remove it: the speeds
change faster than a round.

:class:`ScoreBalancer` therefore reacts within the round. The states stay where the
engine put them; only score *evaluations* move. Every rank scores its rows from the
first, one model call at a time, and between calls looks (without waiting) for a
request from its thief, the rank before it on the ring of time ranks. Just before its
last call a rank asks its victim, the rank after it, for work, so that the answer
comes while it computes. A victim that sees a request hands over the later half of
the rows it has not scored yet (their count and pieces, their times, and each piece's
states straight from the engine's rows), scores the rest, and at the end receives
their scores into its own score rows; the thief scores them, sends the scores back and
asks again (before its last call), until the victim answers "nothing". A rank out of
rows answers its own thief "nothing".

A rank asks until it is told "nothing" and answers until it has said "nothing", so
nobody has to detect the end. Every send is non-blocking and completed at the end of
the round, before the engine touches the rows; the blocking receives and waits are for
a rank that is computing (and calls MPI between its calls) or is waiting on a rank
further along the chain: no cycle of waits.

A slice's score is the model's at the same state and time whichever rank computes it,
so the samples do not change, provided the model scores each row independently of the
other rows in its batch (models that do not: round-off differences; ``--balance off``
keeps every row where it is). ``auto`` steals for the samplers that set
``Sampler.balance_auto`` (paradigms; piadm's blocks re-split as their front advances
instead), on host arrays only: a GPU batch has spare width, so fewer rows save nothing
there and the transfers would only cost; and not with ``--emulate-latency``, whose
padded calls do not scale with rows.
"""
from __future__ import annotations

import numpy as np

#: the fewest score calls a round's own rows are split into (when it has the rows)
CALLS = 8

_REQUEST, _ANSWER, _TIMES, _STATES, _SCORES = 71, 72, 73, 74, 75     # message tags


class ScoreBalancer:
    """Scores a round's rows, stealing work between the ranks of ``comm``.

    evaluate(states (J, S, d), times (J,), out (J, S, d)): the sampler's score call;
    rows_per_call: the most state rows per model call (requests are looked for between
    calls, of which there are at least :data:`CALLS` a round);
    enabled: False scores every row where it is, with no message.
    Counters over the run: rows ``given`` to the thief and ``taken`` from the victim.
    """

    def __init__(self, comm, evaluate, backend, dtype, sample_shape, rows_per_call: int = 1,
                 enabled: bool = True):
        self.comm = comm
        self.evaluate = evaluate
        self.backend = backend
        self.dtype = np.dtype(dtype)
        self.sample_shape = tuple(int(n) for n in sample_shape)
        self.rows_per_call = max(1, int(rows_per_call))
        self.enabled = bool(enabled) and comm.size > 1
        self.thief = (comm.rank - 1) % comm.size
        self.victim = (comm.rank + 1) % comm.size
        self._buffers = {}
        self._count = np.zeros(2, dtype=np.int64)      # the victim's answer
        self._sends, self._answer = [], None
        self.given = self.taken = 0

    def _rows(self, role: str, count: int):
        """A reusable (count, S, d) buffer in the state dtype, on the backend."""
        buffer = self._buffers.get(role)
        if buffer is None or buffer.shape[0] < count:
            buffer = self._buffers[role] = self.backend.empty((count,) + self.sample_shape,
                                                              self.dtype)
        return buffer[:count]

    def score(self, jobs):
        """Fill every job's ``out`` with the scores at its states: jobs is a list of
        (states (J, S, d), times (J,), out (J, S, d)). Collective over ``comm`` when
        enabled."""
        jobs = [(x, np.asarray(t, dtype=np.float64), out) for x, t, out in jobs if x.shape[0]]
        if not self.enabled:
            for x, t, out in jobs:
                self.evaluate(x, t, out)
            return
        comm, given, taken = self.comm, [], 0
        self._sends, self._answer = [], None
        asked = np.zeros(1, dtype=np.int64)
        request = comm.post_recv(asked, self.thief, _REQUEST)
        thief_done = False          # the thief was told "nothing" and asks no more
        queue = list(jobs)          # rows not scored yet, in order
        left = sum(x.shape[0] for x, _, _ in queue)
        # calls of at most rows_per_call rows, and at least CALLS a round if there are
        # rows enough, so that a request is seen soon after it comes
        step = min(self.rows_per_call, max(1, -(-left // CALLS)))
        while queue:
            x, t, out = queue[0]
            n = min(step, x.shape[0])
            if n == left:
                self._ask()         # before the last call: the answer comes meanwhile
            self.evaluate(x[:n], t[:n], out[:n])
            left -= n
            queue[0] = (x[n:], t[n:], out[n:])
            if not queue[0][0].shape[0]:
                queue.pop(0)
            if not thief_done and comm.test(request):
                pieces = self._give(queue)
                if pieces:
                    given.append(pieces)
                    left -= sum(out.shape[0] for out in pieces)
                    request = comm.post_recv(asked, self.thief, _REQUEST)
                else:
                    thief_done = True
        # this rank's rows are scored: take rows from the victim until it has none, and
        # tell the thief it has none here
        victim_done = False
        while not (thief_done and victim_done):
            if not victim_done and self._answer is None:
                self._ask()
            waiting = [r for r in (self._answer, None if thief_done else request) if r is not None]
            if waiting[comm.wait_any(waiting)] is request:
                self._send_small([0, 0], self.thief, _ANSWER)
                thief_done = True
                continue
            self._answer = None
            count, parts = (int(v) for v in self._count)
            if count:
                self._take(count, parts, taken)
                taken += 1
            else:
                victim_done = True
        for pieces in given:
            self._collect(pieces)
        comm.wait_all([request for request, _ in self._sends])
        self._sends = []

    def _ask(self):
        """Ask the victim for rows; its answer (count, pieces) arrives in ``_count``."""
        if self._answer is None:
            self._send_small([0], self.victim, _REQUEST)
            self._answer = self.comm.post_recv(self._count, self.victim, _ANSWER)

    def _send_small(self, values, dest: int, tag: int):
        """A few integers (request, answer), completed at the round's end."""
        self._sends.append(self.comm.isend_array(np.array(values, dtype=np.int64), dest, tag))

    def _give(self, queue) -> list:
        """Answer the thief's request with the later half of the rows not scored yet
        (taken off ``queue``; none if only one is left): their count and number of
        pieces (contiguous runs of rows), their times and piece sizes, then each
        piece's states, sent from where they are. Returns the pieces' score rows
        (``out`` views, in row order) for :meth:`_collect`."""
        count = sum(x.shape[0] for x, _, _ in queue) // 2
        pieces, need = [], count
        while need:
            x, t, out = queue.pop()
            cut = max(x.shape[0] - need, 0)
            pieces.insert(0, (x[cut:], t[cut:], out[cut:]))
            if cut:
                queue.append((x[:cut], t[:cut], out[:cut]))
            need -= x.shape[0] - cut
        self._send_small([count, len(pieces)], self.thief, _ANSWER)
        if not count:
            return []
        for array, tag in ([(np.concatenate([t for _, t, _ in pieces]), _TIMES),
                            (np.array([x.shape[0] for x, _, _ in pieces], dtype=np.int64), _TIMES)]
                           + [(x, _STATES) for x, _, _ in pieces]):
            self._sends.append(self.comm.isend_array(array, self.thief, tag))
        self.given += count
        return [out for _, _, out in pieces]

    def _take(self, count: int, parts: int, index: int):
        """Score ``count`` rows of the victim's, in ``parts`` pieces (this round's
        ``index``-th batch from it), and send their scores back piece by piece (each
        batch its own buffer until the round's end)."""
        states, scores = self._rows("taken", count), self._rows(f"scores-{index}", count)
        times, sizes = np.empty(count, dtype=np.float64), np.empty(parts, dtype=np.int64)
        self.comm.recv_array_into(times, self.victim, _TIMES)
        self.comm.recv_array_into(sizes, self.victim, _TIMES)
        edges = np.concatenate([[0], np.cumsum(sizes)]).tolist()
        for a, b in zip(edges[:-1], edges[1:]):
            self.comm.recv_array_into(states[a:b], self.victim, _STATES)
        for a in range(0, count, self.rows_per_call):
            b = min(a + self.rows_per_call, count)
            if b == count:
                self._ask()         # before the last call: the answer comes meanwhile
            self.evaluate(states[a:b], times[a:b], scores[a:b])
        for a, b in zip(edges[:-1], edges[1:]):
            self._sends.append(self.comm.isend_array(scores[a:b], self.victim, _SCORES))
        self.taken += count

    def _collect(self, pieces):
        """The scores of one batch of rows given to the thief, into their places."""
        for out in pieces:
            self.comm.recv_array_into(out, self.thief, _SCORES)
