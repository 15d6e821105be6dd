"""Score-model factories for the `--model module:factory` tests (importable as
`model_factories` with tests/ on sys.path).

The data law is X_0 ~ N(0, c^2 I), so p_t = N(0, v_t I) with v_t = c^2 e^{-2t} + 1 - e^{-2t}
and every quantity a network could predict is known exactly.
"""
import numpy as np
import torch

DATA_STD = 0.5


def variance(t, c=DATA_STD):
    return c**2 * np.exp(-2.0 * t) + -np.expm1(-2.0 * t)


def gaussian_score(x, t):
    """score(x, t) on numpy: (B, d), (B,) -> (B, d)."""
    return -x / variance(np.asarray(t))[:, None]


def make_callable():
    """A plain function: needs --dim."""
    return gaussian_score


def make_module(dim=16):
    """A torch module predicting eps, with its layout and prediction declared."""
    return GaussianNet(dim, prediction="epsilon")


def make_ddpm_clocked(dim=16):
    """A mistake check_model must catch: reads t as a DDPM timestep index 0..999."""
    return ForgetfulClockNet(dim)




class BareModel:
    """The documented contract and nothing more: dim and score (no parameters, no name)."""

    def __init__(self, dim=9):
        self.dim = dim

    def score(self, x, t):
        return gaussian_score(x, t).astype(x.dtype)


def make_bare():
    """A bare contract object of fixed d = 9 (takes no dim)."""
    return BareModel()


class GaussianNet(torch.nn.Module):
    """The exact network of the Gaussian data law for any prediction type."""

    def __init__(self, dim, prediction="score", c=DATA_STD):
        super().__init__()
        self.sample_shape = (dim,)
        self.prediction = prediction
        self.c = c
        self.calls = []

    def forward(self, x, t):
        self.calls.append(x.shape[0])
        t = t.double()[:, None]
        x = x.double()
        level = torch.exp(-2 * t)
        v = self.c**2 * level + 1 - level
        sig = torch.sqrt(1 - level)
        eps = sig * x / v
        x0 = self.c**2 * torch.exp(-t) * x / v
        out = {"score": -x / v, "epsilon": eps, "sample": x0,
               "v_prediction": torch.exp(-t) * eps - sig * x0}[self.prediction]
        return out.float()


class ForgetfulClockNet(GaussianNet):
    """Treats its time input as a DDPM index in 0..999 (t / 1000): the wrong clock."""

    def forward(self, x, t):
        return super().forward(x, t / 1000.0)
