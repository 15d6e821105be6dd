"""Gaussian random field on an n x n periodic grid (d = n^2), exact at every noise level.

X_0 ~ N(0, C) with C diagonal in the orthonormal 2-D Fourier basis:

    lambda(k) = (1 + |k|^2 / k0^2)^(-alpha / 2),   k = (kx, ky), kx, ky in [-n/2, n/2).

Under the OU process, p_t = N(0, C_t) with eigenvalues sigma_t^2(k) = lambda(k) e^{-2t}
+ 1 - e^{-2t}, so the score is the Fourier filter s(x, t) = -F^{-1}[ F x / sigma_t^2 ].
The discrete Hartley transform (real, orthonormal, symmetric) diagonalises C_t too: its
coordinates are d independent N(0, sigma_t^2(k)), which is how accuracy is measured.
"""
from __future__ import annotations

import math

import numpy as np
import scipy.fft as sfft

from .base import AnalyticTarget, gaussian_fit_kl_floor
from ..process import noise_variance, signal_level
from .. import noise


def grid_side(dim: int) -> int:
    """n with n * n == dim, or ValueError."""
    n = math.isqrt(dim)
    if dim <= 0 or n * n != dim:
        raise ValueError(f"the grf model needs --dim to be a perfect square (n x n grid), got {dim}")
    return n


def hartley(x: np.ndarray, n: int) -> np.ndarray:
    """Orthonormal 2-D discrete Hartley transform of a batch (B, d) -> (B, d), float64."""
    f = sfft.fft2(np.asarray(x, dtype=np.float64).reshape(-1, n, n), norm="ortho")
    return (f.real - f.imag).reshape(-1, n * n)


class GaussianRandomField(AnalyticTarget):
    name = "grf"

    def __init__(self, dim: int, k0: float = 4.0, alpha: float = 2.0):
        if not k0 > 0:
            raise ValueError(f"--grf-k0 must be positive, got {k0}")
        if not alpha >= 0:
            raise ValueError(f"--grf-alpha must be non-negative, got {alpha}")
        self.n = grid_side(dim)
        self.dim = dim
        self.k0 = float(k0)
        self.alpha = float(alpha)
        k = np.fft.fftfreq(self.n, d=1.0 / self.n)          # integers in [-n/2, n/2)
        self.k_norm = np.sqrt(k[:, None] ** 2 + k[None, :] ** 2)   # (n, n), fft2 layout
        self.eigenvalues = (1.0 + self.k_norm**2 / self.k0**2) ** (-self.alpha / 2.0)
        # The same eigenvalues on the half grid of rfft2 (last axis 0..n/2).
        self._eig_half = self.eigenvalues[:, : self.n // 2 + 1]

    def parameters(self) -> dict:
        return {"k0": self.k0, "alpha": self.alpha, "n": self.n, "eigenvalues": self.eigenvalues}

    def variances(self, t) -> np.ndarray:
        """sigma_t^2(k) in fft2 layout (n, n)."""
        return self.eigenvalues * signal_level(t) + noise_variance(t)

    def score(self, x, t):
        x = np.asarray(x)
        t = np.asarray(t, dtype=np.float64).reshape(-1)
        out = np.empty(x.shape, dtype=x.dtype)
        # Rows in chunks of about 2^18 numbers: the FFT temporaries stay in cache and are
        # recycled by the allocator instead of faulting in fresh pages every call.
        rows = max(1, (1 << 18) // self.dim)
        for lo in range(0, len(x), rows):
            out[lo:lo + rows] = self._score_rows(x[lo:lo + rows], t[lo:lo + rows])
        return out

    def _score_rows(self, x, t):
        f = sfft.rfft2(x.reshape(-1, self.n, self.n), norm="ortho")
        # A batch holds few distinct times (one per slice), usually in contiguous runs:
        # filter each run in place rather than materialising (B, n, n/2+1) variances.
        cuts = np.flatnonzero(t[1:] != t[:-1]) + 1
        for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(t)]):
            f[lo:hi] *= 1.0 / (self._eig_half * signal_level(t[lo]) + noise_variance(t[lo]))
        s = sfft.irfft2(f, s=(self.n, self.n), norm="ortho", overwrite_x=True)
        return -s.reshape(x.shape)

    def log_density(self, x, t):
        h = hartley(x, self.n)
        var = self.variances(t).reshape(-1)
        return -0.5 * ((h**2) / var).sum(axis=1) - 0.5 * np.log(2 * np.pi * var).sum()

    def exact_samples(self, num, t, seed):
        z = noise.gaussian(seed, noise.STREAM_REFERENCE, 0, 0, np.arange(num), self.dim)
        h = z * np.sqrt(self.variances(t).reshape(-1))
        return hartley(h, self.n)    # the DHT is its own inverse

    # -- accuracy ---------------------------------------------------------------------
    def shells(self) -> np.ndarray:
        """Shell index of every mode (fft2 layout): round(|k|) clipped to [1, n/2].

        The DC mode joins shell 1 and the corner modes (|k| > n/2, incomplete circles)
        join shell n/2, so every mode counts and every shell holds several modes.
        """
        return np.clip(np.rint(self.k_norm), 1, max(1, self.n // 2)).astype(int)

    def power_spectrum(self, samples) -> tuple:
        """Radially averaged power spectrum of samples: (shell wavenumbers, power)."""
        h = hartley(samples, self.n)
        power = (h**2).mean(axis=0).reshape(self.n, self.n)
        shells = self.shells()
        idx = np.unique(shells)
        sums = np.bincount(shells.ravel(), weights=power.ravel())
        counts = np.bincount(shells.ravel())
        return idx, sums[idx] / counts[idx]

    def exact_power_spectrum(self, t) -> tuple:
        shells = self.shells()
        idx = np.unique(shells)
        sums = np.bincount(shells.ravel(), weights=self.variances(t).ravel())
        return idx, sums[idx] / np.bincount(shells.ravel())[idx]

    def accuracy(self, samples, t, seed):
        """Figures against p_t (t = delta for a finished run).

        kl_gaussian_fit: sum over the d Hartley modes of KL(N(0, v_hat_k) || N(0, v_k)),
            v_hat_k the mean square of the samples' mode k (nats);
        kl_noise_floor: its expectation for exact samples (a statistical floor, about
            d / (2 * num_samples));
        spectrum_rel_error: |P_hat - P| / P per radial shell, and its maximum.
        """
        samples = np.asarray(samples, dtype=np.float64)
        h = hartley(samples, self.n)
        v_hat = (h**2).mean(axis=0)
        ratio = v_hat / self.variances(t).reshape(-1)
        kl = 0.5 * (ratio - 1.0 - np.log(ratio)).sum()
        shells, power = self.power_spectrum(samples)
        _, exact = self.exact_power_spectrum(t)
        rel = np.abs(power - exact) / exact
        return {
            "kl_gaussian_fit": float(kl),
            "kl_noise_floor": float(self.dim * gaussian_fit_kl_floor(len(samples))),
            "spectrum_max_rel_error": float(rel.max()),
            "spectrum_shells": shells.astype(np.int64),
            "spectrum_power": power,
            "spectrum_exact": exact,
            "spectrum_rel_error": rel,
        }
