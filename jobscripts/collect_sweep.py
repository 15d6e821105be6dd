#!/usr/bin/env python3
"""Read the output files of a scaling sweep into one table.

    python jobscripts/collect_sweep.py sweeps/grf-strong          # every output in the folder
    python jobscripts/collect_sweep.py a.h5 b.h5 --csv            # or named files, as CSV

One row per picard-sample output file (the job scripts write NAME-<jobid>.h5;
checkpoints and temporary files are skipped). The columns are those of the scaling
study (drivers/scaling_study.py), so that sweeps run through a scheduler and studies
run in one process print alike:

    sampler, ranks, time_ranks, samples, dim, rounds, evals_per_sample,
    wall_s, score_s, comm_s, noise_s, other_s

Times are the file's ``stats`` (rank 0's, summed over restarted segments);
``other_s`` is the rest of the wall time: arithmetic, I/O and start-up
(``io_s`` is in each row as well, but not in the table).

Library use: ``collect(paths_or_dir) -> list[dict]`` and ``format_table(rows) -> str``.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import glob
import io
import json
import os
import sys

import h5py

from hpc_picard.config import RunConfig

COLUMNS = ("sampler", "ranks", "time_ranks", "samples", "dim", "rounds", "evals_per_sample",
           "wall_s", "score_s", "comm_s", "noise_s", "other_s")


def is_output(path: str) -> bool:
    """Whether ``path`` is a picard-sample output file (not a checkpoint, not a stray)."""
    try:
        with h5py.File(path, "r") as fh:
            return "samples" in fh and "stats" in fh and "config" in fh.attrs
    except OSError:
        return False


def output_files(paths_or_dir) -> list:
    """The output files named by a folder, a file, or a list of either, sorted. Files
    named one by one must be outputs; a folder's other .h5 files (checkpoints) are
    skipped, and so are temporary files of runs still writing."""
    items = [paths_or_dir] if isinstance(paths_or_dir, (str, os.PathLike)) else list(paths_or_dir)
    found = []
    for item in map(os.fspath, items):
        if os.path.isdir(item):
            found += [path for path in glob.glob(os.path.join(item, "*.h5")) if is_output(path)]
        elif is_output(item):
            found.append(item)
        else:
            raise ValueError(f"{item} is not a picard-sample output file")
    return sorted(found)


def read_row(path: str) -> dict:
    """One table row from one output file."""
    with h5py.File(path, "r") as fh:
        stored = json.loads(fh.attrs["config"])
        ranks = int(fh.attrs["n_ranks"])
        stats = {name: value.item() if hasattr(value, "item") else value
                 for name, value in fh["stats"].attrs.items()}
        num_samples, dim = fh["samples"].shape
    # Files from other versions may carry fields this one lacks: keep the ones it knows.
    known = {field.name for field in dataclasses.fields(RunConfig)}
    config = RunConfig.from_dict({k: v for k, v in stored.items() if k in known})
    wall = float(stats["wall_time"])
    parts = {"score_s": float(stats["score_time"]), "comm_s": float(stats["communication_time"]),
             "noise_s": float(stats["noise_time"])}
    return {"sampler": config.sampler, "ranks": ranks,
            "time_ranks": config.resolved_time_ranks(ranks), "samples": int(num_samples),
            "dim": int(dim), "rounds": int(stats["rounds"]),
            "evals_per_sample": int(stats["evaluations"]), "wall_s": wall, **parts,
            "other_s": wall - sum(parts.values()), "io_s": float(stats.get("io_time", 0.0)),
            "restarts": int(stats.get("restarts", 0)), "file": path}


def collect(paths_or_dir) -> list:
    """Rows (dicts with COLUMNS and io_s, restarts, file) of every output file named,
    ordered by sampler, ranks and time ranks."""
    rows = [read_row(path) for path in output_files(paths_or_dir)]
    return sorted(rows, key=lambda row: (row["sampler"], row["ranks"], row["time_ranks"], row["file"]))


def _cell(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def format_table(rows) -> str:
    """The rows as an aligned text table with a header line."""
    cells = [list(COLUMNS)] + [[_cell(row[name]) for name in COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(line, widths))
                     for line in cells)


def format_csv(rows) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="sweep folders or output files")
    parser.add_argument("--csv", action="store_true", help="CSV instead of an aligned table")
    args = parser.parse_args(argv)
    try:
        rows = collect(args.paths)
    except (OSError, KeyError, ValueError) as exc:
        print(f"collect_sweep: error: {exc}", file=sys.stderr)
        return 2
    if not rows:
        print(f"collect_sweep: error: no output files in {' '.join(args.paths)}", file=sys.stderr)
        return 2
    print(format_csv(rows) if args.csv else format_table(rows), end="\n" if not args.csv else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
