"""Counter-based Gaussian noise, keyed by (seed, stream, block, slice, sample).

Every Gaussian vector the samplers use is a pure function of its indices, drawn from a
Philox4x64 generator whose key is (seed, stream) and whose counter starts at
(0, sample, slice, block). A sample's noise is therefore the same whichever rank draws
it, however the slices and samples are split, and whichever sampler asks: this is what
makes "P ranks == one rank" and "K = M sweeps == the sequential sampler" hold to
round-off rather than in distribution.
"""
from __future__ import annotations

import numpy as np

# Independent streams for the different uses of noise in one run.
STREAM_INITIAL = 0      # Y_0 ~ N(0, I) at reverse time 0
STREAM_INCREMENT = 1    # xi_j of the SDE steps
STREAM_VELOCITY = 2     # V_0 of the Langevin corrector
STREAM_CORRECTOR = 3    # Brownian increments of the Langevin corrector
STREAM_REFERENCE = 4    # exact samples of analytic targets, for accuracy figures

_MASK = (1 << 64) - 1


def gaussian(seed: int, stream: int, block: int, slice_index: int, samples, dim: int,
             out: np.ndarray | None = None) -> np.ndarray:
    """Standard normal array of shape (len(samples), dim), float64 (into ``out`` if
    given: a C-contiguous float64 array of that shape).

    ``samples`` holds global sample indices: row i is the noise of sample samples[i].
    """
    samples = np.asarray(samples, dtype=np.int64)
    if out is None:
        out = np.empty((len(samples), dim), dtype=np.float64)
    bitgen = np.random.Philox(0)    # re-keyed below; constructing one per row is slow
    gen = np.random.Generator(bitgen)
    state = bitgen.state
    state["state"]["key"] = np.array([seed & _MASK, stream & _MASK], dtype=np.uint64)
    state["buffer_pos"] = 4         # discard any buffered output of the previous key
    state["has_uint32"] = 0
    for row, sample in enumerate(samples):
        state["state"]["counter"] = np.array([0, int(sample), slice_index, block], dtype=np.uint64)
        bitgen.state = state
        gen.standard_normal(out=out[row])
    return out


def gaussian_slices(seed: int, stream: int, block: int, slices, samples, dim: int,
                    out: np.ndarray | None = None, scale=None) -> np.ndarray:
    """Noise for several slices of one block: shape (len(slices), len(samples), dim),
    into ``out`` if given; ``scale``: a factor per slice, applied to each slice's noise
    as it is drawn (while it is in cache)."""
    slices = list(slices)
    if out is None:
        out = np.empty((len(slices), len(samples), dim), dtype=np.float64)
    for i, j in enumerate(slices):
        gaussian(seed, stream, block, j, samples, dim, out=out[i])
        if scale is not None:
            out[i] *= scale[i]
    return out
