"""The forward Ornstein-Uhlenbeck process, its clock, and the exponential-integrator step.

Conventions (docs/method.md): forward time ``t`` in ``[0, T]`` runs from data to noise,

    dX_t = -X_t dt + sqrt(2) dW_t,      X_t = e^{-t} X_0 + sqrt(1 - e^{-2t}) Z,

and reverse time ``r = T - t`` runs from noise to data. A step of reverse length ``e``
with the score frozen at its start is integrated exactly in the linear part:

    SDE:  Y' = e^{e} Y + 2 (e^{e} - 1) s + sqrt(e^{2e} - 1) xi
    ODE:  Y' = e^{e} Y +   (e^{e} - 1) s
"""
from __future__ import annotations

import numpy as np

PATHS = ("sde", "ode")


def signal_level(t):
    """alpha_bar(t) = e^{-2t}: the DDPM/VP cumulative signal level at forward time t."""
    return np.exp(-2.0 * np.asarray(t, dtype=np.float64))


def noise_variance(t):
    """1 - e^{-2t}: the variance the forward process adds to a point mass by time t."""
    return -np.expm1(-2.0 * np.asarray(t, dtype=np.float64))


def time_from_signal_level(alpha_bar):
    """Forward time of a VP model's cumulative signal level: t = -log(alpha_bar) / 2."""
    return -0.5 * np.log(np.asarray(alpha_bar, dtype=np.float64))


def score_from_epsilon(eps, t):
    """Score of an epsilon-prediction network: s = -eps / sqrt(1 - e^{-2t})."""
    return -eps / np.sqrt(noise_variance(t))


def step_coefficients(step, path):
    """Coefficients (a, c, b) of the frozen-score step Y' = a Y + c s + b xi.

    ``step`` is the reverse-time step length e (array-like, > 0); ``path`` is "sde" or
    "ode". Computed with expm1 so that tiny steps near the data end keep full precision.
    """
    step = np.asarray(step, dtype=np.float64)
    em1 = np.expm1(step)
    if path == "sde":
        return np.exp(step), 2.0 * em1, np.sqrt(np.expm1(2.0 * step))
    if path == "ode":
        return np.exp(step), em1, np.zeros_like(step)
    raise ValueError(f"unknown path {path!r}; expected one of {PATHS}")


def step_noise_scale(step):
    """v = e^{2e} - 1: the variance an SDE step of reverse length e injects.

    Used to normalise Picard residuals (docs/method.md, convergence test) for both
    paths, so that one tolerance means the same thing for the SDE and the ODE.
    """
    return np.expm1(2.0 * np.asarray(step, dtype=np.float64))
