"""``picard-sample``: the command-line front end.

Parses options (click) and an optional TOML file into a RunConfig, validates it on
every rank before any collective call, runs the sampler on COMM_WORLD, and writes the
output file from rank 0. Every option's default lives in :class:`RunConfig`.
"""
from __future__ import annotations

import contextlib
import sys
import time

import click

from .config import (ARRAY_BACKENDS, CUDA_AWARE_CHOICES, DEVICES, DTYPES, SAMPLERS, TIME_RANKS_AUTO,
                     ConfigError, RunConfig)
from .plans import resolve_plan
from .samplers import sampler_options

_DEFAULTS = RunConfig()
#: seconds a refusing singleton that does not print waits before it exits (refuse_singletons)
SILENT_SINGLETON_DELAY = 2.0



class TimeRanksType(click.ParamType):
    """A rank count, or "auto" (the performance model's choice)."""
    name = "INTEGER|auto"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or value == "auto":
            return TIME_RANKS_AUTO if value == "auto" else value
        try:
            return int(value)
        except ValueError:
            self.fail(f"{value!r} is neither an integer nor auto", param, ctx)


TIME_RANKS_TYPE = TimeRanksType()

# (flag, field, type, help) of the general options; a new one is a row here and a field
# in RunConfig. Defaults come from RunConfig so the file, the CLI and the library agree;
# an option left out on the command line is None and does not override. The samplers'
# own options follow (SAMPLER_OPTIONS, from the classes' declarations).
OPTIONS = [
    ("--model", "model", str, "Score model: grf, gmm (analytic), digits, digits-cond (trained demos), "
     "diffusers:PATH (local diffusers folder) or module:factory (your own)."),
    ("--dim", "dim", int, "Data dimension d; 0 or omitted: the model's own (1024 for grf and gmm; "
     "a network's is fixed and a contradicting --dim is refused). A perfect square for grf."),
    ("--num-samples", "num_samples", int, "Number of samples."),
    ("--sampler", "sampler", click.Choice(SAMPLERS), "Sampling algorithm."),
    ("--T", "T", float, "Forward time horizon T (reverse sampling starts at N(0, I))."),
    ("--delta", "delta", float, "Early-stopping time delta > 0: samples follow p_delta."),
    ("--blocks", "blocks", int, "Number of time blocks N."),
    ("--steps-per-block", "steps_per_block", int, "Slices (steps) M per block."),
    ("--seed", "seed", int, "Seed of every random number in the run."),
    ("--dtype", "dtype", click.Choice(DTYPES), "Floating-point type of the states and scores."),
    ("--time-ranks", "time_ranks", TIME_RANKS_TYPE,
     "Ranks per sample group, splitting time slices (0: all ranks; auto: the fastest by the "
     "performance model, docs/scaling.md)."),
    ("--max-batch", "max_batch", int, "Most rows per score call (0: automatic)."),
    ("--output", "output", str, "Output HDF5 file."),
    ("--grf-k0", "grf_k0", float, "GRF: spectral corner wavenumber k0."),
    ("--grf-alpha", "grf_alpha", float, "GRF: spectral decay exponent alpha."),
    ("--gmm-components", "gmm_components", int, "GMM: number of components C."),
    ("--gmm-std", "gmm_std", float, "GMM: standard deviation of each component."),
    ("--gmm-radius", "gmm_radius", float, "GMM: norm of the component means."),
    # checkpoint and restart (docs/operations.md)
    ("--checkpoint", "checkpoint", str, "HDF5 checkpoint file written between blocks (empty: none)."),
    ("--checkpoint-every", "checkpoint_every", int, "Blocks between checkpoints."),
    # models and devices (issue 5)
    ("--device", "device", click.Choice(DEVICES), "Where scores run: auto (a GPU if visible), cpu, cuda."),
    ("--cuda-aware-mpi", "cuda_aware_mpi", click.Choice(CUDA_AWARE_CHOICES),
     "Hand GPU buffers to MPI directly (auto: detect from the MPI library)."),
    ("--array-backend", "array_backend", click.Choice(ARRAY_BACKENDS),
     "Arrays of the sweep engine: numpy, torch or cupy (auto: the model's own type)."),
    ("--save-images", "save_images", str, "Write the samples as a PNG grid to this file."),
    # plans (docs/samplers.md)
    ("--accuracy", "accuracy", float, "> 0: choose T, blocks, slices and sweeps for KL <= accuracy^2."),
    # conditional sampling (docs/models.md)
    ("--labels", "labels", str, "Class label per sample of a conditional model: 3,5,7 or 0-9 "
     "(cycled over the samples), random, or a file of labels."),
    ("--guidance-scale", "guidance_scale", float, "Classifier-free guidance w: "
     "(1 + w) s(x, t | label) - w s(x, t) (0: none)."),
    # scaling studies (docs/scaling.md)
    ("--emulate-latency", "emulate_latency", str,
     "T0[,T1]: every score call lasts at least T0 + T1 x rows seconds (emulated device)."),
    ("--perf-profile", "perf_profile", str,
     "JSON of measured costs (drivers/profile_costs.py) for --dry-run predictions and --time-ranks auto."),
]


SAMPLER_OPTIONS = [
    (option.flag, name, click.Choice(option.choices) if option.choices else option.type,
     f"{', '.join(users)}: {option.help}")
    for name, (option, users) in sampler_options().items()]
OPTIONS += SAMPLER_OPTIONS


def _with_options(fn):
    for flag, name, kind, text in reversed(OPTIONS):
        fn = click.option(flag, name, type=kind, default=None,
                          help=f"{text}  [default: {getattr(_DEFAULTS, name)}]")(fn)
    return fn


def _error(comm, message: str, code: int = 2):
    """One line on rank 0 (or on this rank, ``comm`` None), the same exit code on every
    rank, no collective call."""
    if comm is None or comm.rank == 0:
        click.echo(f"picard-sample: error: {message}", err=True)
    sys.exit(code)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", "config_file", type=str, default=None,
              help="TOML file of options (keys as option names); command-line options override it.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file (and checkpoint).")
@click.option("--quiet", is_flag=True, help="Print no summary.")
# operations: restart, plans, progress, logs (docs/operations.md)
@click.option("--resume", is_flag=True,
              help="Continue from the --checkpoint file if it exists (else start from block 0).")
@click.option("--dry-run", is_flag=True, help="Print the plan (grid, ranks, cost, memory) and exit.")
@click.option("--plan-ranks", type=int, default=None,
              help="With --dry-run: plan for this many ranks instead of the job's.")
@click.option("--progress/--no-progress", default=None,
              help="Live progress line on rank 0 (default: only when stderr is a terminal; "
                   "under mpiexec stderr is a pipe, so pass --progress).")
@click.option("--verbose", is_flag=True, help="Log every block and sweep, on every rank.")
@_with_options
def main(config_file, overwrite, quiet, resume, dry_run, plan_ranks, progress, verbose,
         **options):
    """Sample a diffusion model with parallel-in-time Picard sweeps (PIADM) on MPI.

    Run under MPI, e.g. `mpiexec -n 4 picard-sample --model grf --dim 4096`.
    Exit codes: 0 done, 2 bad input (nothing computed), 1 the numerics failed.
    """
    from .parallel import install_abort_handler, world
    from .safety import resolve_dim_checked
    install_abort_handler()
    comm = world()
    refuse_singletons(comm.size)
    overrides = {k: v for k, v in options.items() if v is not None}
    n_ranks = plan_ranks if dry_run and plan_ranks is not None else comm.size
    try:
        if plan_ranks is not None and plan_ranks < 1:
            raise ConfigError(f"--plan-ranks must be positive, got {plan_ranks}")
        # The model's d first (an omitted --dim takes it, a contradicting one is refused),
        # then --accuracy fills in T, blocks, slices and sweeps (plans.py) from that d.
        config = resolve_plan(resolve_dim_checked(RunConfig.from_sources(config_file, overrides)))
        config = config.validate(n_ranks)
        if resume and not config.checkpoint:
            raise ConfigError("--resume needs --checkpoint PATH (the file to resume from)")
        # (the files are checked later, on rank 0, under their locks)
        from .perfmodel import resolve_auto_time_ranks
        config = resolve_auto_time_ranks(config, n_ranks, None if dry_run else comm)
    except ConfigError as exc:
        _error(comm, str(exc))
    warn_unused_options(comm, config, config_file, overrides)

    if dry_run:
        from .dry_run import format_plan, make_plan
        if comm.rank == 0:
            plan = make_plan(config, n_ranks)
            click.echo(format_plan(plan))
            # timing the model builds it: only where one rank's share fits this node
            from .limits import fit_verdict
            click.echo(prediction_text(config, n_ranks)
                       if fit_verdict(plan["ranks"][0]["memory_bytes"], 1) is None else
                       "predicted wall time: unavailable (timing the model needs more memory "
                       "than this node has; see the memory line)")
        return

    from . import fileguard
    from .limits import check_memory
    # Rank 0 alone touches files: it locks the paths for the whole run, then checks what
    # is at them (after the lock, so that no other job can change that meanwhile).
    with fileguard.cleanup_on_signals(), contextlib.ExitStack() as held:
        def take_paths():
            held.enter_context(fileguard.locked(run_paths(config)))
            check_existing_files(config, overwrite, resume)
        _on_rank0(comm, take_paths)
        try:
            check_memory(config, comm)
        except ConfigError as exc:
            _error(comm, str(exc))
        result = _sample(comm, config, resume, progress, verbose)
        if comm.rank == 0:
            finish(config, comm.size, result, quiet)


def run_paths(config: RunConfig) -> list:
    """(path, what) of every file a run writes, for the locks."""
    paths = [(config.output, "output file")]
    if config.checkpoint:
        paths.append((config.checkpoint, "checkpoint"))
    if config.save_images:
        paths.append((config.save_images, "--save-images file"))
    return paths


def _on_rank0(comm, check):
    """``check()`` on rank 0 only; its ConfigError ends every rank alike (exit 2)."""
    message = None
    if comm.rank == 0:
        try:
            check()
        except ConfigError as exc:
            message = str(exc)
    message = comm.bcast_obj(message, root=0)
    if message is not None:
        _error(comm, message)


def _sample(comm, config, resume, progress_flag, verbose):
    """Run the sampler; every failure becomes one message and its exit code."""
    from .checkpoint import CheckpointError, CheckpointWriteError
    from .devices import DeviceError
    from .progress import Progress, configure_logging, sweep_logger
    from .runner import run
    from .samplers import SamplingError
    logger = configure_logging(comm.rank, verbose)
    progress = Progress(config.blocks, config.picard_iters,
                        enabled=False if comm.rank != 0 else progress_flag)
    log_sweep = sweep_logger(logger) if verbose else None

    def on_sweep(block_index, sweep, residual):
        progress.sweep(block_index, sweep, residual)
        if log_sweep is not None:
            log_sweep(block_index, sweep, residual)

    try:
        return run(config, comm, on_block=progress.block, on_sweep=on_sweep, resume=resume)
    except (CheckpointError, ConfigError) as exc:
        # raised alike on every rank (a broadcast or agreed verdict): rank 0 reports
        progress.close()
        _error(comm, str(exc))
    except (SamplingError, DeviceError, CheckpointWriteError) as exc:
        progress.close()
        if getattr(exc, "collective", False):
            _error(comm, str(exc), code=1)
        # only this rank may know: it reports, and ends the others
        sys.stderr.write(f"picard-sample: error on rank {comm.rank}: {exc}\n")
        sys.stderr.flush()
        if comm.size > 1:
            comm.abort(1)
        sys.exit(1)
    finally:
        progress.close()


def refuse_singletons(world_size: int):
    """Exit 2 when a launcher started several tasks that each got a one-rank world
    (hpc_picard/launch.py); only the launcher's first task prints the line."""
    from .launch import singleton_error
    message, prints = singleton_error(world_size)
    if message is not None:
        if prints:
            click.echo(f"picard-sample: error: {message}", err=True)
        else:
            # A launcher that kills the other tasks when one fails (srun
            # --kill-on-bad-exit) must not kill the printing task before its line is out.
            time.sleep(SILENT_SINGLETON_DELAY)
        sys.exit(2)


def prediction_text(config, n_ranks: int) -> str:
    """The performance model's lines for --dry-run (docs/scaling.md); a model that cannot
    be timed here (no such device, say) gives a one-line reason instead."""
    from .perfmodel import format_prediction, profile_for
    try:
        return format_prediction(config, n_ranks, profile_for(config))
    except Exception as exc:   # the plan above stands without the prediction
        return f"predicted wall time: unavailable ({type(exc).__name__}: {exc})"


def warn_unused_options(comm, config: RunConfig, config_file, overrides: dict):
    """Rank 0: one warning line per option of another sampler that the file or the
    command line sets; the run ignores it (docs/usage.md, "Sampler options")."""
    from .config import load_toml
    given = set(overrides) | (set(load_toml(config_file)) if config_file else set())
    if comm.rank == 0:
        for flag in config.unused_options(given):
            click.echo(f"picard-sample: warning: {flag} is not an option of {config.sampler}; "
                       f"ignored", err=True)


def check_existing_files(config: RunConfig, overwrite: bool, resume: bool):
    """Refuse to replace results by accident or anything that is not a regular file:
    an existing output file (or image) needs --overwrite; an existing checkpoint needs
    --resume (continue) or --overwrite (fileguard.check_target)."""
    from .fileguard import check_target
    check_target(config.output, "output file", overwrite,
                 "pass --overwrite to replace it")
    if config.checkpoint:
        check_target(config.checkpoint, "checkpoint", resume or overwrite,
                     "pass --resume to continue from it or --overwrite to start over")
    if config.save_images:
        check_target(config.save_images, "--save-images file", overwrite,
                     "pass --overwrite to replace it")


def finish(config: RunConfig, n_ranks: int, result, quiet: bool):
    """Rank 0: score the samples against the exact target, write the file, summarise.

    The samples are never lost to a failed write: they go to a rescue file instead,
    and the message names it (exit code 1).
    """
    import time

    from . import fileguard
    from .models import build_model
    from .output import write_samples
    from .provenance import provenance
    model = result.model if getattr(result, "model", None) is not None else build_model(config)
    config = getattr(result, "config", None) or config      # as run: the model's d
    labels = getattr(result, "labels", None)
    accuracy = {}
    if hasattr(model, "accuracy"):
        # conditional runs are also scored against the labels they asked for
        extra = {} if labels is None else {"labels": labels}
        accuracy = model.accuracy(result.samples, config.delta, config.seed, **extra)
    try:
        stats = write_samples(config.output, result.samples, config.to_json(), n_ranks,
                              result.stats, result.per_block, model.parameters(), accuracy,
                              io_started=time.perf_counter(),
                              provenance=provenance(config, n_ranks, result.placements),
                              labels=labels)
    except Exception as exc:
        rescue = fileguard.rescue_samples(result.samples, config.output)
        where = (f"the samples were saved to {rescue} (numpy.load reads it)" if rescue else
                 "no rescue file could be written either (disk full?)")
        _error(None, f"could not write output file {config.output} "
                     f"({fileguard.short_reason(exc)}); {where}", code=1)
    if config.save_images:
        _save_images(config, model, result.samples)
    if not quiet:
        click.echo(summary(config, n_ranks, stats, accuracy))


def _save_images(config, model, samples):
    """The PNG grid, after the samples are safe in the output file."""
    from . import fileguard
    from .models.digits import image_grid, write_png
    side = image_side(model)
    if side is None:
        click.echo(f"picard-sample: warning: d={model.dim} samples are not images; "
                   f"--save-images skipped", err=True)
        return
    tmp = fileguard.new_temp(config.save_images)
    try:
        write_png(tmp, image_grid(samples, side))
        fileguard.commit_temp(tmp, config.save_images)
    except OSError as exc:
        fileguard.discard_temp(tmp)
        _error(None, f"could not write --save-images file {config.save_images} "
                     f"({fileguard.short_reason(exc)}); the samples are in {config.output}",
               code=1)


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
    from .progress import summary_table
    return summary_table(config, n_ranks, config.resolved_time_ranks(n_ranks), stats, accuracy)


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
    from .safety import resolve_dim_checked
    overrides = {k: v for k, v in options.items() if v is not None}
    comm = Communicator.self_comm()
    try:
        config = resolve_dim_checked(RunConfig.from_sources(config_file, overrides)).validate(1)
    except ConfigError as exc:
        click.echo(f"picard-check-model: error: {exc}", err=True)
        sys.exit(2)
    from . import devices
    from .check import check_model
    from .safety import SetupError, build_checked
    try:
        placement = devices.place(config.device, comm)
        click.echo(f"picard-check-model: {config.model} on {placement.describe()}")
        model = build_checked(config, placement.torch_device, probe=False)
    except (SetupError, devices.DeviceError) as exc:
        click.echo(f"picard-check-model: error: {exc}", err=True)
        sys.exit(2)
    report = check_model(model, T=config.T, delta=config.delta, points=points, seed=config.seed,
                         expected_dim=overrides.get("dim"))
    click.echo(report.text())
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
