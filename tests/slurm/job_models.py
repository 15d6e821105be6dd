"""Score models for the Slurm job tests (`--model job_models:...`, with tests/slurm on
PYTHONPATH). They are ScoreModels, not plain functions, so that picard-sample takes
them as they are and never imports torch: a job's start-up stays a few seconds.

The data law is X_0 ~ N(0, c^2 I), as in tests/model_factories.py."""
import os
import sys
import time

import numpy as np

from hpc_picard.models.base import ScoreModel

DATA_STD = 0.5


class GaussianScore(ScoreModel):
    """Exact score of p_t = N(0, v_t I), v_t = c^2 e^{-2t} + 1 - e^{-2t}; each call
    first sleeps ``pause`` seconds (wall time without CPU)."""

    def __init__(self, dim: int, pause: float = 0.0, name: str = "gaussian"):
        self.dim = int(dim)
        self.pause = pause
        self.name = name

    def score(self, x, t):
        if self.pause:
            time.sleep(self.pause)
        level = np.exp(-2.0 * np.asarray(t, dtype=np.float64))
        return (-x / (DATA_STD**2 * level + 1.0 - level)[:, None]).astype(x.dtype, copy=False)


def make_slow(dim):
    """Sleeps PICARD_TEST_SCORE_PAUSE seconds per call: a run long enough to outlast a
    one-minute allocation. The pause changes no bit of the samples."""
    return GaussianScore(dim, float(os.environ.get("PICARD_TEST_SCORE_PAUSE", "0")), "slow")


def make_binding_reporter(dim):
    """One stderr line per rank saying which GPU it was given (the GPU job script's
    bind-gpu.sh, run on CPUs)."""
    names = ("SLURM_PROCID", "SLURM_LOCALID", "CUDA_VISIBLE_DEVICES")
    sys.stderr.write("binding: " + " ".join(f"{n}={os.environ.get(n, '')}" for n in names) + "\n")
    sys.stderr.flush()
    return GaussianScore(dim)
