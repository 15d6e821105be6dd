"""Where a run's communication time goes: waiting for other ranks vs moving data.

Every collective of hpc_picard goes through ``Communicator._timed``. This driver wraps
it so that each collective call first waits at a barrier (the time until the slowest
rank arrives: load imbalance) and is then timed alone (the transfer itself), summed per
MPI call. Point-to-point calls (work stealing's receives and waits, which one rank makes
alone) are timed whole, their waits included, in the "transfer" column.
The barrier adds a little time of its own, so compare the two columns, not the total
with an unwrapped run. Run as

    .venv/bin/mpiexec -n 2 .venv/bin/python drivers/comm_breakdown.py [--sampler paradigms]
        [--dim 4096] [--num-samples 64]

(GRF, defaults otherwise). Rank by rank, it prints wall, score, noise and
communication time, and per MPI call: calls, wait s, transfer s.
"""
from __future__ import annotations

import argparse
import collections
import time


#: calls one rank makes alone (work stealing's messages): timed whole, as "transfer"
POINT_TO_POINT = {"Recv", "Waitany", "Waitall"}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sampler", default="paradigms")
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--num-samples", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from hpc_picard.config import RunConfig
    from hpc_picard.parallel import comm as comm_module
    from hpc_picard.parallel import install_abort_handler, world
    from hpc_picard.runner import run

    waits, transfers, calls = collections.Counter(), collections.Counter(), collections.Counter()
    timed = comm_module.Communicator._timed

    def split_timed(self, fn, *call_args):
        name = getattr(fn, "__name__", str(fn))
        started = time.perf_counter()
        if name not in POINT_TO_POINT:      # a barrier in one rank's receive would hang
            self.comm.Barrier()
        arrived = time.perf_counter()
        try:
            return timed(self, fn, *call_args)
        finally:
            waits[name] += arrived - started
            transfers[name] += time.perf_counter() - arrived
            calls[name] += 1

    comm_module.Communicator._timed = split_timed
    install_abort_handler()
    comm = world()
    cfg = RunConfig(model="grf", dim=args.dim, num_samples=args.num_samples, seed=args.seed,
                    sampler=args.sampler)
    cfg.validate(comm.size)
    stats = run(cfg, comm).stats
    lines = [f"rank {comm.rank}: wall {stats['wall_time']:.2f} s, score {stats['score_time']:.2f} s, "
             f"noise {stats['noise_time']:.2f} s, communication {stats['communication_time']:.2f} s"]
    for name in sorted(calls):
        lines.append(f"  {name:<10} calls {calls[name]:>5}  wait {waits[name]:7.2f} s  "
                     f"transfer {transfers[name]:7.2f} s")
    for text in comm.allgather_obj("\n".join(lines)):
        if comm.rank == 0:
            print(text)


if __name__ == "__main__":
    main()
