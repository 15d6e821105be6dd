"""Wavefront PIADM against sequential-sde, blockwise piadm-sde and paradigms on the GRF.

For each d: every sampler on the same grid and noise (the run's --blocks x
--steps-per-block slices), 64 samples by default. Prints rounds, evaluations per
sample, the relative distance to sequential-sde's samples (the fixed point of every
parallel sampler here) and the largest relative error of the radially averaged power
spectrum over the shells (goal: 10%). Run under MPI or alone:

    python drivers/wavefront_grf.py [--dims 1024 4096] [--num-samples 64]
"""
from __future__ import annotations

import argparse

import numpy as np

from hpc_picard.config import RunConfig
from hpc_picard.models import build_model
from hpc_picard.parallel import install_abort_handler, world
from hpc_picard.runner import run

PLANS = (
    ("sequential-sde", {}),
    ("piadm-sde", {}),
    ("paradigms", {}),
    ("piadm-sde wavefront", {"schedule": "wavefront"}),
)


def parse_plan(text: str):
    """name:key=value,key=value (extra wavefront rows, e.g. W=2 or linear part exp)."""
    name, _, rest = text.partition(":")
    options = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        options[key] = int(value) if value.lstrip("-").isdigit() else (
            float(value) if value.replace(".", "", 1).isdigit() else value)
    return name, options


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--num-samples", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=16)
    parser.add_argument("--steps-per-block", type=int, default=64)
    parser.add_argument("--skip", nargs="*", default=[], help="labels of the default rows to leave out")
    parser.add_argument("--extra", nargs="*", default=[],
                        help="more rows: 'label:key=value,...' (RunConfig fields)")
    args = parser.parse_args()
    install_abort_handler()
    comm = world()
    plans = [p for p in PLANS if p[0] not in args.skip] + [parse_plan(e) for e in args.extra]
    for d in args.dims:
        base = RunConfig(model="grf", dim=d, num_samples=args.num_samples, blocks=args.blocks,
                         steps_per_block=args.steps_per_block, output="unused.h5")
        base.validate(comm.size)
        model = build_model(base)
        reference = None
        if comm.rank == 0:
            print(f"GRF d={d}, {args.num_samples} samples, {comm.size} ranks, grid {args.blocks} x "
                  f"{args.steps_per_block}, tol {base.tol}")
            print(f"| sampler | rounds | evals/sample | rel. distance to sequential | max shell error |")
            print("|---|---|---|---|---|")
        for label, options in plans:
            sampler = label.split()[0]
            cfg = base.replace(sampler=sampler, **options)
            cfg.validate(comm.size)
            result = run(cfg, comm, model=model)
            if comm.rank != 0:
                continue
            if reference is None:
                reference = result.samples
            distance = np.linalg.norm(result.samples - reference) / np.linalg.norm(reference)
            acc = model.accuracy(result.samples, cfg.delta, cfg.seed)
            print(f"| {label} {' '.join(f'{k}={v}' for k, v in options.items() if k != 'schedule')} "
                  f"| {result.stats['rounds']} | {result.stats['evaluations']} | {distance:.1e} "
                  f"| {acc['spectrum_max_rel_error']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
