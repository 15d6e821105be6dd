"""The underdamped Langevin corrector of PIADM-ODE, parallelised by Picard sweeps.

At the end of a predictor block (forward time t), the corrector runs underdamped
Langevin dynamics that leave p_t x N(0, I) invariant (docs/samplers.md):

    dX = V dr,   dV = [ -gamma V + s(X, t) ] dr + sqrt(2 gamma) dB,   V_0 ~ N(0, I).

Write Z = (X, V) and A = [[0, 1], [0, -gamma]] (the same 2 x 2 matrix for every
coordinate). With the score frozen at the start of a slice of length h, the step is
exact in the linear part:

    Z' = e^{A h} Z + Phi(h) (0, s) + w,   Phi(h) = int_0^h e^{A u} du,   w ~ N(0, Q(h)),
    Q(h) = int_0^h e^{A u} diag(0, 2 gamma) e^{A^T u} du.

Unrolled with the integrating factor e^{-A tau} this is the same prefix sum as the
predictor's, on 2d-vectors:

    Z_m = e^{A tau_m} ( Z_0 + sum_{j<m} G_j ),   G_j = e^{-A tau_{j+1}} [ Phi_j (0, s_j) + w_j ].

The corrector's slices are spread over the time communicator's ranks exactly like a
block's slices; its noise comes from STREAM_VELOCITY (V_0) and STREAM_CORRECTOR (w_j),
keyed by block and slice, so the result does not depend on the rank count.

Stability near the data end: there the score's Lipschitz constant L can grow like
1 / (2t), and a frozen-score step of length h stays accurate while h sqrt(L) is small.
The corrector's slice length is therefore capped at sqrt(t) / 2 (h sqrt(L) <= 0.35 even
for the stiffest modes): for a block ending at forward time t the corrector runs for
min(duration, steps * sqrt(t) / 2). In the bulk the options are used as given.

Bias: with the score frozen over a slice, the corrector's stationary law is off by O(h)
(about 2% of a Gaussian mode's variance with 4 slices over time 1, 0.5% with 16).
That bias does not shrink as the predictor is refined (docs/results.md).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import noise
from ..process import step_noise_scale

#: the corrector's slice length is at most this times sqrt(t) (see the module docstring)
MAX_STEP_PER_SQRT_T = 0.5


def propagator(tau, friction: float) -> np.ndarray:
    """e^{A tau} for A = [[0, 1], [0, -gamma]], any sign of tau: shape tau.shape + (2, 2)."""
    tau = np.asarray(tau, dtype=np.float64)
    out = np.zeros(tau.shape + (2, 2))
    out[..., 0, 0] = 1.0
    out[..., 0, 1] = -np.expm1(-friction * tau) / friction
    out[..., 1, 1] = np.exp(-friction * tau)
    return out


@dataclass(frozen=True)
class CorrectorSlices:
    """The corrector's uniform slices and the matrices of its prefix sum.

    growth: e^{A tau_m}, m = 0..M, shape (M+1, 2, 2);
    drift:  e^{-A tau_{j+1}} Phi_j (0, 1)^T, the weight of s_j in G_j, shape (M, 2);
    noise:  e^{-A tau_{j+1}} chol(Q_j), the weight of the unit normals of w_j, (M, 2, 2);
    step:   the slice length h (reverse time), friction: gamma.
    """
    growth: np.ndarray
    drift: np.ndarray
    noise: np.ndarray
    step: float
    friction: float

    @classmethod
    def build(cls, steps: int, duration: float, friction: float) -> "CorrectorSlices":
        h = duration / steps
        g = friction
        tau = h * np.arange(steps + 1)
        decay = propagator(-tau[1:], g)                                # (M, 2, 2)
        f1 = -np.expm1(-g * h) / g                                     # int_0^h e^{-g u} du
        f2 = -np.expm1(-2.0 * g * h) / (2.0 * g)                       # int_0^h e^{-2 g u} du
        phi = np.array([(h - f1) / g, f1])                             # Phi(h) (0, 1)^T
        q11 = 2.0 / g * (h - 2.0 * f1 + f2)
        q12 = 2.0 * (f1 - f2)
        q22 = -np.expm1(-2.0 * g * h)
        l11 = np.sqrt(max(q11, 0.0))
        l21 = q12 / l11 if l11 > 0 else 0.0
        chol = np.array([[l11, 0.0], [l21, np.sqrt(max(q22 - l21 * l21, 0.0))]])
        return cls(growth=propagator(tau, g), drift=decay @ phi, noise=decay @ chol,
                   step=h, friction=g)


class LangevinCorrector:
    """Underdamped Langevin corrector run by Picard sweeps over its own slices.

    steps:     corrector slices M_c (> 0);
    duration:  its reverse-time length (capped near the data end);
    friction:  gamma;
    sweeps:    most Picard sweeps (at most M_c are useful), tol: the stopping rule of
               the predictor, with the residual of X normalised by e^{2h} - 1.
    """

    def __init__(self, steps: int, duration: float, friction: float, sweeps: int, tol: float):
        self.steps = int(steps)
        self.duration = float(duration)
        self.friction = float(friction)
        self.sweeps = min(int(sweeps), self.steps)
        self.tol = float(tol)

    def slices_at(self, t: float) -> CorrectorSlices:
        """The corrector's slices for a block ending at forward time t."""
        duration = min(self.duration, self.steps * MAX_STEP_PER_SQRT_T * np.sqrt(t))
        return CorrectorSlices.build(self.steps, duration, self.friction)

    def run(self, sampler, block, x_in: np.ndarray):
        """Correct the block-end state x_in, shape (S, d), same on every time rank.

        Returns (corrected X, shape (S, d), identical on every rank; sweeps; score
        evaluations per sample). The sweeps are the engine's (engine.py) on (X, V)
        pairs: 2 components, the score evaluated at X.
        """
        ctx = sampler.ctx
        t = float(block.times[-1])
        sl = self.slices_at(t)
        S, d = x_in.shape
        engine = sampler.engine((S, d), components=2)
        lo, hi = engine.assign(self.steps)
        # w_j: 2d unit normals per slice and sample, the first d for X, the last d for V.
        zeta = noise.gaussian_slices(ctx.seed, noise.STREAM_CORRECTOR, block.index,
                                     range(lo, hi), ctx.samples, 2 * d).reshape(hi - lo, S, 2, d)
        fixed = np.einsum("jab,jsbd->jasd", sl.noise[lo:hi], zeta)          # (owned, 2, S, d)
        z0 = np.stack([np.asarray(x_in, dtype=np.float64),
                       noise.gaussian(ctx.seed, noise.STREAM_VELOCITY, block.index, 0,
                                      ctx.samples, d)])                      # (2, S, d)
        engine.start(z0, growth=sl.growth, weight=sl.drift,
                     scale=np.full(self.steps, float(step_noise_scale(sl.step)) * d),
                     fixed=fixed, tol=self.tol,
                     describe=lambda j: f"block {block.index}, corrector slice {j} "
                                        f"(forward time t={t:.6g})")
        times = np.full(self.steps, t)
        while engine.sweeps < self.sweeps and not engine.done:
            x, slices = engine.pending()
            engine.sweep(sampler.evaluate(x, times[slices.start:slices.stop],
                                          engine.score_buffer(len(slices))))
        end = engine.backend.to_host(engine.end()[0])
        return end, engine.sweeps, engine.evaluations
