"""``picard-sample``: the command-line front end.

Parses options (click) and an optional TOML file into a RunConfig, validates it on
every rank before any collective call, runs the sampler on COMM_WORLD, and writes the
output file from rank 0. Every option's default lives in :class:`RunConfig`.
"""
from __future__ import annotations

import os
import sys

import click

from .config import CUDA_AWARE_CHOICES, DEVICES, DTYPES, SAMPLERS, ConfigError, RunConfig

_DEFAULTS = RunConfig()

# (flag, field, type, help). Defaults come from RunConfig so the file, the CLI and the
# library agree; an option left out on the command line is None and does not override.
OPTIONS = [
    ("--model", "model", str, "Score model: grf, gmm (analytic), digits (trained demo), "
     "diffusers:PATH (local diffusers folder) or module:factory (your own)."),
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
    # models and devices (issue 5)
    ("--device", "device", click.Choice(DEVICES), "Where scores run: auto (a GPU if visible), cpu, cuda."),
    ("--cuda-aware-mpi", "cuda_aware_mpi", click.Choice(CUDA_AWARE_CHOICES),
     "Hand GPU buffers to MPI directly (auto: detect from the MPI library)."),
    ("--save-images", "save_images", str, "Write the samples as a PNG grid to this file."),
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
        config = RunConfig.from_sources(config_file, overrides).validate(comm.size)
        if os.path.exists(config.output) and not overwrite:
            raise ConfigError(f"output file {config.output} exists; pass --overwrite to replace it")
    except ConfigError as exc:
        _error(comm, str(exc))

    from .devices import DeviceError
    from .runner import run
    from .samplers import SamplingError
    log = None if quiet else (lambda line: click.echo(f"picard-sample: {line}", err=True))
    try:
        result = run(config, comm, log=log)
    except (SamplingError, DeviceError) as exc:
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
    model = result.model if getattr(result, "model", None) is not None else build_model(config)
    # A network fixes d; the file records the d the samples have.
    config = config.replace(dim=int(model.dim))
    if config.save_images:
        from .models.digits import image_grid, write_png
        side = image_side(model)
        if side is None:
            click.echo(f"picard-sample: warning: d={model.dim} samples are not images; "
                       f"--save-images skipped", err=True)
        else:
            write_png(config.save_images, image_grid(result.samples, side))
    accuracy = model.accuracy(result.samples, config.delta, config.seed) \
        if hasattr(model, "accuracy") else {}
    write_samples(config.output, result.samples, config.to_json(), n_ranks, result.stats,
                  result.per_block, model.parameters(), accuracy)
    if not quiet:
        click.echo(summary(config, n_ranks, result.stats, accuracy))


def image_side(model):
    """(height, width) of one sample as an image: the model's own layout, else a square;
    None if neither fits."""
    import math
    shape = getattr(model, "image_shape", None) or getattr(model, "shape", None)
    if shape is not None and len(shape) >= 2:
        # (C, H, W) networks: the C channels of a sample stacked vertically, in grey
        height, width = int(math.prod(shape[:-1])), int(shape[-1])
        if height * width == model.dim:
            return (height, width)
    side = math.isqrt(model.dim)
    return (side, side) if side * side == model.dim else None


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


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", "config_file", type=str, default=None,
              help="TOML file of options (keys as option names); command-line options override it.")
@click.option("--points", type=int, default=8, help="Test points per check.")
@_with_options
def check_main(config_file, points, **options):
    """Check a score model before a long run: shapes, dtypes, devices, finiteness, the
    time convention. Takes the same options as picard-sample; exit code 1 on failure.

    e.g. `picard-check-model --model mypackage.models:make_score --dim 256`.
    """
    from .parallel import Communicator
    overrides = {k: v for k, v in options.items() if v is not None}
    comm = Communicator.self_comm()
    try:
        config = RunConfig.from_sources(config_file, overrides).validate(1)
    except ConfigError as exc:
        click.echo(f"picard-check-model: error: {exc}", err=True)
        sys.exit(2)
    from . import devices
    from .check import check_model
    from .models import build_model
    placement = devices.place(config.device, comm)
    click.echo(f"picard-check-model: {config.model} on {placement.describe()}")
    model = build_model(config, device=placement.torch_device)
    report = check_model(model, T=config.T, delta=config.delta, points=points, seed=config.seed)
    click.echo(report.text())
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
