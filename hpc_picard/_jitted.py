"""The sweep engine's kernels, compiled by numba (see kernels.py, which imports this
module only where numba is installed and the kernels are wanted)."""
from __future__ import annotations

import numba
import numpy as np


@numba.njit(nogil=True, cache=True, fastmath=True)
def sum_squares(x):
    """Sum of x^2, reassociated freely (vectorised): a reduction, not a state."""
    acc = 0.0
    for e in range(x.shape[0]):
        acc += x[e] * x[e]
    return acc


@numba.njit(nogil=True, cache=True)
def sweep_running(scores, weight, fixed, slots, row0, has_fixed, base, growth, old, new,
                  moved, write_first, write_last, total, width):
    """K slices swept from a known base: time rank 0's live slices of a block
    (BlockSweep._sweep_running), or a run of ParaDiGMS' ring whose base is known
    (RingWindow). State row k is the state at the start of slice k, row K (if there)
    the one after the last.

    For each block of ``width`` samples a running sum starts from ``base`` (S, d)
    (``write_first``: Y_0 = growth[0] base goes to new[0] first) and takes in
    g_k = weight[k] scores[k] (+ fixed[slots[k], row0 + k], ``has_fixed``) for
    k = 0 .. K - 1; Y_{k+1} = growth[k + 1] running goes to new[k + 1] (for k = K - 1
    only with ``write_last``), each written row's squared move from old, per sample,
    to moved. The last running sum goes to ``total`` (S, d). ``old`` and ``new`` may
    be the same array (in place). The same numbers as :func:`accumulate` then
    :func:`rebuild`.
    """
    K = scores.shape[0]
    S, d = base.shape
    run = np.empty((width, d), dtype=np.float64)
    diff = np.empty(d, dtype=np.float64)
    for c0 in range(0, S, width):
        c1 = min(c0 + width, S)
        run[:c1 - c0] = base[c0:c1]
        for k in range(-1 if write_first else 0, K):
            if k >= 0:
                w = weight[k]
                for a in range(c0, c1):
                    r_row, s = run[a - c0], scores[k, a]
                    f = fixed[slots[k], row0 + k, a] if has_fixed else fixed[0, 0, a]
                    for e in range(d):
                        c = w * np.float64(s[e])
                        if has_fixed:
                            c = c + f[e]
                        r_row[e] = r_row[e] + c
            if k == K - 1 and not write_last:
                break
            g = growth[k + 1]
            for a in range(c0, c1):
                r_row, y_old, y_new = run[a - c0], old[k + 1, a], new[k + 1, a]
                for e in range(d):
                    o = y_old[e]
                    y_new[e] = g * r_row[e]
                    diff[e] = y_new[e] - o
                moved[k + 1, a] = sum_squares(diff)
        total[c0:c1] = run[:c1 - c0]


@numba.njit(nogil=True, cache=True)
def accumulate(scores, weight, fixed, slots, row0, has_fixed, before, has_before, cum, width):
    """cum[k] = (weight[k] scores[k] + fixed[slots[k], row0 + k]) + cum[k - 1] for
    k = 0 .. K - 1 (``has_fixed``: else without the fixed row), ``before`` (S, d) in
    the place of cum[-1] (``has_before``: else nothing)."""
    K = cum.shape[0]
    S, d = before.shape
    for c0 in range(0, S, width):
        c1 = min(c0 + width, S)
        for k in range(K):
            w = weight[k]
            add_prev = k > 0 or has_before
            for a in range(c0, c1):
                row, s = cum[k, a], scores[k, a]
                f = fixed[slots[k], row0 + k, a] if has_fixed else fixed[0, 0, a]
                prev = cum[k - 1, a] if k > 0 else before[a]
                for e in range(d):
                    c = w * np.float64(s[e])
                    if has_fixed:
                        c = c + f[e]
                    if add_prev:
                        c = c + prev[e]
                    row[e] = c


@numba.njit(nogil=True, cache=True)
def rebuild(us, add, has_add, growth, old, new, moved, width):
    """new[k] = growth[k] (us[k] + add) (``has_add``: else us[k] alone) for k = 0 ..
    K - 1, its squared move from old[k] per sample to moved[k]; ``old`` and ``new``
    may be the same array."""
    K = us.shape[0]
    S, d = add.shape
    diff = np.empty(d, dtype=np.float64)
    for c0 in range(0, S, width):
        c1 = min(c0 + width, S)
        for k in range(K):
            g = growth[k]
            for a in range(c0, c1):
                u, plus = us[k, a], add[a]
                y_old, y_new = old[k, a], new[k, a]
                for e in range(d):
                    x = u[e] + plus[e] if has_add else u[e]
                    o = y_old[e]
                    y_new[e] = g * x
                    diff[e] = y_new[e] - o
                moved[k, a] = sum_squares(diff)


@numba.njit(nogil=True, cache=True)
def add_increments(scores, weight, fixed, has_fixed, running):
    """running += weight[k] scores[k] (+ fixed[k], ``has_fixed``) for k = 0 .. K - 1, in
    order: the running sum of :func:`sweep_running` taken on over rows that froze,
    with its operations."""
    K = scores.shape[0]
    S, d = running.shape
    for a in range(S):
        r_row = running[a]
        for k in range(K):
            w = weight[k]
            s = scores[k, a]
            f = fixed[k if has_fixed else 0, a if has_fixed else 0]
            for e in range(d):
                c = w * np.float64(s[e])
                if has_fixed:
                    c = c + f[e]
                r_row[e] = r_row[e] + c
