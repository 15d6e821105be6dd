"""Scaling study: wall time of the samplers against ranks and samples, measured and
predicted by the performance model (hpc_picard/perfmodel.py) -> docs/scaling.md.

    python drivers/scaling_study.py            # relaunches itself under mpiexec -n 64
    python drivers/scaling_study.py --report   # redo the doc and plots from the JSON
    python drivers/scaling_study.py --report --collect DIR   # add rows of a cluster
                                                    # sweep (jobscripts/collect_sweep.py)
    python drivers/scaling_study.py --max-ranks 16 --only auto --json J --doc D
                                               # a subset (study name prefixes)

Every point runs in ONE mpiexec launch of --max-ranks ranks: a point on P ranks runs
hpc_picard.runner.run on a sub-communicator of the first P ranks while the others wait
in a sleeping barrier (so 64 Python start-ups are paid once, not per point). Score
calls are emulated devices (--emulate-latency) except in the "real" series; the MPICH
variables of hpc_picard.emulation.QUIET_PROGRESS_ENV stop waiting ranks spinning.

Studies (GRF target; rows of the table share issue 14's collector columns):
- strong: a fixed problem on P = 1, 2, 4, ..., 64 ranks (emulated 20 ms per call; real
  scores at P <= cores), samplers sequential-sde (samples over ranks), piadm-sde
  (blockwise and --schedule wavefront), paradigms;
- weak: slices per block grow with P (M = 16 P), one sample; its P = 64 point against
  sequential-sde on the same grid is the 6x check;
- samples: B = 1 .. 256 at P = 64 on a device of finite width (T0 + T1 rows), piadm-sde
  with --time-ranks auto against data-parallel sequential-sde: the crossover;
- auto: ten configurations, every valid time x sample split measured AUTO_REPEATS
  times (interleaved; the median counts), and the split the model picks;
- predictions up to 1024 ranks for measured and published evaluation costs.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "jobscripts"))

#: the collector's columns (jobscripts/collect_sweep.py, issue 14) plus the model's
COLUMNS = ("sampler", "ranks", "time_ranks", "samples", "dim", "rounds", "evals_per_sample",
           "wall_s", "score_s", "comm_s", "noise_s", "other_s", "predicted_s", "efficiency")
BASE = {"model": "grf", "dim": 256, "T": 10.0, "delta": 1e-3, "tol": 0.05,
        "picard_iters": 60, "seed": 0, "window": 64}
FLAT = "0.02"              # 20 ms per score call, flat in the batch (the device)
FINITE = "0.02,0.00125"    # 20 ms up to ~16 rows, then 1.25 ms per row: a device's width
RANK_COUNTS = (1, 2, 4, 8, 16, 32, 64)
#: piadm-sde's wavefront schedule (issue 9): a point's extra options
WAVEFRONT = {"sampler": "piadm-sde", "schedule": "wavefront"}
#: options of a point that are not BASE's and that its row keeps (to predict it again)
OPTIONS = ("schedule", "active_blocks", "guidance_scale", "labels")
#: measurements of each split of an auto configuration (the median is compared)
AUTO_REPEATS = 3
#: published cost of a large U-Net, for the predictions (see docs/scaling.md)
SD2_A100 = {"label": "SD-v2 U-Net, A100 (ParaDiGMS paper)", "rows": [1, 10], "seconds": [0.045, 0.33]}


# -- the points ---------------------------------------------------------------------------
def plan_points(max_ranks: int, cores: int) -> list:
    """Every run of the study: (study, series, P, time_ranks or "auto"/None, config)."""
    ranks = [p for p in RANK_COUNTS if p <= max_ranks]
    strong = dict(BASE, num_samples=4, blocks=4, steps_per_block=64)
    points = []
    for p in ranks:
        points.append(("strong", "emulated", p, None, dict(strong, sampler="piadm-sde", emulate_latency=FLAT)))
        points.append(("strong", "emulated", p, None, dict(strong, sampler="paradigms", emulate_latency=FLAT)))
        points.append(("strong", "emulated", p, None, dict(strong, emulate_latency=FLAT, **WAVEFRONT)))
        if p <= strong["num_samples"]:
            points.append(("strong", "emulated", p, None,
                           dict(strong, sampler="sequential-sde", emulate_latency=FLAT)))
        if p <= cores:
            for sampler in ("piadm-sde", "paradigms", "sequential-sde"):
                if sampler != "sequential-sde" or p <= strong["num_samples"]:
                    points.append(("strong", "real", p, None, dict(strong, sampler=sampler)))
            points.append(("strong", "real", p, None, dict(strong, **WAVEFRONT)))
    for p in ranks:
        weak = dict(BASE, num_samples=1, blocks=4, steps_per_block=16 * p, emulate_latency=FLAT)
        points.append(("weak", "emulated", p, None, dict(weak, sampler="piadm-sde")))
    points.append(("weak", "emulated", 1, None,
                   dict(BASE, num_samples=1, blocks=4, steps_per_block=16 * max(ranks),
                        emulate_latency=FLAT, sampler="sequential-sde")))
    for b in [b for b in (1, 4, 16, 64, 256) if b <= 4 * max_ranks and (b <= max_ranks or max_ranks >= 64)]:
        sweep = dict(BASE, num_samples=b, blocks=4, steps_per_block=64, emulate_latency=FINITE)
        points.append(("samples", "emulated", max(ranks), "auto", dict(sweep, sampler="piadm-sde")))
        points.append(("samples", "emulated", min(max(ranks), b), None,
                       dict(sweep, sampler="sequential-sde")))
    # every split of every auto configuration, AUTO_REPEATS times, interleaved (one pass
    # over all of them, then the next), so that a slow minute of the machine touches
    # one repeat of many splits rather than every repeat of one
    for repeat in range(AUTO_REPEATS):
        for p, b, latency in auto_configs(max_ranks):
            config = dict(BASE, num_samples=b, blocks=2, steps_per_block=32, emulate_latency=latency,
                          sampler="piadm-sde")
            for t in splits(config, p):
                points.append((f"auto P={p} B={b} {latency}", f"repeat {repeat}", p, t, config))
    return points


def auto_configs(max_ranks: int) -> list:
    # configurations where the split changes the wall time on a device of finite width
    # (T0 + T1 rows): uneven sample groups change the rows of the busiest rank, and one
    # time rank (pure data parallelism) scores only the slices behind a block's frozen
    # prefix while a split's last time rank scores its whole range; a flat device with
    # even splits makes every split take the same time and the pick a coin toss
    steep, steeper = "0.01,0.00125", "0.01,0.0025"
    configs = [(4, 3, FINITE), (4, 4, steep), (4, 5, steep), (4, 7, steep), (8, 3, steeper),
               (8, 8, steep), (8, 8, steeper), (8, 16, steep), (16, 6, steep), (16, 16, steep)]
    return [c for c in configs if c[0] <= max_ranks]


def splits(config: dict, ranks: int) -> list:
    from hpc_picard.config import RunConfig
    from hpc_picard.perfmodel import time_rank_choices
    return time_rank_choices(RunConfig.from_dict(config), ranks)


# -- running (inside the mpiexec launch) ----------------------------------------------------
def run_point(world, profile, point, scratch: str):
    """Run one point on the first P ranks; its table row on world rank 0, else None."""
    from mpi4py import MPI

    from hpc_picard.config import RunConfig
    from hpc_picard.parallel import Communicator
    from hpc_picard.perfmodel import choose_time_ranks, sleeping_barrier
    from hpc_picard.runner import run
    study, series, p, time_ranks, values = point
    config = RunConfig.from_dict(dict(values, output=os.path.join(scratch, "unused.h5")))
    if time_ranks == "auto":
        time_ranks = choose_time_ranks(config, p, profile, ranks_per_node=p)
    config = config.replace(time_ranks=time_ranks or 0).validate(p)
    sub = world.comm.Split(0 if world.rank < p else MPI.UNDEFINED, world.rank)
    row = None
    if world.rank < p:
        comm = Communicator(sub)
        comm.barrier()
        result = run(config, comm, placement_log=lambda line: None)
        sub.Free()
        if world.rank == 0:
            row = make_row(study, series, p, config, result, values)
    sleeping_barrier(world.comm, nap=0.05)
    return row


def predict_row(row: dict, profile) -> dict:
    """The model's prediction of a table row from the measured profile alone, given the
    sweeps and evaluations the run made (they do not depend on the rank count)."""
    import dataclasses

    from hpc_picard.perfmodel import LinearCost, predict
    # in-process points write no output file: no output I/O
    here = dataclasses.replace(profile, io=LinearCost(0.0, 0.0))
    sweeps = row["sweeps_per_block"]
    return predict(row_config(row), row["ranks"], here, row["time_ranks"],
                   sweeps=sweeps if len(sweeps) == row["blocks"] else sum(sweeps),
                   ranks_per_node=row["ranks"], evaluations=row["evals_per_sample"]).as_dict()


def row_config(row: dict):
    from hpc_picard.config import RunConfig
    return RunConfig.from_dict(dict(BASE, sampler=row["sampler"], num_samples=row["samples"],
                                    dim=row["dim"], blocks=row["blocks"],
                                    steps_per_block=row["steps_per_block"],
                                    emulate_latency=row["emulate_latency"],
                                    **row.get("options", {})))


def make_row(study, series, p, config, result, values: dict) -> dict:
    stats = result.stats
    wall = stats["wall_time"]
    parts = {"score_s": stats["score_time"], "comm_s": stats["communication_time"],
             "noise_s": stats["noise_time"]}
    sweeps = [int(k) for k in result.per_block["sweeps_per_block"]]
    return {"study": study, "series": series, "sampler": config.sampler, "ranks": p,
            "time_ranks": config.resolved_time_ranks(p), "samples": config.num_samples,
            "dim": config.dim, "rounds": stats["rounds"], "evals_per_sample": stats["evaluations"],
            "wall_s": wall, **parts, "other_s": max(wall - sum(parts.values()), 0.0),
            "load": os.getloadavg()[0], "predicted_s": None,
            "options": {k: values[k] for k in OPTIONS if k in values},
            "emulate_latency": config.emulate_latency, "blocks": config.blocks,
            "steps_per_block": config.steps_per_block, "sweeps_per_block": sweeps,
            "efficiency": None,
            # the weak study's samples show "the same accuracy" (piadm vs sequential)
            "samples_out": result.samples.tolist() if study == "weak" else None}


def worker(args) -> int:
    """The body of the mpiexec launch: profile, run every point, write the JSON."""
    from hpc_picard.config import RunConfig
    from hpc_picard.parallel import world
    from hpc_picard.perfmodel import Curve, build_profile, measure_eval
    comm = world()
    scratch = tempfile.mkdtemp(prefix="scaling-", dir=args.scratch) if comm.rank == 0 else None
    scratch = comm.bcast_obj(scratch)
    started = time.perf_counter()
    profile = build_profile(RunConfig(**{k: BASE[k] for k in ("model", "dim")}), comm,
                            directory=scratch)
    curves = {}
    if comm.rank == 0:
        curves["grf d=256 (measured)"] = dict(profile.eval.__dict__)
        try:    # the digits U-Net as measured here, if its weights are installed
            from hpc_picard.models import build_model
            digits = build_model(RunConfig(model="digits"))
            curves["digits U-Net (measured, CPU)"] = dict(measure_eval(digits, [1, 4, 16, 64, 256], 3)[0].__dict__)
        except Exception as exc:   # the study stands without it
            print(f"scaling_study: digits model not timed: {exc}", flush=True)
        print(f"scaling_study: profile in {time.perf_counter() - started:.0f} s", flush=True)
    points = [pt for pt in plan_points(comm.size, profile.cores)
              if not args.only or pt[0].startswith(tuple(args.only.split(",")))]
    rows = []
    for i, point in enumerate(points):
        row = run_point(comm, profile, point, scratch)
        if comm.rank == 0:
            row["label"] = label(row)
            row["predicted"] = predict_row(row, profile)
            row["predicted_s"] = row["predicted"]["wall"]
            rows.append(row)
            save(args.json, profile, curves, rows, comm.size, started)
            print(f"[{i + 1}/{len(points)} {time.perf_counter() - started:5.0f} s] {row['study']:<24} "
                  f"{row['series']:<8} {row['label']:<25} P={row['ranks']:<3} Pt={row['time_ranks']:<3} "
                  f"B={row['samples']:<4} rounds={row['rounds']:<5} wall={row['wall_s']:.2f} s "
                  f"predicted={row['predicted_s']:.2f} s", flush=True)
    if comm.rank == 0 and not os.listdir(scratch):
        os.rmdir(scratch)
    return 0


def save(path: str, profile, curves: dict, rows: list, max_ranks: int, started: float):
    """The runs so far (after every point: a failure later keeps them)."""
    with open(path, "w") as fh:
        json.dump({"profile": json.loads(profile.to_json()), "curves": curves, "rows": rows,
                   "max_ranks": max_ranks, "load": os.getloadavg(),
                   "seconds": time.perf_counter() - started}, fh)


def launch(args) -> int:
    """Relaunch this script under mpiexec with the MPICH no-spin settings."""
    from hpc_picard.emulation import QUIET_PROGRESS_ENV
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               **QUIET_PROGRESS_ENV)
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    command = [mpiexec, "-n", str(args.max_ranks), sys.executable, os.path.abspath(__file__),
               "--worker", "--json", args.json, "--scratch", args.scratch] + \
        (["--only", args.only] if args.only else [])
    print("scaling_study:", " ".join(command), flush=True)
    return subprocess.call(command, env=env)


# -- the report ------------------------------------------------------------------------------
def label(row: dict) -> str:
    """The sampler as the tables name it: piadm-sde's wavefront schedule is its own."""
    options = row.get("options") or {}
    return row["sampler"] + (" wavefront" if options.get("schedule") == "wavefront" else "")


def is_auto(row: dict) -> bool:
    return row["study"].startswith("auto")


def accuracy_rows(rows: list) -> list:
    """The measured points the accuracy goal counts: every point of the strong, weak and
    sample studies and the first repeat of each auto split (up to 64 ranks)."""
    return [r for r in rows if r["ranks"] <= 64 and (
        r["series"] in ("emulated", "real") or r["series"] == "repeat 0")]


def with_efficiency(rows: list) -> list:
    """strong: T(1) / (P T(P)) per sampler and series; weak: T(1) / T(P); others: none."""
    for row in rows:
        row["efficiency"] = None
        same = [r for r in rows if r["study"] == row["study"] and r["series"] == row["series"]
                and r["label"] == row["label"] and r["ranks"] == 1]
        if row["study"] in ("strong", "weak") and same:
            ratio = same[0]["wall_s"] / row["wall_s"]
            row["efficiency"] = ratio / row["ranks"] if row["study"] == "strong" else ratio
    return rows


def table(rows: list, extra=()) -> list:
    head = ("sampler", "P", "P_t", "B", "rounds", "wall s", "score", "comm", "noise", "other",
            "predicted s", "error") + tuple(e[0] for e in extra)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        error = (r["predicted_s"] - r["wall_s"]) / r["wall_s"] if r["wall_s"] else float("nan")
        cells = [r["label"], r["ranks"], r["time_ranks"], r["samples"], r["rounds"],
                 f"{r['wall_s']:.2f}", f"{r['score_s']:.2f}", f"{r['comm_s']:.2f}",
                 f"{r['noise_s']:.2f}", f"{r['other_s']:.2f}", f"{r['predicted_s']:.2f}",
                 "" if math.isnan(error) else f"{100 * error:+.0f}%"] + [fn(r) for _, fn in extra]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines


def auto_verdicts(rows: list, profile) -> list:
    """Per auto configuration: the median measured wall of every split (over its
    repeats) and the model's pick, made as `--time-ranks auto` makes it at run time
    (the plan's bound on the sweeps, every rank on this node) and, as a check of the
    model itself, given the sweeps and evaluations the runs made."""
    from hpc_picard.perfmodel import choose_time_ranks
    out = []
    order = lambda s: [int(t[2:]) if t[:2] in ("P=", "B=") else 0 for t in s.split()[1:3]]  # noqa: E731
    for study in sorted({r["study"] for r in rows if is_auto(r)}, key=order):
        group = [r for r in rows if r["study"] == study]
        first = group[0]
        p, config = first["ranks"], row_config(first)
        walls = {}
        for r in group:
            walls.setdefault(r["time_ranks"], []).append(r["wall_s"])
        median = {t: float(np.median(w)) for t, w in walls.items()}
        pick = choose_time_ranks(config, p, profile, ranks_per_node=p)
        informed = choose_time_ranks(config, p, profile, sweeps=first["sweeps_per_block"],
                                     ranks_per_node=p, evaluations=first["evals_per_sample"])
        fastest = min(median, key=median.get)
        out.append({"study": study, "walls": median, "repeats": walls,
                    "pick": pick, "pick_informed": informed, "fastest": fastest,
                    "loss": median[pick] / median[fastest] - 1,
                    "loss_informed": median[informed] / median[fastest] - 1})
    return out


def cluster_predictions(profile, curves: dict) -> list:
    """Predicted wall (and speed-up over data-parallel sequential) for P up to 1024 on a
    cluster: one rank per device, the communication fit at one rank per core (P <=
    cores) extended by log2 P, for each evaluation-cost curve."""
    from hpc_picard.config import RunConfig
    from hpc_picard.perfmodel import CollectiveCost, Curve, best_data_parallel, choose_time_ranks, predict
    cores = profile.cores
    cluster = type(profile)(**{**profile.__dict__})
    cluster.comm = {name: CollectiveCost(*[v[:max(1, sum(1 for s in c.sizes if s <= cores))]
                                           for v in (c.sizes, c.alpha, c.beta)])
                    for name, c in profile.comm.items()}
    out = []
    for label, curve in curves.items():
        cluster.eval = Curve(**{k: curve[k] for k in ("rows", "seconds")})
        for b in (1, 64):
            config = RunConfig.from_dict(dict(BASE, num_samples=b, blocks=4, steps_per_block=1024,
                                              sampler="piadm-sde"))
            for p in (1, 4, 16, 64, 256, 1024):
                sweeps = [22] * 4          # measured: ~86 sweeps over 4 blocks of 1024 slices
                t = choose_time_ranks(config, p, cluster, sweeps=sweeps)
                mine = predict(config, p, cluster, t, sweeps=sweeps)
                base = best_data_parallel(config, p, cluster)
                out.append({"curve": label, "samples": b, "ranks": p, "time_ranks": t,
                            "piadm_s": mine.wall, "sequential_s": base.wall,
                            "speedup": base.wall / mine.wall})
    return out


def report(args) -> int:
    from hpc_picard.perfmodel import CostProfile
    with open(args.json) as fh:
        data = json.load(fh)
    rows = data["rows"]
    profile = CostProfile.from_dict(data["profile"])
    for row in rows:        # again, so that a change of the model needs no new runs
        row["label"] = label(row)
        row["predicted"] = predict_row(row, profile)
        row["predicted_s"] = row["predicted"]["wall"]
    if args.collect:
        rows += collected_rows(args.collect)
    rows = with_efficiency(rows)
    curves = dict(data["curves"])
    curves[SD2_A100["label"]] = {"rows": SD2_A100["rows"], "seconds": SD2_A100["seconds"]}
    verdicts = auto_verdicts(rows, profile)
    predictions = cluster_predictions(profile, curves)
    os.makedirs(args.figures, exist_ok=True)
    plot(rows, predictions, args.figures)
    with open(os.path.join(args.figures, "scaling.json"), "w") as fh:
        json.dump({"rows": [{k: v for k, v in r.items() if k != "samples_out"} for r in rows],
                   "auto": verdicts, "predictions": predictions, "profile": data["profile"]},
                  fh, indent=1)
    with open(args.doc, "w") as fh:
        fh.write(document(data, rows, verdicts, predictions))
    print(f"scaling_study: wrote {args.doc} and {args.figures}/scaling*.png")
    return 0


def collected_rows(directory: str) -> list:
    """Rows of a cluster sweep read by issue 14's jobscripts/collect_sweep.py."""
    import collect_sweep     # jobscripts/, on sys.path above
    rows = collect_sweep.collect(directory)
    for row in rows:
        row.setdefault("study", "cluster")
        row.setdefault("series", "cluster")
        row.setdefault("predicted_s", float("nan"))
        row.setdefault("label", row["sampler"])
    return rows


def plot(rows, predictions, figures: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    colours = {"piadm-sde": "C0", "paradigms": "C1", "sequential-sde": "C2",
               "piadm-sde wavefront": "C3"}
    for ax, study, x in ((axes[0], "strong", "ranks"), (axes[1], "weak", "ranks"),
                         (axes[2], "samples", "samples")):
        for sampler, colour in colours.items():
            for series, marker in (("emulated", "o"), ("real", "s")):
                pts = sorted((r for r in rows if r["study"] == study and r["label"] == sampler
                              and r["series"] == series), key=lambda r: r[x])
                if not pts:
                    continue
                xs = [r[x] for r in pts]
                ax.plot(xs, [r["wall_s"] for r in pts], marker=marker, color=colour,
                        ls="-" if series == "emulated" else ":", label=f"{sampler} ({series})")
                ax.plot(xs, [r["predicted_s"] for r in pts], color=colour, ls="--", alpha=0.5)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("samples B (P = 64)" if study == "samples" else "ranks P")
        ax.set_ylabel("wall time [s]")
        ax.set_title({"strong": "strong scaling (B = 4, 4 x 64 slices)",
                      "weak": "weak scaling (B = 1, 4 x 16P slices)",
                      "samples": "sample count at P = 64 (finite-width device)"}[study])
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("measured (markers) and predicted (dashed); 20 ms emulated score calls", fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(figures, "scaling.png"), dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, b in zip(axes, (1, 64)):
        for i, label in enumerate(sorted({p["curve"] for p in predictions})):
            pts = [p for p in predictions if p["curve"] == label and p["samples"] == b]
            ax.plot([p["ranks"] for p in pts], [p["speedup"] for p in pts], marker="o",
                    color=f"C{i}", label=label)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("ranks P (one device each)")
        ax.set_title(f"predicted speed-up of piadm-sde over data-parallel sequential, B = {b}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("speed-up")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(figures, "scaling_predictions.png"), dpi=110)
    plt.close(fig)


def document(data, rows, verdicts, predictions) -> str:
    from hpc_picard.emulation import QUIET_PROGRESS_ENV
    pick = lambda study, series=None: [r for r in rows if r["study"] == study and  # noqa: E731
                                        (series is None or r["series"] == series)]
    counted = accuracy_rows(rows)
    errors = [abs(r["predicted_s"] / r["wall_s"] - 1) for r in counted]
    within = sum(e <= 0.2 for e in errors)
    emulated = [e for e, r in zip(errors, counted) if r["series"] != "real"]
    to32 = [e for e, r in zip(errors, counted) if r["ranks"] <= 32]
    misses = [r for e, r in zip(errors, counted) if e > 0.2]
    weak = {r["sampler"]: r for r in pick("weak") if r["ranks"] == data["max_ranks"]
            or r["sampler"] == "sequential-sde"}
    six = weak.get("sequential-sde", {}).get("wall_s", float("nan")) / \
        weak.get("piadm-sde", {}).get("wall_s", float("nan"))
    match = sum(v["pick"] == v["fastest"] for v in verdicts)
    near = sum(v["loss"] <= 0.05 for v in verdicts)
    match_informed = sum(v["pick_informed"] == v["fastest"] for v in verdicts)
    near_informed = sum(v["loss_informed"] <= 0.05 for v in verdicts)
    eff = lambda r: "" if r["efficiency"] is None else f"{r['efficiency']:.2f}"  # noqa: E731
    strong = sorted(pick("strong"), key=lambda r: (r["series"], r["sampler"], r["ranks"]))
    distortion = sorted((r for r in pick("strong", "emulated") if r["label"] == "piadm-sde"),
                        key=lambda r: r["ranks"])
    lines = [
        "# Scaling: when parallel-in-time sampling beats the wall clock",
        "",
        "Produced by `make bench-scaling` (drivers/scaling_study.py) in "
        f"{data['seconds'] / 60:.1f} minutes on a 2-core machine with {data['max_ranks']} MPI "
        f"ranks; load average at the end {data['load'][0]:.1f} (the study's own oversubscribed "
        "ranks; when other jobs share the machine every number carries that noise too). Table: docs/figures/scaling.json; plots: "
        "docs/figures/scaling.png, docs/figures/scaling_predictions.png.",
        "",
        "## How the study works",
        "",
        "- **Emulated devices.** `--emulate-latency T0[,T1]` makes each score call of a rank last "
        "at least T0 + T1 x rows seconds: the real score is computed, then the rank sleeps for the "
        "rest (counted as score time). With T1 = 0 it is a device that is flat in the batch; the "
        "sample-count study uses T0 = 20 ms, T1 = 1.25 ms per row (flat up to about 16 rows).",
        "- **No busy waiting.** MPICH's progress engine polls while a rank waits in a collective; "
        "with more ranks than cores the waiting ranks take the cores of the working ones. The "
        "settings " + ", ".join(f"`{k}={v}`" for k, v in QUIET_PROGRESS_ENV.items()) +
        " make the wait loop yield with nanosleep after every poll (MPICH 5.0, ch4; "
        "`MPIR_CVAR_CH4_PROGRESS_THROTTLE` and `MPIR_CVAR_POLLS_BEFORE_YIELD` alone did not "
        "help in our measurement). `python drivers/spin_check.py` measures it: see \"Busy "
        "waiting\" below. The study and the job scripts (jobscripts/*.sh via make_sweep.py, "
        "unless `--busy-wait`) set them.",
        "- **One launch.** All points run inside one `mpiexec -n 64`: a point on P ranks uses a "
        "sub-communicator of the first P ranks while the others sleep in a barrier.",
        "- **The model** (hpc_picard/perfmodel.py): wall = setup + sum over rounds of "
        "[t_eval(rows per rank) + t_arith + t_comm(P, bytes)] + noise + I/O, every term measured: "
        "the model's batch-cost curve, the sweep arithmetic, Exscan/Allreduce/Bcast/Allgather fitted "
        "as latency + bandwidth at each communicator size (drivers/profile_costs.py writes these as "
        "a `--perf-profile` JSON), and each round kind's own cost measured through the samplers' "
        "code. On an oversubscribed node each rank's own work is stretched by ranks per core. "
        "The rounds and evaluations are the ones the run made (they do not depend on P). A "
        "classifier-free-guided run (`--guidance-scale`) scores two model rows per sample, and "
        "the model counts them so.",
        "",
        "## Accuracy of the model",
        "",
        f"Predicted wall time within 20% of the measurement at **{within} of {len(errors)}** "
        f"measured points up to {max((r['ranks'] for r in counted), default=0)} ranks "
        f"({sum(e <= 0.2 for e in emulated)} of {len(emulated)} emulated, "
        f"{sum(e <= 0.2 for e in to32)} of {len(to32)} up to 32 ranks; median error "
        f"{100 * float(np.median(errors)):.0f}%, largest {100 * max(errors, default=0):.0f}%; "
        "the `error` column below, signed, predicted vs measured; the auto study counts its "
        "first repeat). " + ("The issue's goal (every point within 20%) is **met**." if not misses
                             else "The issue's goal (every point within 20%) is **not met**; "
                             "the points that miss, and why, are listed below."),
        "",
        "The prediction uses the profile alone (measured once at the start, before any "
        "point) and the sweeps and evaluations each run made, which do not depend on the "
        "rank count. Nothing is fitted to a point. What the model adds for a node with more "
        "ranks than cores (here up to 64 ranks on " + f"{data['profile']['cores']}" + " cores):",
        "",
        "- every rank's own work of a round (its real score, the sampler's arithmetic and "
        "Python bookkeeping, noise) is stretched by ranks / cores, since the ranks take "
        "turns on the cores; the round's own cost is measured through the samplers' code on "
        "one rank (`perfmodel.measure_rounds`, per round kind: sequential step, blockwise "
        "sweep, ParaDiGMS window, wavefront round), not by a synthetic kernel;",
        "- each collective after an emulated device wait costs what the profile measured "
        "for such a round at that P (ranks waking one by one: `sync`), so a collective "
        "waits for the slowest rank;",
        "- a blockwise sweep scores only the slices behind the block's frozen prefix; the "
        "critical rank's rows follow a prefix growing linearly over the block's sweeps, "
        "scaled to the evaluations the run made (at least i slices are frozen after i "
        "sweeps, the bound the plan uses).",
        "",
        "The profile records the node's core count; a cluster prediction (one rank per core "
        "or device) has ranks / cores <= 1 and no stretch.",
        "",
        *(["Points more than 20% off (measured seconds per round of rank 0's score / "
           "communication / rest, against the model's critical path):", ""] + [
            miss_line(r, data["profile"]["cores"]) for r in misses] if misses else []),
        "",
        "## Busy waiting",
        "",
        "`python drivers/spin_check.py --ranks 8,16` (rank 0 computes while the other ranks "
        "wait in MPI_Barrier; seconds of rank 0's work, the same machine, same load caveat):",
        "",
        "```",
        spin_check_text(),
        "```",
        "",
        "## Strong scaling (B = 4 samples, 4 blocks x 64 slices, d = 256)",
        "",
        *table(strong, extra=(("series", lambda r: r["series"]), ("efficiency", eff))),
        "",
        "## Oversubscribed ranks: where the emulation distorts",
        "",
        "Per round of piadm-sde with 20 ms emulated calls: score time per round (should stay "
        "20 ms) and communication per round (a cluster would spend tens of microseconds):",
        "",
        "| P | score ms / round | comm ms / round | wall ms / round |",
        "|---|---|---|---|",
        *[f"| {r['ranks']} | {1e3 * r['score_s'] / r['rounds']:.1f} | {1e3 * r['comm_s'] / r['rounds']:.1f} "
          f"| {1e3 * r['wall_s'] / r['rounds']:.1f} |" for r in distortion],
        "",
        "The emulated score time stays at 20 ms; what distorts is communication: once ranks "
        "outnumber cores (P > 2 here) every stage of a collective waits for its ranks to be "
        "scheduled, so a collective's cost grows with P (tens of ms at 64 ranks) instead of with "
        "log2 P. The model includes it because it measures the collectives at each P on this "
        "machine; the cluster predictions below use the fit at P <= cores instead.",
        "",
        "## Weak scaling (B = 1, 4 blocks x 16 P slices) and the 6x check",
        "",
        *table(sorted(pick("weak"), key=lambda r: (r["sampler"], r["ranks"])),
               extra=(("slices/block", lambda r: str(r["steps_per_block"])), ("efficiency", eff))),
        "",
        f"At P = {data['max_ranks']} (4 x {16 * data['max_ranks']} slices, one sample, 20 ms per call) "
        f"piadm-sde takes {weak.get('piadm-sde', {}).get('wall_s', float('nan')):.1f} s against "
        f"sequential-sde's {weak.get('sequential-sde', {}).get('wall_s', float('nan')):.1f} s on the "
        f"same grid: **{six:.1f}x** faster. " + same_accuracy(weak),
        "",
        "## Sample count at P = 64: the crossover",
        "",
        "piadm-sde with `--time-ranks auto` against sequential-sde with the samples split over "
        "min(64, B) ranks; a device of finite width (20 ms + 1.25 ms per row).",
        "",
        *table(sorted(pick("samples"), key=lambda r: (r["samples"], r["sampler"]))),
        "",
        crossover_text(pick("samples")),
        "",
        "## --time-ranks auto",
        "",
        f"{len(verdicts)} configurations (2 blocks x 32 slices, d = 256), every valid split "
        f"measured {AUTO_REPEATS} times in interleaved order, the median compared. "
        f"`--time-ranks auto` (the model with the plan's bound on the sweeps, as a run "
        f"chooses) picked the fastest measured split in **{match} of {len(verdicts)}**, and a "
        f"split within 5% of the fastest in **{near} of {len(verdicts)}**. Given the sweeps and "
        f"evaluations the runs made, the model picks the fastest in {match_informed} and one "
        f"within 5% in {near_informed}. The configurations are ones where the split changes "
        "the rows a rank scores on a device of finite width (uneven sample groups, frozen "
        "prefixes of long time ranges) or the collectives' size; on a flat device with "
        "even splits all splits take the same time and the pick is a coin toss.",
        "",
        "| configuration | median wall per P_t (s) | auto | fastest | auto / fastest | model given the runs' sweeps |",
        "|---|---|---|---|---|---|",
        *[f"| {v['study'][5:]} | " + ", ".join(f"{t}: {w:.2f}" for t, w in sorted(v["walls"].items(), key=lambda kv: int(kv[0])))
          + f" | {v['pick']} | {v['fastest']} | {1 + v['loss']:.2f} | {v['pick_informed']} |" for v in verdicts],
        "",
        "## Predictions up to 1024 ranks",
        "",
        "piadm-sde (auto split) against the best data-parallel sequential-sde run on the same "
        "ranks, 4 blocks x 1024 slices, 22 sweeps per block (as measured above), one rank per "
        "device. **Communication beyond 2 ranks is an assumption, not a measurement:** the "
        "collectives' latency and bandwidth are fitted on this machine at P <= cores (2 ranks "
        "here, one per core) and extended to larger P by the log2 P stages of a tree "
        "collective; no cluster was measured. A cluster sweep (jobscripts/make_sweep.py, "
        "then `--report --collect DIR`) adds measured rows beside these. "
        "Evaluation costs: the GRF and the digits U-Net measured here, and a published large "
        "U-Net: Stable Diffusion v2 on A100 GPUs from Shih et al., *Parallel Sampling of "
        "Diffusion Models* (ParaDiGMS, NeurIPS 2023): 1000 sequential DDPM steps take about "
        "3.1 x 14.6 s, i.e. about 45 ms per step, and ParaDiGMS's 44 parallel rounds take 14.6 s, "
        "about 0.33 s per round of a window batch on 8 A100s (we read this as about 10 rows per "
        "device). These two figures make its curve; they are derived from totals, not a profile.",
        "",
        "| evaluation cost | B | P | P_t | piadm-sde s | sequential s | speed-up |",
        "|---|---|---|---|---|---|---|",
        *[f"| {p['curve']} | {p['samples']} | {p['ranks']} | {p['time_ranks']} | {p['piadm_s']:.3g} "
          f"| {p['sequential_s']:.3g} | {p['speedup']:.2f}x |" for p in predictions],
        "",
        *(["## Cluster sweep (collected)", "",
           "Rows read by jobscripts/collect_sweep.py from `--collect DIR` (measured there; the "
           "predictions above are this machine's profile, not the cluster's: run "
           "drivers/profile_costs.py on the cluster and pass its JSON to predict them).", "",
           *table([r for r in rows if r["series"] == "cluster"]), ""]
          if any(r["series"] == "cluster" for r in rows) else []),
        "## When time-parallelism pays",
        "",
        pays_text(rows, predictions),
        "",
        "## Summary for the README (generated; paste over its \"When time-parallelism pays\" "
        "paragraph)",
        "",
        readme_text(rows, verdicts, predictions, weak, six),
        "",
        "## Reproduce",
        "",
        "    make bench-scaling                         # this document, <= 20 min here",
        "    mpiexec -n 64 python drivers/profile_costs.py --model grf --dim 4096 --out costs.json",
        "    picard-sample --dry-run --plan-ranks 1024 --perf-profile costs.json --num-samples 1",
        "    python drivers/scaling_study.py --report --collect sweeps/DIR   # add a cluster sweep",
        "",
    ]
    return "\n".join(lines)


def miss_line(r: dict, cores: int) -> str:
    """One point the model misses by more than 20%: where, by how much, and why."""
    pred, rounds = r["predicted"], max(r["rounds"], 1)
    per = lambda x: f"{1e3 * x / rounds:.1f}"  # noqa: E731
    rest = r["other_s"] + r["noise_s"]
    why = []
    if r["ranks"] > cores:
        why.append(f"{r['ranks']} ranks on {cores} cores: the round's waits for descheduled "
                   "ranks vary from round to round and from the profile's measurement")
    if r["series"] == "real":
        why.append("real score calls of a cheap model: a round is about a millisecond of "
                   "Python, numpy and cache effects, which differ from the one-rank runs "
                   "the profile timed by tens of percent")
    if not why:
        parts = {"score": (r["score_s"], pred["score"]), "communication": (r["comm_s"], pred["comm"]),
                 "the rest": (rest, pred["noise"] + pred["other"])}
        worst = max(parts, key=lambda k: abs(parts[k][0] - parts[k][1]))
        why.append(f"{worst} differs most")
    return (f"- {r['study']}, {r['label']}, P = {r['ranks']}, P_t = {r['time_ranks']}, "
            f"B = {r['samples']}: {r['predicted_s']:.2f} s predicted, {r['wall_s']:.2f} s measured "
            f"({100 * (r['predicted_s'] / r['wall_s'] - 1):+.0f}%); per round measured "
            f"{per(r['score_s'])} / {per(r['comm_s'])} / {per(rest)} ms, predicted "
            f"{per(pred['score'])} / {per(pred['comm'])} / {per(pred['noise'] + pred['other'])} ms. "
            + "; ".join(why) + ".")


def readme_text(rows, verdicts, predictions, weak, six) -> str:
    """The README's paragraph with this run's numbers."""
    def speedups(b, curve_prefix):
        return {p["ranks"]: p["speedup"] for p in predictions
                if p["samples"] == b and p["curve"].startswith(curve_prefix)}
    sd1, sd64, digits64 = speedups(1, "SD-v2"), speedups(64, "SD-v2"), speedups(64, "digits")
    by_b = {}
    for r in (r for r in rows if r["study"] == "samples"):
        by_b.setdefault(r["samples"], {})[r["sampler"]] = r["wall_s"]
    ratio = {b: v["sequential-sde"] / v["piadm-sde"] for b, v in sorted(by_b.items())
             if len(v) == 2}
    wins = [b for b, x in ratio.items() if x >= 1]
    loses = [b for b, x in ratio.items() if x < 1]
    match = sum(v["pick"] == v["fastest"] for v in verdicts)
    near = sum(v["loss"] <= 0.05 for v in verdicts)
    seq, par = weak.get("sequential-sde", {}), weak.get("piadm-sde", {})
    many = [x for p, x in sd64.items() if p <= 64]
    return (
        "Measured (docs/scaling.md, `make bench-scaling`, a 2-core machine with 64 ranks and "
        f"emulated 20 ms score calls): one sample on 64 ranks, 4 x 1024 slices, piadm-sde takes "
        f"{par.get('wall_s', float('nan')):.1f} s against sequential-sde's "
        f"{seq.get('wall_s', float('nan')):.1f} s on the same grid ({six:.1f}x). With a device "
        "whose cost grows past 16 rows, 64 ranks and B samples, piadm-sde beats data-parallel "
        "sequential-sde at B = " + ", ".join(str(b) for b in wins) + " ("
        + ", ".join(f"{ratio[b]:.2f}x" for b in wins) + ")"
        + (" and loses from B = " + str(loses[0]) + " on (" + ", ".join(
            f"{ratio[b]:.2f}x at {b}" for b in loses) + ")" if loses else "")
        + ". Predicted for one rank per device (the performance model, `picard-sample "
        "--dry-run --perf-profile FILE`): with **one sample**, piadm-sde against the best "
        "data-parallel sequential run for large U-Nets (SD-v2 on A100): "
        + ", ".join(f"{x:.1f}x at {p}" for p, x in sorted(sd1.items()) if p >= 16)
        + " ranks. With **64 samples**, data parallelism is the better use of up to 64 ranks "
        f"(piadm-sde {min(many, default=float('nan')):.2f}-{max(many, default=float('nan')):.2f}x "
        "there for SD-v2): every rank already has a sample, and the extra evaluations of the "
        "sweeps find no spare device width; for a small network (digits U-Net) "
        + ", ".join(f"{x:.1f}x at {p}" for p, x in sorted(digits64.items()) if p >= 256)
        + " ranks. `--time-ranks auto` picks the time x sample split by the same model (the "
        f"fastest measured split in {match} of {len(verdicts)} configurations, one within 5% "
        f"of the fastest in {near}).")


def spin_check_text() -> str:
    path = os.path.join(ROOT, "docs", "figures", "spin_check.txt")
    if not os.path.exists(path):
        return "(not run: python drivers/spin_check.py > docs/figures/spin_check.txt)"
    with open(path) as fh:
        return fh.read().rstrip()


def same_accuracy(weak: dict) -> str:
    a, b = weak.get("piadm-sde", {}).get("samples_out"), weak.get("sequential-sde", {}).get("samples_out")
    if a is None or b is None:
        return ""
    a, b = np.asarray(a), np.asarray(b)
    rel = float(np.linalg.norm(a - b) / np.linalg.norm(b))
    return (f"Same grid, same noise: the piadm-sde sample differs from the sequential one by "
            f"{100 * rel:.2g}% (relative 2-norm; its sweeps stop at residual tol = {BASE['tol']}).")


def crossover_text(rows: list) -> str:
    by_b = {}
    for r in rows:
        by_b.setdefault(r["samples"], {})[r["sampler"]] = r["wall_s"]
    wins = [(b, v["sequential-sde"] / v["piadm-sde"]) for b, v in sorted(by_b.items())
            if "piadm-sde" in v and "sequential-sde" in v]
    text = ", ".join(f"B = {b}: {s:.2f}x" for b, s in wins)
    losing = [b for b, s in wins if s < 1]
    first = f"data parallelism is faster from B = {losing[0]} on, here" if losing else \
        "time-parallelism wins at every B measured"
    return f"Speed-up of piadm-sde over data-parallel sequential-sde: {text}; {first}."


def pays_text(rows, predictions) -> str:
    flat = [p for p in predictions if p["samples"] == 1 and p["ranks"] == 1024]
    many = [p for p in predictions if p["samples"] == 64 and p["ranks"] == 64]
    sample_rows = [r for r in rows if r.get("study") == "samples"]
    sample_speedups = crossover_text(sample_rows).split(": ", 1)[-1].rstrip(".")
    parts = [
        "Time-parallelism trades extra score evaluations (K sweeps x M slices per block against "
        "M steps) for fewer rounds. It pays when the ranks would otherwise idle: when there are "
        "fewer samples than devices, and a device's call costs about the same for one row as "
        "for the rows a sweep gives it (flat cost), and a round's collectives are small next to "
        "a call.",
        "",
        "- Predicted at 1024 ranks, one sample: " + "; ".join(
            f"{p['curve']}: {p['speedup']:.1f}x" for p in flat) + ".",
        "- Predicted at 64 ranks, 64 samples (a sample per rank for the sequential baseline): "
        + "; ".join(f"{p['curve']}: {p['speedup']:.2f}x" for p in many) + ".",
        "- Predicted at 1024 ranks, 64 samples: " + "; ".join(
            f"{p['curve']}: {p['speedup']:.2f}x" for p in predictions
            if p["samples"] == 64 and p["ranks"] == 1024) + ".",
        "- Measured here: the 6x check above (one sample, 64 emulated flat devices, 4 x 1024 "
        "slices), and the sample-count study on a finite-width device with only 4 x 64 slices "
        "(a rounds ratio of about 4): piadm-sde against data-parallel sequential-sde, " +
        sample_speedups + ". On this machine a round at 64 oversubscribed ranks pays tens of "
        "ms of collectives, which a cluster would not (see \"where the emulation distorts\").",
        "",
        "Data parallelism is the better use of the ranks once every rank has a sample of its own "
        "(B >= P) and the device's cost grows with the batch: piadm-sde then spends about K "
        "times the score evaluations of the sequential run on every rank and the device has no "
        "spare width to absorb them. A cheap model (the GRF on a CPU core) gains least: its "
        "evaluation costs about as much as a round's collectives, so its predicted speed-up "
        "peaks at a few times near 64 ranks and falls beyond as the log2 P collectives grow.",
    ]
    return "\n".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-ranks", type=int, default=64)
    parser.add_argument("--json", default=os.path.join(ROOT, "docs", "figures", "scaling_runs.json"))
    parser.add_argument("--doc", default=os.path.join(ROOT, "docs", "scaling.md"))
    parser.add_argument("--figures", default=os.path.join(ROOT, "docs", "figures"))
    parser.add_argument("--scratch", default=os.path.join(ROOT, "tmp"))
    parser.add_argument("--report", action="store_true", help="only redo the doc and plots from --json")
    parser.add_argument("--collect", default=None,
                        help="a directory of cluster sweep outputs to add (jobscripts/collect_sweep.py)")
    parser.add_argument("--only", default="",
                        help="studies to run, by name prefix: strong,weak,samples,auto (default: all)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    os.makedirs(args.scratch, exist_ok=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    if not args.report:
        code = launch(args)
        if code:
            return code
    return report(args)


if __name__ == "__main__":
    sys.exit(main())
