"""Wall time and communication of the wavefront on this mpiexec's ranks (GRF).

One table row per run (header: tree | ranks | options | rounds | evals/sample |
wall s | comm s | most states held): rounds, evaluations per sample, the best wall time of --repeat runs,
the communication time (rank 0's, waits included) and the most window states any time
rank held in a round (its share of the window). Compare the rows of one sitting:

    .venv/bin/mpiexec -n 2 .venv/bin/python drivers/wavefront_ranks.py [--dim 1024]
        [--num-samples 16] [--extra accelerate=anderson]

Run with PYTHONPATH pointing at another checkout to time that tree's wavefront the
same way (it then reports no window states if that tree does not hand them out).
"""
from __future__ import annotations

import argparse
import os
import time

import hpc_picard

from hpc_picard.config import RunConfig
from hpc_picard.parallel import install_abort_handler, world
from hpc_picard.runner import run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--num-samples", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--extra", nargs="*", default=[], help="key=value RunConfig fields")
    args = parser.parse_args()
    install_abort_handler()
    comm = world()
    extra = dict(item.split("=", 1) for item in args.extra)
    config = RunConfig(model="grf", dim=args.dim, num_samples=args.num_samples,
                       sampler="piadm-sde", schedule="wavefront", **extra).validate(comm.size)
    held = [0]

    from hpc_picard.samplers import wavefront
    original = wavefront.Wavefront.round

    def counted(self, st):
        held[0] = max(held[0], len(st.states))
        return original(self, st)
    wavefront.Wavefront.round = counted
    walls = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        result = run(config, comm)
        walls.append(time.perf_counter() - start)
    most = comm.allreduce_max(float(held[0]))
    if comm.rank == 0:
        s = result.stats
        tree = os.path.dirname(os.path.dirname(os.path.abspath(hpc_picard.__file__)))
        print(f"| {tree} | {comm.size} | {' '.join(args.extra) or 'defaults'} | {s['rounds']} | "
              f"{s['evaluations']} | {min(walls):.2f} | {s['communication_time']:.2f} | "
              f"{int(most)} |")


if __name__ == "__main__":
    main()
