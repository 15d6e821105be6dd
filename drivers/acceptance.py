"""The foundation's acceptance study: piadm-sde against sequential-sde on the GRF.

At the default grid, sweeps and tolerance, on the GRF target at d = 4096 with 256
samples: does piadm-sde reach the accuracy of sequential-sde on the same grid (radially
averaged power spectrum within 10% of the exact p_delta spectrum in every shell) with at
least 5x fewer rounds? Prints a table; run under MPI:

    mpiexec -n 2 .venv/bin/python drivers/acceptance.py [--dim 4096] [--num-samples 256]
"""
from __future__ import annotations

import argparse

import numpy as np

from hpc_picard.config import RunConfig
from hpc_picard.models import build_model
from hpc_picard.parallel import install_abort_handler, world
from hpc_picard.runner import run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--num-samples", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    install_abort_handler()
    comm = world()
    base = RunConfig(model="grf", dim=args.dim, num_samples=args.num_samples, seed=args.seed)
    base.validate(comm.size)
    model = build_model(base)
    rows = {}
    for sampler in ("sequential-sde", "piadm-sde"):
        cfg = base.replace(sampler=sampler)
        result = run(cfg, comm)
        if comm.rank == 0:
            acc = model.accuracy(result.samples, cfg.delta, cfg.seed)
            rows[sampler] = (result.stats, acc)
    if comm.rank != 0:
        return
    print(f"GRF d={args.dim}, {args.num_samples} samples, {comm.size} ranks; grid "
          f"{base.blocks} blocks x {base.steps_per_block} slices, K<={base.picard_iters}, tol={base.tol}")
    print(f"{'sampler':<16}{'rounds':>8}{'evals/sample':>14}{'wall s':>9}{'KL fit':>10}"
          f"{'KL floor':>10}{'max shell err':>15}")
    for name, (st, acc) in rows.items():
        print(f"{name:<16}{st['rounds']:>8}{st['evaluations']:>14}{st['wall_time']:>9.1f}"
              f"{acc['kl_gaussian_fit']:>10.3f}{acc['kl_noise_floor']:>10.3f}"
              f"{acc['spectrum_max_rel_error']:>15.4f}")
    seq, pic = rows["sequential-sde"], rows["piadm-sde"]
    ratio = seq[0]["rounds"] / pic[0]["rounds"]
    shells_ok = bool((pic[1]["spectrum_rel_error"] <= 0.10).all())
    print(f"round reduction: {ratio:.2f}x (goal >= 5x): {'PASS' if ratio >= 5 else 'FAIL'}")
    print(f"piadm spectrum within 10% in all {len(pic[1]['spectrum_shells'])} shells: "
          f"{'PASS' if shells_ok else 'FAIL'} (sequential: "
          f"{bool((seq[1]['spectrum_rel_error'] <= 0.10).all())})")
    print("per-shell relative error, piadm / sequential:")
    print("  " + " ".join(f"{k}:{a:.3f}/{b:.3f}" for k, a, b in zip(
        pic[1]["spectrum_shells"], pic[1]["spectrum_rel_error"], seq[1]["spectrum_rel_error"])))


if __name__ == "__main__":
    main()
