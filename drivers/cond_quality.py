"""Guided sampling of the class-conditional digits model: quality and rounds against w.

    OMP_NUM_THREADS=1 mpiexec -n P .venv/bin/python drivers/cond_quality.py \\
        [--num-samples 200] [--labels 0-9] [--guidance-scales 0,1,2,4] \\
        [--samplers sequential-sde,piadm-sde,paradigms] [--tol 0.05] [--window 16] \\
        [--json cond.json]

For each guidance scale w and sampler: run ``--model digits-cond`` on the launching
communicator with the labels cycled over the samples, then on rank 0 score the samples
with the independent classifier (hpc_picard.models.digits.DigitsQuality): the fraction
assigned to the requested label (overall and per label), confidence, and the Frechet
distance of the classifier features to the real digits. Prints one markdown row per
run and, per w, the per-label accuracies of each sampler. Every run sees the same grid,
seed, labels and initial noise, so rows at one w differ only by the method.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from digits_compare import settings, start  # noqa: E402
from hpc_picard.config import RunConfig  # noqa: E402
from hpc_picard.parallel import install_abort_handler, world  # noqa: E402
from hpc_picard.runner import run  # noqa: E402

HEADER = ("| w | sampler | settings | label accuracy | confidence | Frechet (floor) | rounds "
          "| evals/sample | network rows/sample | wall s |\n"
          "|---|---|---|---|---|---|---|---|---|---|")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", type=int, default=200)
    parser.add_argument("--labels", default="0-9")
    parser.add_argument("--guidance-scales", default="0,1,2,4")
    parser.add_argument("--samplers", default="sequential-sde,piadm-sde,paradigms")
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--steps-per-block", type=int, default=16)
    parser.add_argument("--picard-iters", type=int, default=16)
    parser.add_argument("--tol", type=float, default=0.05)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="append the rows as JSON lines here")
    args = parser.parse_args(argv)

    install_abort_handler()
    comm = world()
    base = RunConfig(model="digits-cond", num_samples=args.num_samples, labels=args.labels,
                     blocks=args.blocks, steps_per_block=args.steps_per_block,
                     picard_iters=args.picard_iters, tol=args.tol, window=args.window,
                     seed=args.seed, device="cpu", output=os.devnull)
    model, quality = start(base, comm, HEADER)
    per_label = []
    for w in (float(v) for v in args.guidance_scales.split(",")):
        for name in args.samplers.split(","):
            config = base.replace(sampler=name, guidance_scale=w).validate(comm.size)
            comm.barrier()
            result = run(config, comm, model=model)
            if comm.rank != 0:
                continue
            q = quality.evaluate(result.samples, result.labels)
            st = result.stats
            rows = st["evaluations"] * st["network_rows_per_evaluation"]
            row = {"guidance_scale": w, "sampler": name, "settings": settings(config),
                   "ranks": comm.size, "num_samples": args.num_samples,
                   "label_accuracy": q["label_accuracy"],
                   "label_accuracy_per_class": q["label_accuracy_per_class"].tolist(),
                   "confidence": q["classifier_confidence"], "frechet": q["frechet_distance"],
                   "frechet_floor": q["frechet_floor"], "rounds": st["rounds"],
                   "evaluations": st["evaluations"], "network_rows": rows,
                   "wall_time": st["wall_time"]}
            per_label.append(row)
            print(f"| {w:g} | {name} | {row['settings']} | {row['label_accuracy']:.3f} | "
                  f"{row['confidence']:.3f} | {row['frechet']:.2f} ({row['frechet_floor']:.2f}) | "
                  f"{row['rounds']} | {row['evaluations']} | {rows} | {row['wall_time']:.1f} |",
                  flush=True)
            if args.json:
                with open(args.json, "a") as fh:
                    fh.write(json.dumps(row) + "\n")
    if comm.rank == 0:
        print("\n| w | sampler | " + " | ".join(str(c) for c in range(10)) + " |\n"
              + "|---" * 12 + "|")
        for row in per_label:
            cells = " | ".join(f"{a:.2f}" for a in row["label_accuracy_per_class"])
            print(f"| {row['guidance_scale']:g} | {row['sampler']} | {cells} |")


if __name__ == "__main__":
    main()
