"""Compiled host kernels of the sweep engine (optional: numba).

A sweep's arithmetic on the host is memory-bound: as numpy operations, each row of
each block of samples goes through about seven passes (increment, running sum, state,
difference, squared move, store), cache-blocked, at about 1.6x the cost of one compiled
pass (docs/design.md). Where numba is installed (the ``fast`` extra, which
``make install`` installs), the engine (samplers/engine.py) runs the same arithmetic as
one compiled pass per row instead, for one-component states on the numpy backend:

- :func:`sweep_running`: slices swept from a known base, the prefix sums never stored:
  time rank 0's sweep of a block (BlockSweep._sweep_running), and the runs of
  ParaDiGMS' ring whose base is known (RingWindow);
- :func:`add_increments`: the frozen slices' increments taken into its running sum;
- :func:`accumulate`: the other ranks' increments and their prefix sums, before the
  Exscan;
- :func:`rebuild`: their states from their prefix sums and bases, after it.

Every elementwise operation is numpy's, in numpy's order and precision (numba does not
fuse a multiply and an add unless told to), so the states are those of the numpy
operations bit for bit (tests/test_kernels.py); only the squared moves, reductions, are
summed in another order. Without numba, or with ``HPC_PICARD_NO_JIT=1`` set, or where
:data:`enabled` is False, the engine runs the numpy operations. The kernels are
compiled on first use and cached next to _jitted.py (numba's ``cache=True``; a
read-only install caches in the user's cache folder, or ``NUMBA_CACHE_DIR``); the
runner loads them before sampling (:func:`warm_up`).
"""
from __future__ import annotations

import os

import numpy as np

#: False turns the kernels off in this process (tests compare both paths); the kernels
#: themselves are in _jitted.py, imported (with numba) by get() on first use
enabled = True
_compiled = None


def get():
    """The compiled kernels (the module _jitted), or None: numba missing, turned off by
    ``HPC_PICARD_NO_JIT`` or :data:`enabled`. numba is imported on first use only."""
    global _compiled
    if not enabled or os.environ.get("HPC_PICARD_NO_JIT"):
        return None
    if _compiled is None:
        try:
            from . import _jitted
        except ImportError:
            _compiled = False
        else:
            _compiled = _jitted
    return _compiled or None


def warm_up(dtype) -> bool:
    """Load the kernels for states of ``dtype`` now (importing numba, compiling them
    the first time), by running each once on a few numbers with the argument types
    and layouts the engine passes; False where there are none (:func:`get`)."""
    jit = get()
    if jit is None:
        return False
    S, d = 1, 8
    states = np.zeros((2, S, d), dtype=np.dtype(dtype))
    rows, row = np.zeros((1, S, d)), np.zeros((S, d))
    one, two, moved = np.ones(1), np.ones(2), np.zeros((2, S))
    jit.sweep_running(states[:1], one, rows[None], np.zeros(1, dtype=np.int64), 0, True, row,
                      two, states, states, moved, False, True, row, S)
    jit.accumulate(states[:1], one, rows[None], np.zeros(1, dtype=np.int64), 0, True, row,
                   True, rows, S)
    jit.rebuild(rows, row, True, one, states[:1], states[:1], moved[:1], S)
    jit.add_increments(states[:1], one, rows, True, row)
    return True
