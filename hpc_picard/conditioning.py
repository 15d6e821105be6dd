"""Conditional sampling: a class label per sample, and classifier-free guidance.

The model contract's optional condition (docs/models.md): a conditional model has
``num_classes`` > 0 and is called as ``score(x, t, cond)``, where ``cond`` holds one
label per row of x, an int64 array (B,) of values in 0 .. num_classes - 1, or
:data:`NULL_LABEL` (-1) for "no label": the unconditional score, which a model trained
with label dropout gives through its null class. ``cond=None`` means every row is
unconditional. Labels are the first kind of condition; an embedding condition would
be a float array (B, k) with its own null row, and would travel the same way.

Which label each sample gets (``--labels``, :func:`parse_labels`) is fixed by the
configuration alone, so every rank resolves the same labels without communicating and
a sample keeps its label however the ranks split the samples (a sample's label is
keyed by its global index, like its noise).

Classifier-free guidance with scale w (``--guidance-scale``, Ho and Salimans 2022):

    s_w(x, t | c) = (1 + w) s(x, t | c) - w s(x, t)

The conditional and the unconditional rows go to the model as one batch of 2B rows
(:meth:`Condition.score`): one network call per chunk instead of two, and the pair
counts as two network rows in the statistics.
"""
from __future__ import annotations

import os
import re

import numpy as np

from .config import ConfigError

#: the label of an unconditional row (the null class of a model trained with dropout)
NULL_LABEL = -1
#: Philox stream of ``--labels random`` (apart from the sampler's noise streams)
LABEL_STREAM = 1 << 33
_LIST = re.compile(r"^\s*\d+(\s*-\s*\d+)?(\s*,\s*\d+(\s*-\s*\d+)?)*\s*$")


def parse_labels(spec: str) -> tuple:
    """The kind of a ``--labels`` value and its payload, or ConfigError.

    - ``""``: no labels (unconditional sampling): ("none", None);
    - ``random``: a label per sample drawn uniformly from the model's classes with
      the run's seed: ("random", None);
    - a list and/or ranges, ``3``, ``3,5,7``, ``0-9``, ``0-4,7``: ("list", labels);
    - anything else is a file of integer labels separated by white space or commas
      (``#`` starts a comment): ("list", labels).

    The labels are cycled over the samples: sample i gets labels[i % len(labels)]
    (so ``--labels 0-9 --num-samples 200`` gives 20 of each digit, in the order
    0, 1, ..., 9, 0, 1, ...; a file of num_samples labels gives one per sample).
    """
    spec = spec.strip()
    if not spec:
        return "none", None
    if spec == "random":
        return "random", None
    if _LIST.match(spec):
        return "list", _expand(spec, spec)
    if not os.path.isfile(spec):
        raise ConfigError(f"--labels {spec!r} is neither a list (3,5,7), a range (0-9), "
                          f"'random' nor an existing file")
    try:
        with open(spec) as fh:
            text = " ".join(line.split("#", 1)[0] for line in fh)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read --labels file {spec}: {exc}") from None
    words = text.replace(",", " ").split()
    if not words or not all(w.isdigit() for w in words):
        raise ConfigError(f"--labels file {spec} must hold non-negative integer labels "
                          f"separated by spaces, commas or newlines")
    return "list", np.array([int(w) for w in words], dtype=np.int64)


def _expand(text: str, spec: str) -> np.ndarray:
    labels = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        lo = int(lo)
        hi = int(hi) if hi.strip() else lo
        if hi < lo:
            raise ConfigError(f"--labels {spec!r}: range {part.strip()} runs backwards")
        labels.extend(range(lo, hi + 1))
    return np.array(labels, dtype=np.int64)


def resolve_labels(spec: str, num_samples: int, seed: int, num_classes: int) -> np.ndarray | None:
    """The label of every sample, (num_samples,) int64, or None for unconditional runs.

    ConfigError if the model takes no labels or a label is not one of its classes.
    """
    kind, labels = parse_labels(spec)
    if kind == "none":
        return None
    if num_classes <= 0:
        raise ConfigError("--labels needs a class-conditional model (num_classes > 0), "
                          "and this model takes no condition")
    if kind == "random":
        # sequential draws: sample i's label depends on the seed and i only
        rng = np.random.Generator(np.random.Philox(key=[seed, LABEL_STREAM]))
        return rng.integers(0, num_classes, num_samples, dtype=np.int64)
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.size:
        raise ConfigError(f"--labels: label {int(bad[0])} is not a class of this model "
                          f"(0 .. {num_classes - 1})")
    return labels[np.arange(num_samples) % len(labels)]


def check_guidance(scale: float, labels_spec: str):
    """ConfigError for a guidance scale that cannot be used (from RunConfig.validate)."""
    if not (np.isfinite(scale) and scale >= 0):
        raise ConfigError(f"--guidance-scale must be non-negative and finite, got {scale}")
    if scale > 0 and parse_labels(labels_spec)[0] == "none":
        raise ConfigError("--guidance-scale needs --labels: guidance pushes each sample "
                          "towards its label")


class Condition:
    """The labels of one rank's samples and the guidance scale: how a sampler's score
    rows become model calls.

    labels: (S,) int64, the label of each of the rank's samples (context.samples order);
    scale:  the guidance scale w (0: the conditional score alone).
    """

    def __init__(self, labels: np.ndarray, scale: float = 0.0):
        self.labels = np.asarray(labels, dtype=np.int64)
        self.scale = float(scale)

    @property
    def rows_per_state(self) -> int:
        """Network rows per score evaluation: 2 with guidance (the pair), else 1."""
        return 2 if self.scale > 0 else 1

    def score(self, model, x: np.ndarray, t: np.ndarray, samples: np.ndarray) -> np.ndarray:
        """Scores of rows x (B, d) at times t (B,); row i belongs to the rank's sample
        ``samples[i]`` (a position in ``labels``)."""
        labels = self.labels[samples]
        if self.scale == 0:
            return model.score(x, t, cond=labels)
        n = len(x)
        both = model.score(np.concatenate([x, x]), np.concatenate([t, t]),
                           cond=np.concatenate([labels, np.full(n, NULL_LABEL, dtype=np.int64)]))
        both = np.asarray(both, dtype=np.float64)
        return ((1.0 + self.scale) * both[:n] - self.scale * both[n:]).astype(x.dtype, copy=False)


def build_condition(config, model, samples: np.ndarray):
    """(Condition for the rank's ``samples`` or None, every sample's labels or None)."""
    labels = resolve_labels(config.labels, config.num_samples, config.seed,
                            int(getattr(model, "num_classes", 0) or 0))
    if labels is None:
        return None, None
    return Condition(labels[samples], config.guidance_scale), labels
