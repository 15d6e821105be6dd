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
def sweep_running(scores, weight, fixed, has_fixed, base, growth, old, new, moved,
                  first, total, width):
    """Rows first + 1 .. n of ``new`` (n = len(old) - 1): the sweep of the rank whose
    start is known (time rank 0).

    For each block of ``width`` samples a running sum starts from ``base`` (S, d) and
    takes in g_i = weight[i] scores[i - first] (+ fixed[i], ``has_fixed``) for
    i = first .. n - 1; Y_{i+1} = growth[i + 1] running goes to new[i + 1], its squared
    move from old[i + 1] per sample to moved[i + 1]; the last running sum, the rank's
    total, goes to ``total`` (S, d). ``old`` and ``new`` may be the same array (in
    place).
    """
    n = old.shape[0] - 1
    S, d = base.shape
    run = np.empty((width, d), dtype=np.float64)
    diff = np.empty(d, dtype=np.float64)
    for c0 in range(0, S, width):
        c1 = min(c0 + width, S)
        run[:c1 - c0] = base[c0:c1]
        for i in range(first, n):
            w = weight[i]
            g = growth[i + 1]
            for a in range(c0, c1):
                r_row, s = run[a - c0], scores[i - first, a]
                f = fixed[i if has_fixed else 0, a if has_fixed else 0]
                y_old, y_new = old[i + 1, a], new[i + 1, a]
                for e in range(d):
                    c = w * np.float64(s[e])
                    if has_fixed:
                        c = c + f[e]
                    r = r_row[e] + c
                    r_row[e] = r
                    o = y_old[e]
                    y_new[e] = g * r
                    diff[e] = y_new[e] - o
                moved[i + 1, a] = sum_squares(diff)
        total[c0:c1] = run[:c1 - c0]


@numba.njit(nogil=True, cache=True)
def sweep_run(scores, weight, fixed, slots, row0, base, growth, states, moved, write_first,
              total, width):
    """One run of K rows of the ring whose base is known (RingWindow): for each block of
    ``width`` samples a running sum starts from ``base`` (S, d) (``write_first``:
    states[0] = growth[0] base first) and takes in g_k = weight[k] scores[k] +
    fixed[slots[k], row0 + k] for k = 0 .. K - 1; states[k + 1] = growth[k + 1] running
    for k < K - 1, in place, its squared move per sample to moved[k + 1]; the last
    running sum, the run's total, goes to ``total`` (S, d). The same numbers as
    :func:`accumulate` then :func:`rebuild`."""
    K = scores.shape[0]
    S, d = base.shape
    run = np.empty((width, d), dtype=np.float64)
    diff = np.empty(d, dtype=np.float64)
    for c0 in range(0, S, width):
        c1 = min(c0 + width, S)
        run[:c1 - c0] = base[c0:c1]
        if write_first:
            g = growth[0]
            for a in range(c0, c1):
                r_row, y = run[a - c0], states[0, a]
                for e in range(d):
                    o = y[e]
                    y[e] = g * r_row[e]
                    diff[e] = y[e] - o
                moved[0, a] = sum_squares(diff)
        for k in range(K):
            w = weight[k]
            last = k == K - 1
            g = growth[k + 1] if not last else 0.0
            for a in range(c0, c1):
                r_row, s = run[a - c0], scores[k, a]
                f = fixed[slots[k], row0 + k, a]
                for e in range(d):
                    c = w * np.float64(s[e])
                    c = c + f[e]
                    r_row[e] = r_row[e] + c
                if not last:
                    y = states[k + 1, a]
                    for e in range(d):
                        o = y[e]
                        y[e] = g * r_row[e]
                        diff[e] = y[e] - o
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
