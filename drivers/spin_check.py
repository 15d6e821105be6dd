"""Does MPICH busy-wait on oversubscribed cores? Measured with and without the settings
of hpc_picard.emulation.QUIET_PROGRESS_ENV.

    python drivers/spin_check.py --ranks 8,16

Rank 0 does a fixed piece of numpy work while every other rank waits in MPI_Barrier;
with more ranks than cores, waiting ranks that spin take the cores from rank 0 and its
work takes longer. Prints rank 0's seconds per configuration (one rank: the reference).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


def work_seconds() -> float:
    import numpy as np
    x = np.random.default_rng(0).random((200, 200))
    start = time.perf_counter()
    for _ in range(300):
        x = x @ x
        x /= np.abs(x).max()
    return time.perf_counter() - start


def rank_main():
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    for _ in range(8):              # past MPICH's switch to its shared-memory collectives
        comm.Barrier()
    seconds = work_seconds() if comm.rank == 0 else 0.0
    comm.Barrier()
    if comm.rank == 0:
        print(f"{seconds:.3f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", default="8,16")
    parser.add_argument("--rank", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rank:
        rank_main()
        return 0
    from hpc_picard.emulation import QUIET_PROGRESS_ENV
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    base = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    print(f"{'ranks':>5}  {'MPICH settings':<44} rank 0 work [s]")
    for n in [1] + [int(r) for r in args.ranks.split(",")]:
        for label, env in (("default (busy polling)", base),
                           (" ".join(f"{k}={v}" for k, v in QUIET_PROGRESS_ENV.items()),
                            dict(base, **QUIET_PROGRESS_ENV))):
            out = subprocess.run([mpiexec, "-n", str(n), sys.executable, os.path.abspath(__file__),
                                  "--rank"], env=env, capture_output=True, text=True, timeout=300)
            print(f"{n:>5}  {label:<44} {out.stdout.strip() or out.stderr.strip()[-80:]}", flush=True)
            if n == 1:
                break
    return 0


if __name__ == "__main__":
    sys.exit(main())
