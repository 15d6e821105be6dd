"""``picard-sample``: the command-line front end.

Parses options (click) and an optional TOML file into a RunConfig, validates it on
every rank before any collective call, runs the sampler on COMM_WORLD, and writes the
output file from rank 0. Every option's default lives in :class:`RunConfig`.
"""
from __future__ import annotations

import os
import sys

import click

from .plans import resolve_plan
from .config import ACCELERATIONS, DTYPES, INITIAL_GUESSES, MODELS, SAMPLERS, ConfigError, RunConfig

_DEFAULTS = RunConfig()

# (flag, field, type, help). Defaults come from RunConfig so the file, the CLI and the
# library agree; an option left out on the command line is None and does not override.
OPTIONS = [
    ("--model", "model", click.Choice(MODELS), "Score model: an analytic target."),
    ("--dim", "dim", int, "Data dimension d (a perfect square for grf)."),
    ("--num-samples", "num_samples", int, "Number of samples."),
    ("--sampler", "sampler", click.Choice(SAMPLERS), "Sampling algorithm."),
    ("--T", "T", float, "Forward time horizon T (reverse sampling starts at N(0, I))."),
    ("--delta", "delta", float, "Early-stopping time delta > 0: samples follow p_delta."),
    ("--blocks", "blocks", int, "Number of time blocks N."),
    ("--steps-per-block", "steps_per_block", int, "Slices (steps) M per block."),
    ("--picard-iters", "picard_iters", int, "Most Picard sweeps K per block."),
    ("--tol", "tol", float, "Stop a block's sweeps once its residual <= tol (0: exactly K sweeps)."),
    ("--seed", "seed", int, "Seed of every random number in the run."),
    ("--dtype", "dtype", click.Choice(DTYPES), "Floating-point type of the states and scores."),
    ("--time-ranks", "time_ranks", int, "Ranks per sample group, splitting time slices (0: all ranks)."),
    ("--max-batch", "max_batch", int, "Most rows per score call (0: automatic)."),
    ("--output", "output", str, "Output HDF5 file."),
    ("--grf-k0", "grf_k0", float, "GRF: spectral corner wavenumber k0."),
    ("--grf-alpha", "grf_alpha", float, "GRF: spectral decay exponent alpha."),
    ("--gmm-components", "gmm_components", int, "GMM: number of components C."),
    ("--gmm-std", "gmm_std", float, "GMM: standard deviation of each component."),
    ("--gmm-radius", "gmm_radius", float, "GMM: norm of the component means."),
    # the ODE corrector, ParaDiGMS, sweep variants and plans (docs/samplers.md)
    ("--corrector-steps", "corrector_steps", int, "piadm-ode: Langevin corrector slices per block end (0: off)."),
    ("--corrector-time", "corrector_time", float, "piadm-ode: corrector duration in reverse time (capped near the data end)."),
    ("--corrector-friction", "corrector_friction", float, "piadm-ode: corrector friction gamma."),
    ("--window", "window", int, "paradigms: slices per sliding window p (a state is accepted once r <= tol^2)."),
    ("--initial-guess", "initial_guess", click.Choice(INITIAL_GUESSES), "piadm: first iterate of the sweeps."),
    ("--accelerate", "accelerate", click.Choice(ACCELERATIONS), "piadm: mixing of the sweeps."),
    ("--anderson-depth", "anderson_depth", int, "piadm: differences kept by --accelerate anderson."),
    ("--accuracy", "accuracy", float, "> 0: choose T, blocks, slices and sweeps for KL <= accuracy^2."),
]


def _with_options(fn):
    for flag, name, kind, text in reversed(OPTIONS):
        fn = click.option(flag, name, type=kind, default=None,
                          help=f"{text}  [default: {getattr(_DEFAULTS, name)}]")(fn)
    return fn


def _error(comm, message: str, code: int = 2):
    """One line on rank 0, the same exit code on every rank, no collective call."""
    if comm.rank == 0:
        click.echo(f"picard-sample: error: {message}", err=True)
    sys.exit(code)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", "config_file", type=str, default=None,
              help="TOML file of options (keys as option names); command-line options override it.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@click.option("--quiet", is_flag=True, help="Print no summary.")
@_with_options
def main(config_file, overwrite, quiet, **options):
    """Sample a diffusion model with parallel-in-time Picard sweeps (PIADM) on MPI.

    Run under MPI, e.g. `mpiexec -n 4 picard-sample --model grf --dim 4096`.
    """
    from .parallel import install_abort_handler, world
    install_abort_handler()
    comm = world()
    overrides = {k: v for k, v in options.items() if v is not None}
    try:
        # --accuracy fills in T, blocks, slices and sweeps (plans.py) before validation.
        config = resolve_plan(RunConfig.from_sources(config_file, overrides)).validate(comm.size)
        if os.path.exists(config.output) and not overwrite:
            raise ConfigError(f"output file {config.output} exists; pass --overwrite to replace it")
    except ConfigError as exc:
        _error(comm, str(exc))

    from .runner import run
    from .samplers import SamplingError
    try:
        result = run(config, comm)
    except SamplingError as exc:
        sys.stderr.write(f"picard-sample: error on rank {comm.rank}: {exc}\n")
        sys.stderr.flush()
        if comm.size > 1:
            comm.comm.Abort(1)
        sys.exit(1)

    if comm.rank == 0:
        finish(config, comm.size, result, quiet)


def finish(config: RunConfig, n_ranks: int, result, quiet: bool):
    """Rank 0: score the samples against the exact target, write the file, summarise."""
    from .models import build_model
    from .output import write_samples
    model = build_model(config)
    accuracy = model.accuracy(result.samples, config.delta, config.seed) \
        if hasattr(model, "accuracy") else {}
    write_samples(config.output, result.samples, config.to_json(), n_ranks, result.stats,
                  result.per_block, model.parameters(), accuracy)
    if not quiet:
        click.echo(summary(config, n_ranks, result.stats, accuracy))


def summary(config, n_ranks, stats, accuracy) -> str:
    scalars = {k: v for k, v in accuracy.items() if isinstance(v, float)}
    lines = [
        f"picard-sample: {config.sampler} on {config.model} (d={config.dim}), "
        f"{config.num_samples} samples, {n_ranks} rank(s) -> {config.output}",
        f"  rounds (critical path)     {stats['rounds']}",
        f"  sequential rounds, same grid {stats['sequential_rounds']}"
        f"  ({stats['sequential_rounds'] / max(stats['rounds'], 1):.1f}x)",
        f"  score evaluations/sample   {stats['evaluations']}",
        f"  wall time                  {stats['wall_time']:.2f} s "
        f"(score {stats['score_time']:.2f} s, noise {stats['noise_time']:.2f} s, "
        f"communication {stats['communication_time']:.2f} s)",
    ]
    lines += [f"  {name:<27}{value:.4g}" for name, value in scalars.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
