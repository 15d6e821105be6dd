"""Measure the costs the performance model needs and write them as a --perf-profile JSON.

    mpiexec -n 64 python drivers/profile_costs.py --model grf --dim 4096 --out costs.json

Rank 0 times the model's score calls at several batch sizes (the batch-cost curve),
a sweep's and a sequential step's arithmetic, noise generation and writing an output
file; then Exscan, Allreduce, Bcast and Allgather are timed on communicators of
2, 4, ... ranks up to the job's size, and a latency + bandwidth law is fitted at each
size (hpc_picard/perfmodel.py). Run it with the ranks, nodes and devices of the runs it
should predict. For oversubscribed cores, set the MPICH variables of
hpc_picard.emulation.QUIET_PROGRESS_ENV first (the job scripts do).
"""
from __future__ import annotations

import argparse
import sys

from hpc_picard.config import RunConfig
from hpc_picard.parallel import world
from hpc_picard.perfmodel import build_profile


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="grf")
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--rows", default="1,2,4,8,16,32,64,128,256,512,1024",
                        help="batch sizes (rows per score call) to time")
    parser.add_argument("--out", required=True, help="JSON file to write (rank 0)")
    args = parser.parse_args(argv)
    comm = world()
    config = RunConfig(model=args.model, dim=args.dim)
    rows = [int(r) for r in args.rows.split(",")]
    profile = build_profile(config, comm, rows_list=rows)
    if comm.rank == 0:
        with open(args.out, "w") as fh:
            fh.write(profile.to_json())
        print(f"profile_costs: {args.model} (d={profile.dim}) on {comm.size} rank(s) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
