"""Isotropic Gaussian mixture in d dimensions, exact at every noise level.

C equally weighted components N(mu_c, std^2 I), means drawn from the seed and scaled
to norm ``radius``. Under the OU process, p_t is the mixture of
N(e^{-t} mu_c, v_t I) with v_t = std^2 e^{-2t} + 1 - e^{-2t}, and

    s(x, t) = -(x - sum_c w_c(x) e^{-t} mu_c) / v_t,   w = softmax_c(-|x - e^{-t} mu_c|^2 / (2 v_t)),

with the softmax taken by log-sum-exp in float64, whatever the input dtype.

It is also an exact class-conditional target: label c is component c, and
s(x, t | c) = -(x - e^{-t} mu_c) / v_t, while label -1 (none) gives the mixture's
score above. Guidance with scale w then samples exactly known tilted targets, which
the conditional tests use.
"""
from __future__ import annotations

import numpy as np

from .base import AnalyticTarget
from ..process import noise_variance, signal_level
from .. import noise

MEANS_STREAM = 1 << 32   # Philox key word of the means: apart from the sampler's streams


class GaussianMixture(AnalyticTarget):
    name = "gmm"

    def __init__(self, dim: int, components: int = 8, std: float = 0.5, radius: float = 6.0,
                 seed: int = 0):
        if dim <= 0:
            raise ValueError(f"--dim must be positive, got {dim}")
        if components < 1:
            raise ValueError(f"--gmm-components must be at least 1, got {components}")
        if not std > 0:
            raise ValueError(f"--gmm-std must be positive, got {std}")
        if not radius >= 0:
            raise ValueError(f"--gmm-radius must be non-negative, got {radius}")
        self.dim = dim
        self.std = float(std)
        self.radius = float(radius)
        directions = noise.gaussian(seed, MEANS_STREAM, 0, 0, np.arange(components), dim)
        norms = np.linalg.norm(directions, axis=1, keepdims=True)
        self.means = radius * directions / np.where(norms > 0, norms, 1.0)
        self.weights = np.full(components, 1.0 / components)

    @property
    def components(self) -> int:
        return len(self.weights)

    @property
    def num_classes(self) -> int:
        return self.components

    def parameters(self) -> dict:
        return {"means": self.means, "weights": self.weights, "std": self.std,
                "radius": self.radius}

    def _variance(self, t):
        return self.std**2 * signal_level(t) + noise_variance(t)

    def _logits(self, x64, t):
        """log w_c + log N(x; e^{-t} mu_c, v_t) up to a per-row constant: (B, C)."""
        t = np.asarray(t, dtype=np.float64).reshape(-1, 1)
        scale = np.exp(-t)                                        # (B, 1)
        v = self._variance(t)                                     # (B, 1)
        # |x - a mu|^2 = |x|^2 - 2 a x.mu + a^2 |mu|^2; |x|^2 is common to all c.
        cross = x64 @ self.means.T                                # (B, C)
        mu2 = (self.means**2).sum(axis=1)[None, :]
        return np.log(self.weights)[None, :] - (-2 * scale * cross + scale**2 * mu2) / (2 * v)

    def posterior(self, x, t) -> np.ndarray:
        """Component responsibilities w_c(x) at forward time t, shape (B, C)."""
        logits = self._logits(np.asarray(x, dtype=np.float64), t)
        logits -= logits.max(axis=1, keepdims=True)
        w = np.exp(logits)
        return w / w.sum(axis=1, keepdims=True)

    def score(self, x, t, cond=None):
        x = np.asarray(x)
        x64 = x.astype(np.float64, copy=False)
        t64 = np.asarray(t, dtype=np.float64).reshape(-1, 1)
        w = self.posterior(x64, t64)
        if cond is not None:
            # a labelled row knows its component: its responsibilities are one-hot
            cond = np.asarray(cond)
            labelled = cond >= 0
            w[labelled] = np.eye(self.components)[cond[labelled]]
        mean = np.exp(-t64) * (w @ self.means)
        return (-(x64 - mean) / self._variance(t64)).astype(x.dtype, copy=False)

    def log_density(self, x, t):
        x64 = np.asarray(x, dtype=np.float64)
        logits = self._logits(x64, t)
        top = logits.max(axis=1, keepdims=True)
        lse = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
        v = float(self._variance(t))
        return lse - (x64**2).sum(axis=1) / (2 * v) - 0.5 * self.dim * np.log(2 * np.pi * v)

    def exact_samples(self, num, t, seed):
        idx = np.arange(num)
        z = noise.gaussian(seed, noise.STREAM_REFERENCE, 0, 0, idx, self.dim)
        # Component labels from the same counter-based stream, one uniform per sample.
        u = noise.gaussian(seed, noise.STREAM_REFERENCE, 0, 1, idx, 1)[:, 0]
        labels = np.minimum((0.5 * (1 + _erf(u / np.sqrt(2))) * self.components).astype(int),
                            self.components - 1)
        return np.exp(-t) * self.means[labels] + np.sqrt(self._variance(t)) * z

    def accuracy(self, samples, t, seed, projections: int = 256, labels=None):
        """Figures against p_t (t = delta for a finished run).

        weight_error: total-variation distance between the equal component weights and
            the fraction of samples whose most likely component is c;
        sliced_wasserstein: sliced 2-Wasserstein distance to as many exact samples of
            p_t, over ``projections`` random directions (fixed seed);
        sliced_wasserstein_floor: the same distance between two independent exact sets,
            the statistical floor of the figure;
        label_accuracy (with ``labels``, a conditional run): the fraction of samples
            whose most likely component is their label.
        """
        samples = np.asarray(samples, dtype=np.float64)
        nearest = self.posterior(samples, np.full(len(samples), t)).argmax(axis=1)
        freq = np.bincount(nearest, minlength=self.components) / len(samples)
        exact = self.exact_samples(len(samples), t, seed)
        exact2 = self.exact_samples(2 * len(samples), t, seed + 1)[len(samples):]
        dirs = noise.gaussian(seed, noise.STREAM_REFERENCE, 1, 0, np.arange(projections), self.dim)
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        extra = {} if labels is None else {"label_accuracy": float(np.mean(nearest == np.asarray(labels)))}
        return {
            **extra,
            "weight_error": float(0.5 * np.abs(freq - self.weights).sum()),
            "component_fractions": freq,
            "sliced_wasserstein": sliced_wasserstein(samples, exact, dirs),
            "sliced_wasserstein_floor": sliced_wasserstein(exact2, exact, dirs),
        }


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, directions: np.ndarray) -> float:
    """sqrt(mean over directions of W_2^2 between the 1-D projections); equal sizes."""
    pa = np.sort(a @ directions.T, axis=0)
    pb = np.sort(b @ directions.T, axis=0)
    return float(np.sqrt(((pa - pb) ** 2).mean()))


def _erf(x):
    from math import erf
    return np.vectorize(erf)(x)
