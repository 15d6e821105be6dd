"""Score models for the Slurm job tests (`--model job_models:...`, with tests/slurm on
PYTHONPATH). numpy only: a job's start-up must not wait for torch.

The data law is X_0 ~ N(0, c^2 I), as in tests/model_factories.py."""
import os
import sys
import time

import numpy as np

DATA_STD = 0.5


def gaussian_score(x, t):
    """score(x, t): (B, d), (B,) -> (B, d) of p_t = N(0, v_t I)."""
    level = np.exp(-2.0 * np.asarray(t))
    return -x / (DATA_STD**2 * level + 1.0 - level)[:, None]


def make_slow():
    """gaussian_score that sleeps PICARD_TEST_SCORE_PAUSE seconds per call: a run
    that takes wall time but no CPU, long enough to outlast a one-minute allocation.
    The pause changes no bit of the samples."""
    pause = float(os.environ.get("PICARD_TEST_SCORE_PAUSE", "0"))

    def slow_score(x, t):
        time.sleep(pause)
        return gaussian_score(x, t)
    return slow_score


def make_binding_reporter():
    """gaussian_score, after one stderr line per rank saying which GPU it was given
    (the GPU job script's bind-gpu.sh, run on CPUs)."""
    names = ("SLURM_PROCID", "SLURM_LOCALID", "CUDA_VISIBLE_DEVICES")
    sys.stderr.write("binding: " + " ".join(f"{n}={os.environ.get(n, '')}" for n in names) + "\n")
    sys.stderr.flush()
    return gaussian_score
