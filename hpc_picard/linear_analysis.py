"""Exact output variances of the samplers on the Gaussian random field.

On the GRF target the score is linear and diagonal in the Hartley basis,
s(y, t) = -y / sigma_t^2(k), so every sampler here is a linear map of its Gaussian
inputs (Y_0, the increments xi, the corrector's V_0 and noise) applied mode by mode.
Its output in mode k is therefore N(0, v_k) with a variance v_k that follows from the
sampler's recurrences alone, and the KL divergence to the exact target p_delta is

    KL = sum_k mult_k * (v_k / s_k - 1 - log(v_k / s_k)) / 2,   s_k = sigma_delta^2(k).

This replaces sampling (whose KL estimate has a floor of about d / (2 n) for n samples)
by a computation that costs O(slices x sweeps) per mode and is exact up to round-off.

- sequential: v' = (a_j - c_j / sigma_j^2)^2 v + b_j^2, step by step.
- Picard sweeps (on either path): a block's sweep is Y <- L Y + f with L strictly
  lower triangular, so after K sweeps Y_M = e_M^T L^K Y^(0) + sum_{i<K} e_M^T L^i f. The
  rows e_M^T L^i are built by the adjoint recursion (a suffix sum per sweep), which gives
  the block end's coefficient on Y_0 and on every xi_j in O(M K).
- the Langevin corrector: the (X, V) coefficients on its 2 + 2 M_c inputs, propagated
  through the same prefix sums as the sampler.

Modes: the GRF's eigenvalues depend on |k| only; :func:`grf_modes` returns the distinct
ones with their multiplicities (exact), or geometric bins of them (``bins``) with the
multiplicity-weighted mean eigenvalue per bin; the relative error of the binned KL is
second order in the bin width (below 1e-4 for 256 bins, checked in the tests).
"""
from __future__ import annotations

import numpy as np

from .grid import TimeGrid
from .process import noise_variance, signal_level, step_coefficients
from .samplers.corrector import CorrectorSlices


def grf_modes(model, bins: int = 0) -> tuple:
    """(eigenvalues, multiplicities) of a GaussianRandomField; ``bins`` > 0 bins them."""
    lam, mult = np.unique(model.eigenvalues.ravel(), return_counts=True)
    if bins <= 0 or len(lam) <= bins:
        return lam, mult.astype(np.float64)
    edges = np.geomspace(lam.min(), lam.max() * (1 + 1e-12), bins + 1)
    which = np.clip(np.searchsorted(edges, lam, side="right") - 1, 0, bins - 1)
    weight = np.bincount(which, weights=mult, minlength=bins)
    mean = np.bincount(which, weights=mult * lam, minlength=bins)
    keep = weight > 0
    return mean[keep] / weight[keep], weight[keep]


def target_variance(lam, t) -> np.ndarray:
    """sigma_t^2 = lambda e^{-2t} + 1 - e^{-2t} per mode."""
    return lam * signal_level(t) + noise_variance(t)


def kl_gaussian(var, target, mult) -> float:
    """sum_k mult_k KL(N(0, var_k) || N(0, target_k)) in nats."""
    ratio = np.asarray(var) / np.asarray(target)
    return float(0.5 * (mult * (ratio - 1.0 - np.log(ratio))).sum())


def _slice_arrays(block, path, lam):
    """Per-slice a, c, b (M,) and the score's linear factor -1/sigma^2, shape (M, modes)."""
    a, c, b = step_coefficients(block.steps, path)
    factor = -1.0 / target_variance(lam[None, :], block.score_times[:, None])
    return a, c, b, factor


def sequential_variance(grid: TimeGrid, path: str, lam, v0: float = 1.0) -> np.ndarray:
    """Output variance per mode of sequential-{path} on ``grid`` from Y_0 ~ N(0, v0)."""
    var = np.full(len(lam), float(v0))
    for block in grid.blocks:
        a, c, b, factor = _slice_arrays(block, path, lam)
        # v_M = prod_j alpha_j v_0 + sum_j b_j^2 prod_{i>j} alpha_i, all slices at once.
        alpha = (a[:, None] + c[:, None] * factor) ** 2              # (M, modes)
        after = np.cumprod(alpha[::-1], axis=0)[::-1]                # prod_{i>=j} alpha_i
        after = np.vstack([after[1:], np.ones((1, len(lam)))])       # prod_{i>j} alpha_i
        var = after[0] * alpha[0] * var + (b[:, None] ** 2 * after).sum(axis=0)
    return var


def picard_block_coefficients(block, path: str, lam, sweeps: int,
                              initial_guess: str = "constant") -> tuple:
    """For K = 1..sweeps Picard sweeps on one block: the block end's coefficient on Y_0
    and the summed squares of its coefficients on the xi_j.

    Returns (p, q2), both of shape (sweeps, modes): Y_M = p Y_0 + (noise of variance q2).
    The noise-only initial guess needs the SDE's increments: on the ODE path it is
    refused, as the sampler refuses it.
    """
    if initial_guess == "noise" and path == "ode":
        raise ValueError("the ODE path has no noise-only trajectory: initial_guess must be 'constant'")
    _, c, b, factor = _slice_arrays(block, path, lam)
    M = block.num_slices
    tau = block.tau
    growth = np.exp(tau)[:, None]                                  # E_m, (M+1, 1)
    decay = np.exp(-tau[1:])
    w = (decay * c)[:, None] * factor                              # (M, modes)
    n = (decay * b)[:, None]                                       # (M, 1)
    r = np.zeros((M + 1, len(lam)))
    r[M] = 1.0
    p_sum = np.zeros(len(lam))
    q = np.zeros((M, len(lam)))
    out_p, out_q2 = [], []
    for _ in range(sweeps):
        suffix = np.cumsum((r * growth)[::-1], axis=0)[::-1]      # sum_{m' >= m} r E
        p_sum += suffix[0]
        q += n * suffix[1:]
        r = np.vstack([w * suffix[1:], np.zeros((1, len(lam)))])
        # Y^(0): constant Y_0 (coefficient sum of r on Y_0), or the noise-only
        # trajectory f (one more application of the f-terms).
        if initial_guess == "noise":
            suffix0 = np.cumsum((r * growth)[::-1], axis=0)[::-1]
            out_p.append(p_sum + suffix0[0])
            out_q2.append(((q + n * suffix0[1:]) ** 2).sum(axis=0))
        else:
            out_p.append(p_sum + r.sum(axis=0))
            out_q2.append((q**2).sum(axis=0))
    return np.array(out_p), np.array(out_q2)


def picard_variance(grid: TimeGrid, path: str, lam, sweeps: int, v0: float = 1.0,
                    initial_guess: str = "constant", corrector=None) -> np.ndarray:
    """Output variance per mode after K = 1..sweeps sweeps in every block: (sweeps, modes).

    ``corrector``: a LangevinCorrector applied at every block end (the ODE path), or None.
    """
    var = np.full((sweeps, len(lam)), float(v0))
    for block in grid.blocks:
        p, q2 = picard_block_coefficients(block, path, lam, sweeps, initial_guess)
        var = p**2 * var + q2
        if corrector is not None:
            var = corrector_variance(corrector, float(block.times[-1]), lam, var)
    return var


def corrector_variance(corrector, t: float, lam, var_in) -> np.ndarray:
    """Variance of X after the corrector (its sweeps, at forward time t), per mode.

    ``var_in``: the variance of the corrector's input X, shape (..., modes).
    """
    sl: CorrectorSlices = corrector.slices_at(t)
    M = corrector.steps
    modes = len(lam)
    factor = -1.0 / target_variance(lam, t)                       # (modes,)
    sources = 2 + 2 * M                                           # X_in, V_0, zeta_j (2 each)
    z0 = np.zeros((2, sources, modes))
    z0[0, 0] = 1.0
    z0[1, 1] = 1.0
    fixed = np.zeros((M, 2, sources, modes))
    for j in range(M):
        fixed[j, :, 2 + 2 * j] = sl.noise[j][:, 0, None]
        fixed[j, :, 3 + 2 * j] = sl.noise[j][:, 1, None]
    states = np.broadcast_to(z0, (M + 1,) + z0.shape).copy()
    for _ in range(corrector.sweeps):
        s = states[:M, 0] * factor                                # (M, sources, modes)
        g = sl.drift[:, :, None, None] * s[:, None] + fixed
        np.cumsum(g, axis=0, out=g)
        base = np.concatenate([z0[None], z0[None] + g])
        states = np.einsum("jab,jbsk->jask", sl.growth, base)
    x = states[-1, 0]                                             # (sources, modes)
    return x[0] ** 2 * var_in + (x[1:] ** 2).sum(axis=0)


def paradigms_variance(grid: TimeGrid, lam, mult, window: int, tol: float,
                       v0: float = 1.0) -> tuple:
    """Output variance per mode of the ParaDiGMS window and its number of rounds: (var, rounds).

    The window's state is the joint covariance, per mode, of its p+1 states and its p
    increments xi (everything earlier is integrated out), so a round is C <- A C A^T
    with the round's linear map A, followed by the slide. The slide needs the residual
    r_m; this uses its expectation, sum_k mult_k E[(dY_{m,k})^2] / (d v_m), where the
    sampler tests the largest r_m over its samples. For large d a sample's r_m is an
    average over d modes and concentrates at its expectation (relative spread about
    sqrt(2 / d_eff), d_eff the effective number of modes), so the rounds are those of a
    run with a few samples; a run with many samples can need a few more.
    """
    times = grid.all_times()
    steps = times[:-1] - times[1:]
    total = len(steps)
    _, c, b = step_coefficients(steps, "sde")
    factor = -1.0 / target_variance(lam[None, :], times[:-1, None])   # (L, modes)
    noise_scale = np.expm1(2.0 * steps)
    dim = float(np.sum(mult))
    p = int(window)
    n = 2 * p + 1                                   # W_0..W_p, then xi_0..xi_{p-1}
    modes = len(lam)
    cov = np.zeros((modes, n, n))
    cov[:, :p + 1, :p + 1] = v0
    cov[:, p + 1:, p + 1:] = np.eye(p)
    start, rounds = 0, 0
    while start < total:
        size = min(p, total - start)
        sl = slice(start, start + size)
        tau = np.concatenate([[0.0], np.cumsum(steps[sl])])
        grow = np.exp(tau[1:])                      # E_i, i = 1..size
        decay = np.exp(-tau[1:])                    # D_j, j = 0..size-1
        A = np.broadcast_to(np.eye(n), (modes, n, n)).copy()
        lower = np.tril(np.ones((size, size)))      # [i-1, j] = 1 for j < i
        rows = np.arange(1, size + 1)
        A[:, rows, :] = 0.0
        A[:, rows, 0] = grow
        weight = (grow[:, None] * lower)[None] * (decay * c[sl])[None, None, :] \
            * factor[sl].T[:, None, :]              # (modes, size, size): state j -> state i
        A[:, 1:size + 1, 0:size] += weight
        A[:, 1:size + 1, p + 1:p + 1 + size] = grow[:, None] * lower * (decay * b[sl])[None, :]
        product = A @ cov
        new = product @ A.transpose(0, 2, 1)
        diag_new = np.diagonal(new, axis1=1, axis2=2)[:, rows]
        diag_cross = np.diagonal(product, axis1=1, axis2=2)[:, rows]
        diag_old = np.diagonal(cov, axis1=1, axis2=2)[:, rows]
        change = (mult[:, None] * (diag_new - 2 * diag_cross + diag_old)).sum(axis=0)
        residual = change / (dim * noise_scale[sl])
        failing = np.flatnonzero(residual > tol**2)
        advance = int(failing[0]) + 1 if failing.size else size
        rounds += 1
        # Slide: W'_i = W_{advance+i} (W_size past the end), xi'_j = xi_{advance+j},
        # fresh independent xi for the slots that enter.
        keep = size - advance
        order = np.concatenate([advance + np.minimum(np.arange(p + 1), keep),
                                p + 1 + advance + np.arange(p)])
        fresh = order[p + 1:] >= p + 1 + size
        order[p + 1:][fresh] = 0
        cov = new[:, order][:, :, order]
        xi = np.flatnonzero(fresh) + p + 1
        cov[:, xi, :] = 0.0
        cov[:, :, xi] = 0.0
        cov[:, xi, xi] = 1.0
        start += advance
    return cov[:, 0, 0], rounds
