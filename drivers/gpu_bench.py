"""A short GPU benchmark for `make gpu-check`: score throughput on CPU and GPU, and a
small digits run on the GPU with sequential-sde against piadm-sde.

    .venv/bin/python drivers/gpu_bench.py

Prints one line per measurement; without a CUDA device it says so and exits 0.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from hpc_picard.config import RunConfig  # noqa: E402
from hpc_picard.models import build_model  # noqa: E402
from hpc_picard.parallel import Communicator  # noqa: E402
from hpc_picard.runner import run  # noqa: E402


def rate(model, rows, repeats=3):
    """Score evaluations per second (rows of d numbers) for a batch of ``rows``."""
    x = np.random.default_rng(0).standard_normal((rows, model.dim))
    t = np.full(rows, 0.5)
    model.score(x[:8], t[:8])                       # warm-up: kernels, plans, allocator
    start = time.perf_counter()
    for _ in range(repeats):
        model.score(x, t)
    return repeats * rows / (time.perf_counter() - start)


def main():
    try:
        import torch
        have_cuda = torch.cuda.is_available()
    except ImportError:
        have_cuda = False
    if not have_cuda:
        print("gpu_bench: no CUDA device visible (or no CUDA build of torch): nothing to measure")
        return
    print(f"gpu_bench: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    cpu = build_model(RunConfig(model="digits"), device="cpu")
    gpu = build_model(RunConfig(model="digits"), device="cuda:0")
    for rows in (256, 4096, 65536):
        print(f"digits score rows={rows:6d}: cpu {rate(cpu, rows):12.0f}/s   gpu {rate(gpu, rows):12.0f}/s")
    try:
        import cupy  # noqa: F401
        grf_gpu = build_model(RunConfig(model="grf", dim=4096), device="cuda:0")
        grf_cpu = build_model(RunConfig(model="grf", dim=4096), device="cpu")
        print(f"grf d=4096 score rows=1024: cpu {rate(grf_cpu, 1024):10.0f}/s   "
              f"gpu {rate(grf_gpu, 1024):10.0f}/s")
    except ImportError:
        print("grf: cupy not installed, GPU FFT score not measured")
    for sampler in ("sequential-sde", "piadm-sde"):
        config = RunConfig(model="digits", num_samples=1000, sampler=sampler, blocks=8,
                           steps_per_block=16, device="cuda", output=os.devnull).validate()
        result = run(config, Communicator.self_comm(), model=gpu)
        st = result.stats
        print(f"digits 1000 samples on GPU, {sampler:15s}: rounds {st['rounds']:4d}  "
              f"wall {st['wall_time']:.2f} s (score {st['score_time']:.2f} s)")


if __name__ == "__main__":
    main()
