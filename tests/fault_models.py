"""Broken score-model factories for the fault tests (numpy only, importable as
`fault_models` with tests/ on sys.path). Each is wrong in one documented way."""
import numpy as np


def _unit_gaussian(x, t):
    return -np.asarray(x)


def make_nan(dim):
    """Right shape and dtype, but NaN everywhere: the sampler must stop (exit 1)."""
    def score(x, t):
        return np.full_like(x, np.nan)
    return score


def make_none():
    """Forgets to return its model."""
    return None


def make_needs_everything(dim, width, depth):
    """Declares arguments the CLI cannot give."""
    return _unit_gaussian


def make_wrong_shape(dim):
    """Drops the last coordinate of every score."""
    def score(x, t):
        return -np.asarray(x)[:, :-1]
    return score


def make_float16(dim):
    """Scores in half precision."""
    def score(x, t):
        return (-np.asarray(x)).astype(np.float16)
    return score


class _Fixed:
    """A score model with its own dimension."""

    def __init__(self, dim):
        self.dim = dim

    def score(self, x, t):
        return -np.asarray(x)


def make_dim_9():
    return _Fixed(9)


def make_raises(dim):
    raise RuntimeError("weights file missing")


def make_gated(dim):
    """A correct score that waits until a file named "release" appears in the working
    directory (at most 30 s): keeps a job running for exactly as long as a test needs."""
    import os
    import time

    def score(x, t):
        deadline = time.monotonic() + 30
        while not os.path.exists("release") and time.monotonic() < deadline:
            time.sleep(0.02)
        return -np.asarray(x)
    return score
