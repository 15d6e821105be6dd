"""Where the time of a sampling run goes: the sweep engine's benchmark (issue 8).

GRF at d = 4096, 64 samples, the default grid, sweeps and tolerance: sequential-sde on
2 ranks, piadm-sde on 1 and 2 ranks, paradigms (tol 0.05) on 2 ranks. For each run:
rounds, score evaluations per sample, wall time and its split into score, communication,
noise, set-up (imports, the model, loading the compiled kernels: the run's
``setup_time``) and the rest ("other": the samplers' own arithmetic, as in the
end-of-run table of picard-sample), with the accuracy of the samples (largest relative
error of the radially averaged power spectrum, KL of a Gaussian fit). Printed side by
side with the same table measured on main before the engine (the issue's "today" row,
whose "other" still held its set-up, not measured then). Each run is its own mpiexec;
run as

    .venv/bin/python drivers/bench_engine.py [--dim 4096] [--num-samples 64]
        [--array-backend numpy|torch] [--balance auto|on|off] [--phases N]

(`make bench` runs it). Timings depend on the machine's load: compare rows of one run.
``--phases N`` instead times one piadm-sde block (block 0, one process, no MPI) N times
and prints the fastest split into arithmetic, score and noise: a check of the engine's
arithmetic that a loaded machine disturbs less than whole runs.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

#: the issue's table, measured on main before the engine (GRF d=4096, 64 samples):
#: rounds, evaluations/sample, wall s, score %, comm %, noise %, other %
BEFORE = {
    ("sequential-sde", 2): (1024, 1024, 6.2, 56, 0, 36, 8),
    ("piadm-sde", 1): (121, 7744, 41.2, 60, 0, 11, 29),
    ("piadm-sde", 2): (121, 7744, 23.6, 54, 3, 9, 34),
    ("paradigms", 2): (75, 4727, 41.8, 19, 16, 13, 52),
}
RUNS = (("sequential-sde", 2), ("piadm-sde", 1), ("piadm-sde", 2), ("paradigms", 2))


def worker(args):
    """One run on this mpiexec's ranks; rank 0 prints one JSON line."""
    from hpc_picard.config import RunConfig
    from hpc_picard.models import build_model
    from hpc_picard.parallel import install_abort_handler, world
    from hpc_picard.runner import run

    install_abort_handler()
    comm = world()
    cfg = RunConfig(model="grf", dim=args.dim, num_samples=args.num_samples, seed=args.seed,
                    sampler=args.sampler, array_backend=args.array_backend,
                    balance=args.balance)
    cfg.validate(comm.size)
    result = run(cfg, comm)
    if comm.rank == 0:
        acc = build_model(cfg).accuracy(result.samples, cfg.delta, cfg.seed)
        st = result.stats
        print(json.dumps({"rounds": int(st["rounds"]), "evaluations": int(st["evaluations"]),
                          "wall": st["wall_time"], "score": st["score_time"],
                          "comm": st["communication_time"], "noise": st["noise_time"],
                          "setup": st["setup_time"],
                          "spectrum": float(acc["spectrum_max_rel_error"]),
                          "kl": float(acc["kl_gaussian_fit"])}))


def phases(args):
    """--phases N: one piadm-sde block, N times in one process; the fastest split."""
    import time

    import numpy as np

    from hpc_picard.arrays import make_backend
    from hpc_picard.config import RunConfig
    from hpc_picard.models import build_model
    from hpc_picard.parallel import Communicator
    from hpc_picard.runner import build_grid, initial_state
    from hpc_picard.samplers import SamplerContext, build_sampler

    from hpc_picard import arrays, kernels

    cfg = RunConfig(model="grf", dim=args.dim, num_samples=args.num_samples, seed=args.seed,
                    sampler="piadm-sde", array_backend=args.array_backend)
    cfg.validate(1)
    arrays.keep_freed_memory()          # as runner.run does
    model = build_model(cfg)
    samples = np.arange(cfg.num_samples)
    ctx = SamplerContext(model=model, comm=Communicator.self_comm(), samples=samples,
                         dtype=np.dtype(cfg.dtype), seed=cfg.seed,
                         backend=make_backend(cfg.array_backend, model))
    sampler = build_sampler(cfg, ctx)
    if ctx.backend.name == "numpy":
        kernels.warm_up(cfg.dtype)
    block, y0 = build_grid(cfg).blocks[0], initial_state(cfg, samples, cfg.dim)
    runs = []
    for _ in range(args.phases):
        score, noise = ctx.timers.score_seconds, ctx.timers.noise_seconds
        start = time.perf_counter()
        _, stats = sampler.run_block(block, y0)
        wall = time.perf_counter() - start
        score, noise = ctx.timers.score_seconds - score, ctx.timers.noise_seconds - noise
        runs.append((wall - score - noise, score, noise, wall))
    arithmetic, score, noise, wall = min(runs)
    print(f"piadm-sde block 0 (GRF d={args.dim}, {args.num_samples} samples, {stats.sweeps} "
          f"sweeps, {stats.evaluations} evaluations/sample), fastest of {args.phases}:")
    print(f"  arithmetic {1e3 * arithmetic:.0f} ms, score {1e3 * score:.0f} ms, noise "
          f"{1e3 * noise:.0f} ms, wall {1e3 * wall:.0f} ms; arithmetic "
          f"{100 * arithmetic / wall:.1f}% of wall")


def launch(args, sampler: str, ranks: int) -> dict:
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    cmd = [mpiexec, "-n", str(ranks), sys.executable, __file__, "--worker", "--sampler", sampler,
           "--dim", str(args.dim), "--num-samples", str(args.num_samples),
           "--seed", str(args.seed), "--array-backend", args.array_backend,
           "--balance", args.balance]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        sys.exit(f"bench run {sampler} on {ranks} ranks failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--num-samples", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--array-backend", default="numpy")
    parser.add_argument("--sampler", default=None)
    parser.add_argument("--balance", default="auto", choices=("auto", "on", "off"),
                        help="work stealing (--balance of picard-sample)")
    parser.add_argument("--phases", type=int, default=0,
                        help="time one piadm-sde block this many times instead (one process)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.phases:
        return phases(args)
    print(f"GRF d={args.dim}, {args.num_samples} samples, defaults (paradigms: tol 0.05), "
          f"array backend {args.array_backend}; 'before' = main before the sweep engine "
          f"(the issue's table)")
    head = (f"{'sampler, ranks':<20}{'':>7}{'rounds':>7}{'evals':>7}{'wall s':>8}{'score':>7}"
            f"{'comm':>6}{'noise':>7}{'setup':>7}{'other':>7}{'spec err':>10}{'KL fit':>8}")
    print(head)
    for sampler, ranks in RUNS:
        row = launch(args, sampler, ranks)
        wall = row["wall"]
        share = {k: 100.0 * row[k] / wall for k in ("score", "comm", "noise", "setup")}
        other = 100.0 - sum(share.values())
        label = f"{sampler}, {ranks}"
        b = BEFORE[(sampler, ranks)]
        print(f"{label:<20}{'before':>7}{b[0]:>7}{b[1]:>7}{b[2]:>8.1f}{b[3]:>6}%{b[4]:>5}%"
              f"{b[5]:>6}%{'-':>7}{b[6]:>6}%")
        print(f"{'':<20}{'now':>7}{row['rounds']:>7}{row['evaluations']:>7}{wall:>8.1f}"
              f"{share['score']:>6.1f}%{share['comm']:>5.1f}%{share['noise']:>6.1f}%"
              f"{share['setup']:>6.1f}%{other:>6.1f}%{row['spectrum']:>10.4f}{row['kl']:>8.4f}",
              flush=True)


if __name__ == "__main__":
    main()
