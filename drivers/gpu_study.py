"""The GPU study (issue 12): what one GPU buys, written to one JSON file.

    python3 drivers/gpu_study.py --device cuda --budget-s 200 --out gpu_study.json
    mpiexec -n 2 python3 drivers/gpu_study.py --device cuda --parts breakdown --out two.json
    .venv/bin/python drivers/gpu_study.py --device cpu --tiny --out /tmp/study.json  # CI
    python3 drivers/gpu_study.py --report gpu_study.json      # its tables in markdown

`make gpu-study` runs the first (tiny on a machine without a GPU); drivers/gpu_machine.sh
runs everything on the lent GPU machine (docs/gpu.md). Three parts, each a list of rows
in the JSON and a CSV table beside it (<out>_batch_cost.csv, ...):

- batch_cost: t_eval(rows), the seconds of one network evaluation of ``rows`` states,
  for the digits U-Net and a diffusers UNet2DModel built like DDPM's CIFAR-10 model
  (32x32x3, channels 128-256-256-256, two ResNet layers per level, attention at 16x16:
  35.7 M parameters) with random weights, since timing needs no training. ``network_s``
  is the bare network on states already on the device (CUDA events); ``score_s`` is the
  score as the samplers call it, numpy in and out (copies and the float64 conversion
  included). These curves feed the performance model of the scaling study.
- wall_clock: sequential-sde, piadm-sde and paradigms (and the wavefront schedule or
  the device-resident array backends where this tree has them) on the same grid, noise
  and seed, at B = 1, 4, 16, 64 samples: rounds, evaluations per sample, wall seconds,
  the speed-up over sequential-sde, peak GPU memory, and how far the samples are from
  sequential-sde's. Digits run on the default grid (16 blocks of 64 slices); the large
  U-Net on its 1000 DDPM timesteps mapped to our clock by t_k = -log(abar_k)/2
  (docs/models.md), the 999 steps between them cut into blocks, as ParaDiGMS runs DDPM.
- breakdown: one piadm-sde block of the large U-Net, K sweeps at tol 0, split into the
  network, host<->device copies with the score conversion, the noise draw, MPI, and the
  rest (prefix sums, residuals, runner overhead); on a GPU, torch.profiler's device
  times of the copies and kernels too. Under mpiexec it runs on every rank (two ranks
  on one GPU give the MPI share) and reports each rank.

Every measurement is saved as soon as it is taken, so a run stopped by a time limit
still leaves its results. ``--budget-s`` skips the runs that would not fit (estimated
from the previous sample count and the batch-cost curve) and says so in the rows.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from hpc_picard import runner  # noqa: E402
from hpc_picard.config import ConfigError, RunConfig  # noqa: E402
from hpc_picard.grid import Block, TimeGrid  # noqa: E402
from hpc_picard.models import build_model  # noqa: E402
from hpc_picard.parallel import install_abort_handler, world  # noqa: E402
from hpc_picard.samplers import SAMPLERS  # noqa: E402

#: DDPM's CIFAR-10 network (Ho et al. 2020; diffusers' google/ddpm-cifar10-32 config)
DDPM_CIFAR10_UNET = dict(
    sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
    block_out_channels=(128, 256, 256, 256),
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    norm_num_groups=32, norm_eps=1e-6, freq_shift=1, flip_sin_to_cos=False,
    downsample_padding=0, act_fn="silu", time_embedding_type="positional")
#: the same layout at CI size (8x8x3, attention at 4x4)
TINY_UNET = dict(
    sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
    block_out_channels=(16, 32), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8)

FULL = dict(rows="1,2,4,8,16,32,64,128,256,512,1024,2048,4096,8192", samples="1,4,16,64",
            ddpm_steps=1000, ddpm_blocks=10, breakdown_samples="1,16")
TINY = dict(rows="1,4,16", samples="1,2", ddpm_steps=40, ddpm_blocks=3, breakdown_samples="1")
#: the digits grid at CI size (the full study uses RunConfig's defaults)
TINY_DIGITS_GRID = dict(blocks=4, steps_per_block=8, picard_iters=8, window=8)
PARTS = ("batch", "wall", "breakdown")


# -- timing ---------------------------------------------------------------------------
def elapsed(fn, cuda: bool) -> float:
    """Seconds of one fn(): CUDA events around it on a GPU (its kernels are
    asynchronous), the host clock otherwise."""
    if cuda:
        import torch
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def median_seconds(fn, cuda: bool, min_repeats: int = 3, min_total: float = 0.2,
                   max_repeats: int = 30) -> float:
    """Median of repeated timings after one warm-up call (kernel selection, plans,
    the allocator's first blocks stay out of the numbers)."""
    fn()
    times = []
    while len(times) < min_repeats or (sum(times) < min_total and len(times) < max_repeats):
        times.append(elapsed(fn, cuda))
    return float(np.median(times))


class TimedNetwork:
    """A score model's network with its calls timed (CUDA events on a GPU, summed when
    read). Attributes the adapter looks up (``unet``, ``module``) pass through."""

    def __init__(self, network, cuda: bool):
        import torch
        self.network, self.cuda = network, cuda
        self.module = network if isinstance(network, torch.nn.Module) else None
        self.events, self.host_seconds = [], 0.0

    def __getattr__(self, name):
        return getattr(self.__dict__["network"], name)

    def __call__(self, x, t):
        if not self.cuda:
            began = time.perf_counter()
            out = self.network(x, t)
            self.host_seconds += time.perf_counter() - began
            return out
        import torch
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = self.network(x, t)
        end.record()
        self.events.append((start, end))
        return out

    def seconds(self) -> float:
        if not self.cuda:
            return self.host_seconds
        import torch
        torch.cuda.synchronize()
        return sum(s.elapsed_time(e) for s, e in self.events) / 1e3


@contextlib.contextmanager
def timed_network(model, cuda: bool):
    timed = TimedNetwork(model.network, cuda)
    model.network = timed
    try:
        yield timed
    finally:
        model.network = timed.network


@contextlib.contextmanager
def on_grid(grid):
    """runner.run on ``grid`` instead of the warped grid the runner builds from the
    config: a diffusers model's DDPM timesteps are not such a grid, and the study must
    time the runner's own code path (placement, sampler, gathering) on them."""
    if grid is None:
        yield
        return
    saved = runner.build_grid
    runner.build_grid = lambda config: grid
    try:
        yield
    finally:
        runner.build_grid = saved


# -- models and grids -----------------------------------------------------------------
def ddpm_schedule_config(steps: int) -> dict:
    """DDPM's linear betas (1e-4 to 0.02 over 1000 steps), stretched to ``steps`` so a
    short CI schedule still ends in noise."""
    scale = 1000.0 / steps
    return dict(num_train_timesteps=steps, beta_start=1e-4 * scale, beta_end=0.02 * scale,
                beta_schedule="linear", prediction_type="epsilon", clip_sample=False,
                variance_type="fixed_large")


def write_random_unet(path: str, unet_config: dict, steps: int) -> int:
    """A diffusers folder (unet/, scheduler/) with seeded random weights; returns the
    parameter count."""
    import diffusers
    import torch
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(**unet_config)
    unet.save_pretrained(os.path.join(path, "unet"))
    diffusers.DDPMScheduler(**ddpm_schedule_config(steps)).save_pretrained(
        os.path.join(path, "scheduler"))
    return sum(p.numel() for p in unet.parameters())


def ddpm_grid(times: np.ndarray, blocks: int) -> TimeGrid:
    """The DDPM timesteps t_{K-1} > ... > t_0 (forward times, our clock) as a grid of
    ``blocks`` blocks of nearly equal slice counts."""
    times = np.asarray(times, dtype=np.float64)[::-1].copy()
    edges = np.linspace(0, len(times) - 1, blocks + 1).round().astype(int)
    return TimeGrid(T=float(times[0]), delta=float(times[-1]), blocks=tuple(
        Block(n, times[edges[n]:edges[n + 1] + 1].copy()) for n in range(blocks)))


class Spec:
    """A model with the grid and the configuration every sampler runs it on."""

    def __init__(self, name: str, model, base: dict, grid=None, info=None):
        self.name, self.model, self.base, self.grid = name, model, base, grid
        self.info = info or {}

    def config(self, **changes) -> RunConfig:
        return RunConfig(**{**self.base, **changes})

    def slices_per_block(self) -> int:
        grid = self.grid or runner.build_grid(self.config())
        return max(b.num_slices for b in grid.blocks)


def build_specs(args, device: str, workdir: str) -> list:
    common = dict(device="cpu" if device == "cpu" else "cuda", output=os.devnull, seed=args.seed,
                  dtype=args.dtype)
    method = {k: v for k, v in (("tol", args.tol), ("picard_iters", args.picard_iters),
                                ("window", args.window)) if v is not None}
    specs = []
    if "digits" in args.models:
        base = {"model": "digits", **common, **(TINY_DIGITS_GRID if args.tiny else {}), **method}
        model = build_model(RunConfig(**base), device=device)
        specs.append(Spec("digits", model, base, info=network_info(model)))
    if "ddpm" in args.models:
        folder = os.path.join(workdir, "ddpm-unet")
        params = write_random_unet(folder, TINY_UNET if args.tiny else DDPM_CIFAR10_UNET,
                                   args.ddpm_steps)
        model = build_model(RunConfig(model=f"diffusers:{folder}"), device=device)
        grid = ddpm_grid(model.clock.times, args.ddpm_blocks)
        base = dict(model=f"diffusers:{folder}", **common, T=grid.T, delta=grid.delta,
                    blocks=grid.num_blocks, steps_per_block=max(b.num_slices for b in grid.blocks),
                    **method)
        assert params == network_info(model)["parameters"], "the folder did not load back whole"
        info = {**network_info(model),
                "unet_config": TINY_UNET if args.tiny else DDPM_CIFAR10_UNET,
                "schedule": ddpm_schedule_config(args.ddpm_steps), "grid_steps": grid.total_slices,
                "grid_blocks": grid.num_blocks}
        specs.append(Spec("ddpm-unet", model, base, grid=grid, info=info))
    return specs


def network_info(model) -> dict:
    network = getattr(model, "unet", None) or model.network
    return {"dim": int(model.dim), "shape": list(model.shape),
            "parameters": int(sum(p.numel() for p in network.parameters())),
            "dtype": str(model.torch_dtype), "device": str(model.device)}


# -- what this tree offers ---------------------------------------------------------------
def sampler_variants(args) -> list:
    """(label, config changes) of every sampler run, sequential-sde first. The wavefront
    schedule and the array backends are run only where this tree has them (a sampler
    named wavefront, or RunConfig fields ``schedule`` / ``array_backend``)."""
    fields = set(RunConfig.field_names())
    base = [("sequential-sde", {"sampler": "sequential-sde"}), ("piadm-sde", {"sampler": "piadm-sde"}),
            ("paradigms", {"sampler": "paradigms"})]
    if "wavefront" in SAMPLERS:
        base.append(("wavefront", {"sampler": "wavefront"}))
    elif "schedule" in fields:
        base.append(("piadm-sde wavefront", {"sampler": "piadm-sde", "schedule": "wavefront"}))
    if "array_backend" not in fields or not args.array_backends:
        return [(label, changes, None) for label, changes in base]
    return [(f"{label} [{backend}]", {**changes, "array_backend": backend}, backend)
            for backend in args.array_backends for label, changes in base]


def features(args) -> dict:
    fields = set(RunConfig.field_names())
    return {"samplers": sorted(SAMPLERS), "array_backend_option": "array_backend" in fields,
            "schedule_option": "schedule" in fields,
            "variants": [label for label, _, _ in sampler_variants(args)]}


def environment(device: str, comm) -> dict:
    from mpi4py import MPI
    info = {"host": socket.gethostname(), "python": sys.version.split()[0],
            "numpy": np.__version__, "cpu_count": os.cpu_count(), "device": device,
            "ranks": comm.size, "mpi": " ".join(MPI.Get_library_version().split("\n")[0].split()),
            "git_commit": _git_commit()}
    try:
        import torch
        info.update(torch=torch.__version__, torch_cuda=torch.version.cuda,
                    torch_threads=torch.get_num_threads())
        if device.startswith("cuda"):
            props = torch.cuda.get_device_properties(device)
            info.update(gpu=props.name, gpu_memory_bytes=int(props.total_memory),
                        gpu_capability=f"{props.major}.{props.minor}",
                        gpu_multiprocessors=props.multi_processor_count,
                        cudnn=torch.backends.cudnn.version(),
                        tf32_conv=bool(torch.backends.cudnn.allow_tf32),
                        tf32_matmul=bool(torch.backends.cuda.matmul.allow_tf32))
    except ImportError:
        pass
    for name in ("cupy", "diffusers"):
        try:
            info[name] = __import__(name).__version__
        except Exception:          # absent, or cupy without a usable CUDA
            info[name] = None
    return info


def _git_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, cwd=os.path.dirname(os.path.abspath(__file__)))
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# -- the study --------------------------------------------------------------------------
class Study:
    """The JSON record, saved (with its CSV tables) after every measurement by rank 0."""

    def __init__(self, args, comm, device: str):
        self.args, self.comm, self.device = args, comm, device
        self.cuda = device.startswith("cuda")
        self.started = time.perf_counter()
        self.record = {"schema": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                       "argv": sys.argv[1:], "tiny": args.tiny, "parts": args.parts,
                       "budget_s": args.budget_s, "environment": environment(device, comm),
                       "features": features(args), "models": {}, "batch_cost": [],
                       "wall_clock": [], "breakdown": [], "complete": False}

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def fits(self, estimate: float) -> bool:
        return not self.args.budget_s or self.elapsed() + estimate <= self.args.budget_s

    def add(self, table: str, row: dict):
        self.record[table].append(row)
        self.save()
        if self.comm.rank == 0:
            shown = {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in row.items()
                     if not isinstance(v, (list, dict))}
            print(f"[{self.elapsed():7.1f} s] {table}: {shown}", flush=True)

    def save(self):
        if self.comm.rank != 0:
            return
        self.record["elapsed_s"] = self.elapsed()
        out = self.args.out
        tmp = f"{out}.tmp"
        with open(tmp, "w") as fh:
            json.dump(self.record, fh, indent=1, default=_jsonable)
        os.replace(tmp, out)
        if self.args.csv:
            stem = os.path.splitext(out)[0]
            for table in ("batch_cost", "wall_clock", "breakdown"):
                if self.record[table]:
                    write_csv(f"{stem}_{table}.csv", self.record[table])


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def write_csv(path: str, rows: list):
    flat = [{k: v for k, v in row.items() if not isinstance(v, (list, dict))} for row in rows]
    columns = list(dict.fromkeys(k for row in flat for k in row))
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(flat)


def failure(exc, cuda: bool) -> str:
    """The status of a measurement that raised: the GPU's time is too short to lose
    the remaining measurements to one failure, so the study records it and goes on."""
    if "out of memory" in str(exc).lower():
        if cuda:
            import torch
            torch.cuda.empty_cache()
        return "out of memory"
    traceback.print_exc()
    return f"error: {type(exc).__name__}: {exc}"[:300]


# -- part 1: batch-cost curves ----------------------------------------------------------
def batch_cost(study: Study, spec: Spec, rows_list: list):
    import torch
    model, cuda = spec.model, study.cuda
    rng = np.random.default_rng(0)
    for rows in rows_list:
        row = {"model": spec.name, "rows": rows}
        if not study.fits(0.0):
            study.add("batch_cost", {**row, "status": "skipped: time budget"})
            continue
        x = rng.standard_normal((rows, model.dim))
        t = np.full(rows, 0.5)                       # mid-trajectory forward time
        clock = t if model.clock is None else model.clock.timestep(t)
        try:
            xs = torch.as_tensor(x, dtype=model.torch_dtype, device=model.device)
            xs = xs.reshape((rows,) + model.shape)
            ts = torch.as_tensor(clock, dtype=model.torch_dtype, device=model.device)
            with torch.no_grad():
                network_s = median_seconds(lambda: model.network(xs, ts), cuda)
            score_s = median_seconds(lambda: model.score(x, t), cuda)
        except Exception as exc:
            study.add("batch_cost", {**row, "status": failure(exc, cuda)})
            break
        study.add("batch_cost", {**row, "status": "ok", "network_s": network_s, "score_s": score_s,
                                 "network_rows_per_s": rows / network_s,
                                 "score_chunk_rows": int(model.preferred_batch())})
        del xs, ts


def cost_at(study: Study, spec: Spec, rows: int):
    """score_s at ``rows`` from this model's batch-cost curve (log-log interpolation),
    or None without one."""
    curve = sorted((r["rows"], r["score_s"]) for r in study.record["batch_cost"]
                   if r["model"] == spec.name and r.get("status") == "ok")
    if not curve:
        return None
    r, s = np.log([c[0] for c in curve]), np.log([c[1] for c in curve])
    if rows > curve[-1][0]:          # beyond the curve: linear in rows
        return curve[-1][1] * rows / curve[-1][0]
    return float(np.exp(np.interp(np.log(rows), r, s)))


# -- part 2: same-grid wall clock ---------------------------------------------------------
def rows_per_round(spec: Spec, changes: dict, samples: int) -> int:
    sampler = changes["sampler"]
    if sampler.startswith("sequential"):
        return samples
    if sampler == "paradigms":
        return samples * int(spec.config(**changes).window)
    return samples * spec.slices_per_block()


def estimate(study: Study, spec: Spec, label: str, changes: dict, samples: int) -> float:
    """Seconds a run should take, from the same sampler at the last smaller B scaled by
    the batch-cost curve (linearly in B without a curve); 0 when there is no such run."""
    earlier = [r for r in study.record["wall_clock"] if r["model"] == spec.name
               and r["sampler"] == label and r.get("status") == "ok" and r["samples"] < samples]
    if not earlier:
        return 0.0
    last = earlier[-1]
    now, before = (rows_per_round(spec, changes, b) for b in (samples, last["samples"]))
    cost_now, cost_before = cost_at(study, spec, now), cost_at(study, spec, before)
    ratio = cost_now / cost_before if cost_now and cost_before else now / before
    return last["wall_s"] * max(1.0, ratio)


def relative_difference(a: np.ndarray, b: np.ndarray) -> tuple:
    """(|a - b| / |b| over all samples, the largest per-sample one), Frobenius norms."""
    total = float(np.linalg.norm(a - b) / np.linalg.norm(b))
    per = np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)
    return total, float(per.max())


def warm_up(spec: Spec, rows_list):
    """One score call at each batch size a run will use, so that the first run timed
    does not pay for the library's start (cuDNN handles, kernel choice) alone."""
    x = np.random.default_rng(1).standard_normal((max(rows_list), spec.model.dim))
    for rows in sorted(set(rows_list)):
        spec.model.score(x[:rows], np.full(rows, 0.5))


def wall_clock(study: Study, spec: Spec, samples_list: list):
    import torch
    cuda = study.cuda
    references = {}
    variants = sampler_variants(study.args)
    for samples in samples_list:
        warm_up(spec, [min(rows_per_round(spec, changes, samples), spec.model.preferred_batch())
                       for _, changes, _ in variants])
        for label, changes, backend in variants:
            row = {"model": spec.name, "sampler": label, "samples": samples}
            guess = estimate(study, spec, label, changes, samples)
            if not study.fits(guess):
                study.add("wall_clock", {**row, "status": f"skipped: time budget (estimated {guess:.0f} s)"})
                continue
            try:
                config = spec.config(num_samples=samples, **changes).validate(study.comm.size)
            except ConfigError as exc:
                study.add("wall_clock", {**row, "status": f"skipped: {exc}"})
                continue
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            try:
                with on_grid(spec.grid):
                    result = runner.run(config, study.comm, model=spec.model)
            except Exception as exc:
                study.add("wall_clock", {**row, "status": failure(exc, cuda)})
                continue
            stats = result.stats
            row.update(status="ok", rounds=stats["rounds"], evaluations=stats["evaluations"],
                       sequential_rounds=stats["sequential_rounds"], wall_s=stats["wall_time"],
                       score_s=stats["score_time"], communication_s=stats["communication_time"],
                       noise_s=stats["noise_time"],
                       max_block_residual=float(np.max(result.per_block["residual_per_block"])),
                       gpu_max_memory_bytes=int(torch.cuda.max_memory_allocated()) if cuda else None)
            # What the batch-cost curve alone predicts: sequential's evaluations of B
            # rows against this sampler's rounds of its mean batch (paradigms' window
            # shrinks at the end). A wall speed-up far below it is time outside the
            # network (copies, host arithmetic, overheads).
            mean_rows = max(1, round(samples * stats["evaluations"] / stats["rounds"]))
            cost_one, cost_round = (cost_at(study, spec, n) for n in (samples, mean_rows))
            if cost_one and cost_round:
                row["network_bound_speedup"] = (stats["sequential_rounds"] * cost_one
                                                / (stats["rounds"] * cost_round))
            key = (samples, backend)
            if changes["sampler"] == "sequential-sde":
                references[key] = (result.samples, stats["wall_time"])
            if key in references and result.samples is not None:
                ref_samples, ref_wall = references[key]
                total, worst = relative_difference(result.samples, ref_samples)
                row.update(speedup=ref_wall / stats["wall_time"], rel_diff=total,
                           max_sample_rel_diff=worst,
                           equal=bool(total <= study.args.equal_rtol))
            study.add("wall_clock", row)


# -- part 3: where the time of one piadm sweep goes ----------------------------------------
def profile_summary(prof, sweeps: int, cuda: bool) -> dict:
    """Per-sweep seconds of host<->device copies and of kernels on the device (GPU), or
    of torch's copy operators on the host (CPU), and the heaviest operators."""
    rows = []
    for event in prof.key_averages():
        device_us = getattr(event, "self_device_time_total", None)
        if device_us is None:
            device_us = getattr(event, "self_cuda_time_total", 0.0)
        rows.append((event.key, float(device_us), float(event.self_cpu_time_total), int(event.count)))
    per_sweep = 1e-6 / sweeps

    def total(select, column):
        return sum(r[column] for r in rows if select(r[0])) * per_sweep

    summary = {"memcpy_htod_s": total(lambda k: "Memcpy HtoD" in k, 1),
               "memcpy_dtoh_s": total(lambda k: "Memcpy DtoH" in k, 1),
               "device_total_s": total(lambda k: True, 1),
               "host_copy_ops_s": total(lambda k: k in ("aten::copy_", "aten::_to_copy"), 2)}
    summary["kernels_s"] = (summary["device_total_s"] - summary["memcpy_htod_s"]
                            - summary["memcpy_dtoh_s"])
    heaviest = sorted(rows, key=lambda r: r[1] if cuda else r[2], reverse=True)[:12]
    summary["top"] = [{"name": k, "device_s": d * per_sweep, "host_s": c * per_sweep, "calls": n}
                      for k, d, c, n in heaviest]
    return summary


def breakdown(study: Study, spec: Spec, samples_list: list, sweeps: int):
    import torch
    cuda, comm = study.cuda, study.comm
    first = spec.grid.blocks[0] if spec.grid else runner.build_grid(spec.config()).blocks[0]
    grid = TimeGrid(T=float(first.times[0]), delta=float(first.times[-1]), blocks=(first,))
    for samples in samples_list:
        row = {"model": spec.name, "samples": samples, "ranks": comm.size,
               "slices": first.num_slices, "sweeps": sweeps}
        if not study.fits(0.0):
            study.add("breakdown", {**row, "status": "skipped: time budget"})
            continue
        config = spec.config(sampler="piadm-sde", num_samples=samples, picard_iters=sweeps, tol=0.0,
                             T=grid.T, delta=grid.delta, blocks=1,
                             steps_per_block=first.num_slices).validate(comm.size)
        with on_grid(grid):
            runner.run(config, comm, model=spec.model)              # warm-up at these sizes
            with timed_network(spec.model, cuda) as timed:
                stats = runner.run(config, comm, model=spec.model).stats
            network = timed.seconds()
            activities = [torch.profiler.ProfilerActivity.CPU] + (
                [torch.profiler.ProfilerActivity.CUDA] if cuda else [])
            with torch.profiler.profile(activities=activities) as prof:
                runner.run(config, comm, model=spec.model)
        mine = {"rank": comm.rank, "wall_s": stats["wall_time"] / sweeps,
                "network_s": network / sweeps,
                "copies_and_conversion_s": (stats["score_time"] - network) / sweeps,
                "communication_s": stats["communication_time"] / sweeps,
                "noise_per_block_s": stats["noise_time"],
                "other_s": (stats["wall_time"] - stats["score_time"] - stats["communication_time"]
                            - stats["noise_time"]) / sweeps,
                "profile": profile_summary(prof, sweeps, cuda)}
        ranks = comm.allgather_obj(mine)
        flat = {f"{k}": v for k, v in ranks[0].items() if k not in ("rank", "profile")}
        study.add("breakdown", {**row, "status": "ok", **flat,
                                "memcpy_htod_s": ranks[0]["profile"]["memcpy_htod_s"],
                                "memcpy_dtoh_s": ranks[0]["profile"]["memcpy_dtoh_s"],
                                "kernels_s": ranks[0]["profile"]["kernels_s"],
                                "per_rank": ranks})


# -- markdown tables for docs/results.md ------------------------------------------------------
def _cell(value, scale=1.0, digits=3):
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return f"{value * scale:.{digits}g}"
    return str(value)


def _table(header: list, rows: list) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def markdown_report(record: dict) -> str:
    """The study's tables as docs/results.md shows them."""
    env = record["environment"]
    where = env.get("gpu") or f"CPU ({env.get('cpu_count')} cores)"
    out = [f"Hardware: {where}; torch {env.get('torch')} (CUDA {env.get('torch_cuda')}), "
           f"{env.get('mpi')}, {env.get('ranks')} rank(s); commit {env.get('git_commit')}."]
    for name, info in record["models"].items():
        out.append(f"Model {name}: {info['parameters']:,} parameters, state {info['shape']}.")
    costs = {}
    for r in record["batch_cost"]:
        costs.setdefault(r["rows"], {})[r["model"]] = r
    models = list(record["models"])
    header = ["rows"] + [f"{m} {what} ms" for m in models for what in ("network", "score")]
    rows = [[str(n)] + [_cell(costs[n].get(m, {}).get(k), 1e3) for m in models
                        for k in ("network_s", "score_s")] for n in sorted(costs)]
    if rows:
        out += ["### Batch cost t_eval(rows)", _table(header, rows)]
    header = ["model", "B", "sampler", "rounds", "evals/sample", "wall s", "speed-up",
              "network-bound speed-up", "GPU memory GiB", "rel. diff", "equal", "status"]
    rows = [[r["model"], str(r["samples"]), r["sampler"], _cell(r.get("rounds")),
             _cell(r.get("evaluations")), _cell(r.get("wall_s")), _cell(r.get("speedup")),
             _cell(r.get("network_bound_speedup")), _cell(r.get("gpu_max_memory_bytes"), 2.0**-30),
             _cell(r.get("rel_diff"), digits=2), _cell(r.get("equal")), r["status"]]
            for r in record["wall_clock"]]
    if rows:
        out += ["### Wall clock, same grid", _table(header, rows)]
    header = ["model", "B", "ranks", "slices", "sweep ms", "network", "copies + conversion",
              "MPI", "other", "noise / block", "memcpy HtoD", "memcpy DtoH", "kernels"]
    keys = ("network_s", "copies_and_conversion_s", "communication_s", "other_s",
            "noise_per_block_s", "memcpy_htod_s", "memcpy_dtoh_s", "kernels_s")
    rows = [[r["model"], str(r["samples"]), str(r["ranks"]), str(r["slices"]),
             _cell(r.get("wall_s"), 1e3)] + [_cell(r.get(k), 1e3) for k in keys]
            for r in record["breakdown"]]
    if rows:
        out += ["### One piadm-sde sweep (ms per sweep)", _table(header, rows)]
    return "\n\n".join(out) + "\n"


# -- command line ---------------------------------------------------------------------------
def int_list(text: str) -> list:
    return [int(v) for v in text.split(",") if v.strip()]


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--tiny", action="store_true",
                        help="CI sizes: a tiny U-Net, few rows and samples, short grids")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma list of: " + ", ".join(PARTS))
    parser.add_argument("--models", default="digits,ddpm", help="comma list of: digits, ddpm")
    parser.add_argument("--rows", help="batch-cost rows (default 1..8192 in powers of 2)")
    parser.add_argument("--samples", help="wall-clock sample counts B (default 1,4,16,64)")
    parser.add_argument("--ddpm-steps", type=int, help="DDPM training timesteps (default 1000)")
    parser.add_argument("--ddpm-blocks", type=int, help="piadm blocks on the DDPM grid (default 10)")
    parser.add_argument("--picard-iters", type=int, help="piadm sweeps per block (default RunConfig's)")
    parser.add_argument("--tol", type=float, help="piadm/paradigms tolerance (default RunConfig's)")
    parser.add_argument("--window", type=int, help="paradigms window (default RunConfig's)")
    parser.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--equal-rtol", type=float, default=0.01,
                        help="'equal' in wall_clock: relative difference from sequential-sde at most "
                             "this (default 1 %%, under the sequential sampler's own first-order gap "
                             "to DDPM's step on these grids, docs/results.md)")
    parser.add_argument("--breakdown-samples", help="B of the sweep breakdown (default 1,16)")
    parser.add_argument("--breakdown-sweeps", type=int, default=4)
    parser.add_argument("--array-backends", default="numpy,torch",
                        help="backends to run where RunConfig has array_backend ('' : none)")
    parser.add_argument("--budget-s", type=float, default=0.0,
                        help="skip runs that would end later than this many seconds (0: no limit)")
    parser.add_argument("--out", default="gpu_study.json")
    parser.add_argument("--no-csv", dest="csv", action="store_false")
    parser.add_argument("--report", metavar="JSON",
                        help="print the markdown tables of an earlier study's JSON and exit")
    args = parser.parse_args(argv)
    sizes = TINY if args.tiny else FULL
    for name, default in sizes.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    args.rows, args.samples = int_list(args.rows), int_list(args.samples)
    args.breakdown_samples = int_list(args.breakdown_samples)
    args.parts = [p for p in args.parts.split(",") if p]
    args.models = [m for m in args.models.split(",") if m]
    args.array_backends = [b for b in args.array_backends.split(",") if b]
    bad = [p for p in args.parts if p not in PARTS] + [m for m in args.models if m not in ("digits", "ddpm")]
    if bad:
        parser.error(f"unknown part or model: {', '.join(bad)}")
    return args


def resolve_device(requested: str, comm) -> str:
    """The torch device string this rank studies: the runner's own placement."""
    from hpc_picard import devices
    return devices.place(requested, comm).torch_device


def main(argv=None):
    args = parse(argv)
    if args.report:
        with open(args.report) as fh:
            print(markdown_report(json.load(fh)), end="")
        return
    comm = world()
    if comm.size > 1:
        install_abort_handler()
        if set(args.parts) - {"breakdown"}:
            raise SystemExit("gpu_study: under mpiexec run --parts breakdown only "
                             "(batch costs and wall clock are one-rank measurements)")
    device = resolve_device(args.device, comm)
    study = Study(args, comm, device)
    with tempfile.TemporaryDirectory(prefix="gpu_study_") as workdir:
        specs = build_specs(args, device, workdir)
        study.record["models"] = {s.name: s.info for s in specs}
        study.save()
        if "batch" in args.parts:
            for spec in specs:
                batch_cost(study, spec, args.rows)
        if "wall" in args.parts:
            for spec in specs:
                wall_clock(study, spec, args.samples)
        if "breakdown" in args.parts:
            spec = specs[-1]                     # the large U-Net when it is studied
            breakdown(study, spec, args.breakdown_samples, args.breakdown_sweeps)
    study.record["complete"] = True
    study.save()
    if comm.rank == 0:
        print(f"gpu_study: {args.out} written in {study.elapsed():.1f} s")


if __name__ == "__main__":
    main()
