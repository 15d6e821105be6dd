"""Side-by-side comparison of the samplers on the digits demo model.

    OMP_NUM_THREADS=1 mpiexec -n P .venv/bin/python drivers/digits_compare.py \\
        [--num-samples 200] [--blocks 8] [--steps-per-block 16] [--tol 0.05] \\
        [--samplers sequential-sde,piadm-sde] [--window 16] [--corrector-steps 4] \\
        [--json results.json]

For each sampler: run on the launching communicator (all ranks), then on rank 0
score the samples with the digits quality figures (classifier confidence, class
balance, Frechet distance on classifier features against the real digits) and print
one markdown table row: quality, rounds (critical path), score evaluations per
sample, wall time. Every sampler sees the same grid, seed and initial noise, so the
rows differ only by the method. `--window` applies to paradigms and `--corrector-steps`
to piadm-ode (0 turns its corrector off); the settings column names what applies to a
row. Uses the public API only.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from hpc_picard.config import RunConfig  # noqa: E402
from hpc_picard.models import build_model  # noqa: E402
from hpc_picard.models.digits import DigitsQuality  # noqa: E402
from hpc_picard.parallel import install_abort_handler, world  # noqa: E402
from hpc_picard.runner import run  # noqa: E402
from hpc_picard.samplers import SAMPLERS  # noqa: E402

WANTED = ("sequential-sde", "piadm-sde", "piadm-ode", "paradigms")

HEADER = ("| sampler | settings | ranks | samples | confidence | balance | Frechet (floor) "
          "| rounds | evals/sample | wall s |\n|---|---|---|---|---|---|---|---|---|---|")


def settings(config):
    """The options that shape this sampler's run, as one table cell."""
    name = config.sampler
    if name.startswith("sequential"):
        return "-"
    parts = [f"tol {config.tol:g}"]
    if name.startswith("piadm"):
        parts.append(f"K {config.picard_iters}")
    if name == "piadm-ode":
        parts.append(f"corrector {config.corrector_steps}" if config.corrector_steps
                     else "corrector off")
    if name == "paradigms":
        parts.append(f"window {config.window}")
    return ", ".join(parts)


def start(base, comm, header: str):
    """(the model ``base`` names, warmed; rank 0's quality scorer, else None), after
    rank 0 printed the table header."""
    model = build_model(base)
    quality = DigitsQuality.shared() if comm.rank == 0 else None
    if comm.rank == 0:
        print(header, flush=True)
    # warm the network once so the first row does not pay torch's first-call costs
    model.score(np.zeros((2, 64)), np.ones(2))
    return model, quality


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", type=int, default=200)
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--steps-per-block", type=int, default=16)
    parser.add_argument("--picard-iters", type=int, default=16)
    parser.add_argument("--tol", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--window", type=int, default=RunConfig.window,
                        help="paradigms: slices per sliding window")
    parser.add_argument("--corrector-steps", type=int, default=RunConfig.corrector_steps,
                        help="piadm-ode: Langevin corrector slices (0: off)")
    parser.add_argument("--samplers", default=",".join(WANTED))
    parser.add_argument("--json", default=None, help="append the rows as JSON lines here")
    args = parser.parse_args(argv)

    install_abort_handler()
    comm = world()
    names = [n for n in args.samplers.split(",") if n in SAMPLERS]
    base = RunConfig(model="digits", num_samples=args.num_samples, blocks=args.blocks,
                     steps_per_block=args.steps_per_block, picard_iters=args.picard_iters,
                     tol=args.tol, seed=args.seed, window=args.window,
                     corrector_steps=args.corrector_steps, device="cpu", output=os.devnull)
    model, quality = start(base, comm, HEADER)
    for name in names:
        config = base.replace(sampler=name).validate(comm.size)
        comm.barrier()
        result = run(config, comm, model=model)
        if comm.rank != 0:
            continue
        q = quality.evaluate(result.samples)
        st = result.stats
        row = {"sampler": name, "settings": settings(config), "ranks": comm.size,
               "num_samples": args.num_samples,
               "blocks": args.blocks, "steps_per_block": args.steps_per_block, "tol": args.tol,
               "confidence": q["classifier_confidence"], "balance": q["class_balance"],
               "frechet": q["frechet_distance"], "frechet_floor": q["frechet_floor"],
               "rounds": st["rounds"], "evaluations": st["evaluations"],
               "wall_time": st["wall_time"]}
        print(f"| {name} | {row['settings']} | {comm.size} | {args.num_samples} | "
              f"{row['confidence']:.3f} | "
              f"{row['balance']:.3f} | {row['frechet']:.2f} ({row['frechet_floor']:.2f}) | "
              f"{row['rounds']} | {row['evaluations']} | {row['wall_time']:.1f} |", flush=True)
        if args.json:
            with open(args.json, "a") as fh:
                fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
