"""Plain vs. Anderson-mixed Picard sweeps, constant vs. noise-only initial guess.

On the GRF (fixed grid and noise), the fixed point of the sweeps is the sequential
sampler's output on the same grid and noise. For each variant this prints

- the fewest sweeps per block K (the same in every block, tol = 0) whose output is
  within a relative distance 1e-2, 1e-4, 1e-6 of that fixed point, and rounds = N K;
- with the adaptive stopping rule (--tol), the rounds used and the distance reached.

    python drivers/sweep_acceleration.py [--dim 1024] [--samples 8]
"""
from __future__ import annotations

import argparse

import numpy as np

from hpc_picard.config import RunConfig
from hpc_picard.parallel import Communicator
from hpc_picard.runner import run

LEVELS = (1e-2, 1e-4, 1e-6)
VARIANTS = [("none", "constant"), ("none", "noise"), ("anderson", "constant"),
            ("anderson", "noise")]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--blocks", type=int, default=12)
    parser.add_argument("--slices", type=int, default=32)
    args = parser.parse_args()
    comm = Communicator.self_comm()
    base = dict(model="grf", dim=args.dim, num_samples=args.samples, blocks=args.blocks,
                steps_per_block=args.slices, tol=0.0, output="unused.h5")

    def sample(**options):
        return run(RunConfig(**{**base, **options}), comm)

    print(f"GRF d={args.dim}, {args.blocks} blocks x {args.slices} slices, "
          f"{args.samples} samples; rounds to reach a relative distance to the fixed point")
    header = "path  accelerate guess     " + " ".join(f"{lvl:>8.0e}" for lvl in LEVELS)
    header += "   tol=0.1: rounds, distance   tol=0.01: rounds, distance"
    print(header)
    for path in ("sde", "ode"):
        extra = {"corrector_steps": 0} if path == "ode" else {}
        reference = sample(sampler=f"sequential-{path}").samples
        norm = np.linalg.norm(reference)
        for accelerate, guess in VARIANTS:
            if path == "ode" and guess == "noise":
                continue            # the ODE has no noise-only trajectory: refused
            options = dict(sampler=f"piadm-{path}", accelerate=accelerate,
                           initial_guess=guess, **extra)
            distance = {}
            for k in range(1, args.slices + 1):
                y = sample(picard_iters=k, **options).samples
                distance[k] = np.linalg.norm(y - reference) / norm
                if distance[k] <= LEVELS[-1]:
                    break
            cells = []
            for level in LEVELS:
                ks = [k for k, err in distance.items() if err <= level]
                cells.append(f"{args.blocks * ks[0] if ks else '-':>8}")
            adaptive = []
            for tol in (0.1, 0.01):
                result = sample(picard_iters=args.slices, **{**options, "tol": tol})
                adaptive.append(f"{result.stats['rounds']:>5}, "
                                f"{np.linalg.norm(result.samples - reference) / norm:8.1e}")
            print(f"{path:<5} {accelerate:<10} {guess:<9} " + " ".join(cells) + "   "
                  + "        ".join(adaptive), flush=True)


if __name__ == "__main__":
    main()
