"""Time one score evaluation of the analytic targets on a batch (one rank, numpy/scipy).

    .venv/bin/python drivers/bench_scores.py [--batch 256] [--repeats 5]

The foundation's goal: the GRF score at d = 2^16 on a batch of 256 well under a second.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from hpc_picard.models import GaussianMixture, GaussianRandomField


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'model':<6}{'d':>8}{'dtype':>9}{'batch':>7}{'best s':>9}{'Mnumbers/s':>12}")
    for model in (GaussianRandomField(2**16), GaussianRandomField(2**12), GaussianMixture(2**12)):
        for dtype in ("float64", "float32"):
            x = rng.standard_normal((args.batch, model.dim)).astype(dtype)
            t = np.full(args.batch, 0.3)
            model.score(x, t)                       # warm up (FFT plans, page faults)
            best = best_of(lambda: model.score(x, t), args.repeats)
            print(f"{model.name:<6}{model.dim:>8}{dtype:>9}{args.batch:>7}{best:>9.3f}"
                  f"{x.size / best / 1e6:>12.1f}")


if __name__ == "__main__":
    main()
