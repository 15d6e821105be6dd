"""The score-model contract.

A score model is anything with

    dim: int                       data dimension d
    score(x, t) -> array           x: (B, d) states, t: (B,) forward times (float64);
                                   returns grad log p_t(x), shape (B, d), dtype of x

in the project's clock (docs/method.md): forward time t, p_t the law of the
unit-rate OU process started from the data.

A conditional model also has ``num_classes`` > 0 and takes ``score(x, t, cond)``:
cond (B,) int64 holds each row's class label, -1 for "no label" (the unconditional
score); cond None means no labels at all (hpc_picard.conditioning). Analytic targets also know their exact
marginals and can score a batch of samples against them.
"""
from __future__ import annotations

import numpy as np


class ScoreModel:
    """Base class: subclasses set ``dim`` and implement :meth:`score`."""

    name = "model"
    dim: int
    #: class labels the model is conditioned on (0: an unconditional model)
    num_classes: int = 0

    def score(self, x: np.ndarray, t: np.ndarray, cond=None) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def parameters(self) -> dict:
        """Defining parameters, written to the output file's ``model/`` group.

        Scalars become attributes, arrays become datasets.
        """
        return {}


class AdoptedModel(ScoreModel):
    """A user's object that meets the contract (``dim`` and ``score``, nothing more
    required) seen as a :class:`ScoreModel`.

    ``parameters()`` is the object's own if it returns a dict (a torch module's
    ``parameters()`` is its tensors, not that), else {}; every other attribute a
    caller looks for (``accuracy``, ``image_shape``, ``preferred_batch``) is the
    object's, so optional extras keep working.
    """

    def __init__(self, inner):
        self.inner = inner
        self.dim = checked_dim(inner.dim, type(inner).__name__)
        self.name = str(getattr(inner, "name", type(inner).__name__))
        # a class attribute here, so __getattr__ would not reach the object's own
        self.num_classes = int(getattr(inner, "num_classes", 0) or 0)

    def score(self, x, t, cond=None):
        return self.inner.score(x, t) if cond is None else self.inner.score(x, t, cond=cond)

    def parameters(self) -> dict:
        own = getattr(self.inner, "parameters", None)
        values = own() if callable(own) else None
        return dict(values) if isinstance(values, dict) else {}

    def __getattr__(self, name):
        # only reached when normal lookup fails: the optional extras of the user's object
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


def checked_dim(dim, owner: str) -> int:
    """``dim`` as a positive int, or ValueError naming the model."""
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim <= 0:
        raise ValueError(f"model {owner} has dim = {dim!r}; it must be a positive integer")
    return int(dim)


def score_model(obj) -> ScoreModel:
    """The one boundary between what users hand in and the rest of the package: a
    ScoreModel as it is, anything with ``dim`` and ``score`` wrapped (AdoptedModel).
    Samplers, checkpoints and the output then see one type."""
    if isinstance(obj, ScoreModel):
        checked_dim(getattr(obj, "dim", None), type(obj).__name__)
        return obj
    if hasattr(obj, "score") and hasattr(obj, "dim"):
        return AdoptedModel(obj)
    raise TypeError(f"{type(obj).__name__} is not a score model: it needs dim and score(x, t)")


class AnalyticTarget(ScoreModel):
    """A target whose marginals p_t are known in closed form at every noise level."""

    def log_density(self, x: np.ndarray, t: float) -> np.ndarray:  # pragma: no cover
        """log p_t(x) for a batch x of shape (B, d); returns shape (B,)."""
        raise NotImplementedError

    def exact_samples(self, num: int, t: float, seed: int) -> np.ndarray:  # pragma: no cover
        """num exact draws from p_t, shape (num, d), float64, reproducible from seed."""
        raise NotImplementedError

    def accuracy(self, samples: np.ndarray, t: float, seed: int) -> dict:  # pragma: no cover
        """Accuracy figures of samples against p_t: name -> float or array."""
        raise NotImplementedError


def digamma(x: float) -> float:
    """psi(x) for x > 0, by upward recurrence and the asymptotic series (rel. err < 1e-12)."""
    result = 0.0
    while x < 8.0:
        result -= 1.0 / x
        x += 1.0
    inv = 1.0 / x
    inv2 = inv * inv
    return result + np.log(x) - 0.5 * inv - inv2 * (1.0 / 12 - inv2 * (1.0 / 120 - inv2 / 252))


def gaussian_fit_kl_floor(num_samples: int) -> float:
    """Expected KL(N(0, v_hat) || N(0, v)) of a zero-mean variance fit to exact samples.

    v_hat / v ~ chi^2_n / n, so E[KL] = (log(n / 2) - psi(n / 2)) / 2 per dimension,
    about 1 / (2n): the statistical floor of the per-mode KL figure.
    """
    n = float(num_samples)
    return 0.5 * (np.log(n / 2.0) - digamma(n / 2.0))
