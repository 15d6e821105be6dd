#!/usr/bin/env python3
"""Write a strong- or weak-scaling sweep of job scripts from one command.

    python jobscripts/make_sweep.py --scheduler slurm --device cpu --mode strong \\
        --ranks 1,2,4,8,16,32 --ranks-per-node 16 --time 01:00:00 --out sweeps/grf-strong \\
        -- --model grf --dim 4096 --num-samples 64 --blocks 16 --steps-per-block 64

Everything after ``--`` is picard-sample options (RunConfig fields only: the scripts
add --checkpoint, --resume, --output and --no-progress themselves).

- strong: the same problem at every rank count.
- weak: the problem grows with the ranks so each rank keeps the same work:
  ``--weak-scale steps_per_block`` (default) multiplies the slices per block by P (the
  time-parallel regime: more slices, same rounds for a fixed K);
  ``--weak-scale num_samples`` multiplies the batch (the sample-parallel regime).

Scaling studies: ``--emulate-latency T0[,T1]`` after ``--`` passes through to every
job (emulated devices, docs/scaling.md); the scripts export MPICH's no-spin settings
(hpc_picard.emulation.QUIET_PROGRESS_ENV) unless ``--busy-wait``.

Each configuration is validated for its rank count before anything is written, so a
sweep that could not run fails here, not in the queue. The out directory receives one
script per rank count and submit-all.sh; submit from that directory.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import sys

import click

from hpc_picard.cli import OPTIONS
from hpc_picard.config import TIME_RANKS_AUTO, ConfigError, RunConfig
from hpc_picard.emulation import QUIET_PROGRESS_ENV

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATES = {("slurm", "cpu"): "slurm-cpu.sh", ("slurm", "gpu"): "slurm-gpu.sh",
             ("pbs", "cpu"): "pbs-cpu.sh", ("pbs", "gpu"): "pbs-gpu.sh"}
SUBMIT = {"slurm": "sbatch", "pbs": "qsub"}
DEFAULT_ENV = ("# site-specific: load the MPI that mpi4py was built against, then the venv\n"
               "module load mpi 2>/dev/null || true\n"
               "source \"${HPC_PICARD_VENV:-$HOME/hpc_picard/.venv}/bin/activate\"")
#: srun --mpi plugin: PMI-2 is what the PyPI mpich wheel (and MPICH's default build) speaks
DEFAULT_SRUN_MPI = "pmi2"
#: options the job scripts set themselves
RESERVED = {"output", "checkpoint"}


class SweepError(ValueError):
    pass


def parse_picard_options(argv: list) -> dict:
    """``--flag value`` pairs of picard-sample into RunConfig field values."""
    by_flag = {flag: (name, kind) for flag, name, kind, _ in OPTIONS}
    values, i = {}, 0
    while i < len(argv):
        flag = argv[i]
        if flag not in by_flag:
            raise SweepError(f"unknown picard-sample option {flag!r} after --")
        name, kind = by_flag[flag]
        if name in RESERVED:
            raise SweepError(f"{flag} is set by the job scripts; leave it out")
        if i + 1 >= len(argv):
            raise SweepError(f"{flag} needs a value")
        raw = argv[i + 1]
        try:
            values[name] = kind(raw) if kind in (int, float, str) else kind.convert(raw, None, None)
        except (ValueError, click.BadParameter):
            raise SweepError(f"{flag} {raw!r}: expected {getattr(kind, 'name', kind.__name__)}") from None
        i += 2
    return values


def wall_seconds(text: str) -> int:
    """[D-]HH:MM:SS or HH:MM or MM -> seconds."""
    days = 0
    if "-" in text:
        day_text, text = text.split("-", 1)
        days = int(day_text)
    parts = [int(p) for p in text.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    hours, minutes, seconds = parts[-3:]
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def picard_args(values: dict) -> str:
    flags = {name: flag for flag, name, _, _ in OPTIONS}
    spelled = {name: "auto" if name == "time_ranks" and value == TIME_RANKS_AUTO else value
               for name, value in values.items()}
    return shlex.join([token for name, value in spelled.items()
                       for token in (flags[name], str(value))])


def mpi_wait_env(busy_wait: bool) -> str:
    """The export line of MPICH's no-spin settings (hpc_picard.emulation), or a note."""
    if busy_wait:
        return "# (left out: --busy-wait)"
    return "export " + " ".join(f"{k}={v}" for k, v in QUIET_PROGRESS_ENV.items())


def render(template: str, fields: dict) -> str:
    for key, value in fields.items():
        template = template.replace(f"@{key}@", str(value))
    return template


def sweep(args) -> list:
    """(script name, text) of every job of the sweep; raises SweepError on bad input."""
    base = parse_picard_options(args.picard)
    ranks = [int(r) for r in args.ranks.split(",") if r.strip()]
    if not ranks or min(ranks) < 1:
        raise SweepError(f"--ranks needs positive rank counts, got {args.ranks!r}")
    if args.ranks_per_node < 1:
        raise SweepError(f"--ranks-per-node must be positive, got {args.ranks_per_node}")
    if not re.fullmatch(r"[a-z0-9_]+", args.srun_mpi):
        raise SweepError(f"--srun-mpi {args.srun_mpi!r}: expected a plugin name such as pmi2 "
                         f"(srun --mpi=list shows the cluster's)")
    if wall_seconds(args.time) <= 2 * args.grace:
        raise SweepError(f"--time {args.time} leaves no room for the {args.grace} s grace period")
    with open(os.path.join(HERE, TEMPLATES[args.scheduler, args.device])) as fh:
        template = fh.read()
    defaults = RunConfig()
    jobs = []
    for p in ranks:
        values = dict(base)
        if args.mode == "weak":
            values[args.weak_scale] = getattr(defaults, args.weak_scale) \
                if args.weak_scale not in base else base[args.weak_scale]
            values[args.weak_scale] *= p
        name = f"{args.name}-{args.mode}-p{p:05d}"
        try:
            RunConfig.from_dict({**values, "output": os.path.join(args.out, name + ".h5")}).validate(p)
        except ConfigError as exc:
            raise SweepError(f"{p} ranks: {exc}") from None
        nodes = -(-p // args.ranks_per_node)
        per_node = min(p, args.ranks_per_node)
        script = f"{name}.sh"
        extra = "\n".join(f"#{'SBATCH' if args.scheduler == 'slurm' else 'PBS'} {d}"
                          for d in args.directive)
        jobs.append((script, render(template, {
            "JOB_NAME": name, "NODES": nodes, "RANKS_PER_NODE": per_node, "RANKS": p,
            "CPUS_PER_RANK": args.cpus_per_rank, "CPUS_PER_NODE": args.cpus_per_rank * per_node,
            "TIME": args.time, "WALL_SECONDS": wall_seconds(args.time), "GRACE": args.grace,
            "EXTRA_DIRECTIVES": extra, "ENV_SETUP": args.env, "JOBSCRIPTS": HERE,
            "SCRIPT_NAME": script, "PICARD_ARGS": picard_args(values),
            "SRUN_MPI": "" if args.srun_mpi == "default" else f"--mpi={args.srun_mpi}",
            "MPI_WAIT_ENV": mpi_wait_env(args.busy_wait)})))
    return jobs


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    picard = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scheduler", choices=("slurm", "pbs"), required=True)
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                        help="cpu: a rank per core; gpu: a rank per GPU")
    parser.add_argument("--mode", choices=("strong", "weak"), default="strong")
    parser.add_argument("--weak-scale", choices=("steps_per_block", "num_samples"),
                        default="steps_per_block", help="what grows with the ranks in weak mode")
    parser.add_argument("--ranks", required=True, help="comma-separated rank counts, e.g. 1,2,4,8")
    parser.add_argument("--ranks-per-node", type=int, default=1,
                        help="ranks on one node (cores, or GPUs with --device gpu)")
    parser.add_argument("--cpus-per-rank", type=int, default=8, help="gpu jobs: cores per rank")
    parser.add_argument("--time", default="01:00:00", help="wall-time limit, [D-]HH:MM:SS")
    parser.add_argument("--grace", type=int, default=120,
                        help="seconds before the limit at which a job requeues itself")
    parser.add_argument("--name", default="picard", help="prefix of job names and files")
    parser.add_argument("--directive", action="append", default=[],
                        help="extra scheduler directive, e.g. --directive='--account=abc' (repeatable)")
    parser.add_argument("--env", default=DEFAULT_ENV, help="shell lines that set up the environment")
    parser.add_argument("--srun-mpi", default=DEFAULT_SRUN_MPI,
                        help="slurm: srun's --mpi plugin, the PMI of the MPI behind mpi4py: pmi2 "
                             "(MPICH, the mpich wheel; the default), pmix (Open MPI), cray_shasta "
                             "(Cray MPICH); 'default': the cluster's MpiDefault")
    parser.add_argument("--busy-wait", action="store_true",
                        help="leave MPICH's progress engine spinning (default: waiting ranks "
                             "sleep between polls, which oversubscribed or emulated runs need)")
    parser.add_argument("--out", required=True, help="directory for the scripts")
    args = parser.parse_args(own)
    args.picard = picard
    try:
        os.makedirs(args.out, exist_ok=True)
        args.out = os.path.abspath(args.out)
        jobs = sweep(args)
    except SweepError as exc:
        print(f"make_sweep: error: {exc}", file=sys.stderr)
        return 2
    for script, text in jobs:
        path = os.path.join(args.out, script)
        with open(path, "w") as fh:
            fh.write(text)
        os.chmod(path, 0o755)
    with open(os.path.join(args.out, "submit-all.sh"), "w") as fh:
        fh.write("#!/bin/bash\n# Submit the whole sweep; run from this directory.\nset -e\n"
                 "cd \"$(dirname \"$0\")\"\n")
        fh.writelines(f"{SUBMIT[args.scheduler]} {script}\n" for script, _ in jobs)
    os.chmod(os.path.join(args.out, "submit-all.sh"), 0o755)
    print(f"wrote {len(jobs)} {args.scheduler} {args.device} job script(s) "
          f"({args.mode} scaling) and submit-all.sh to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
