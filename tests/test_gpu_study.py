"""drivers/gpu_study.py at CI size on the CPU: the study the lent GPU machine runs
(docs/gpu.md), end to end in a subprocess, and its JSON and CSV tables checked."""
import csv
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDY = os.path.join(ROOT, "drivers", "gpu_study.py")
SAMPLERS = ("sequential-sde", "piadm-sde", "paradigms")


def load_study_module():
    spec = importlib.util.spec_from_file_location("gpu_study", STUDY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ddpm_grid_cuts_the_schedule_into_blocks():
    study = load_study_module()
    times = np.sort(np.random.default_rng(0).uniform(1e-4, 5.0, 1000))
    grid = study.ddpm_grid(times, 7)
    assert grid.T == times[-1] and grid.delta == times[0] and grid.total_slices == 999
    np.testing.assert_array_equal(grid.all_times(), times[::-1])
    counts = [b.num_slices for b in grid.blocks]
    assert max(counts) - min(counts) <= 1 and [b.index for b in grid.blocks] == list(range(7))


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_study") / "study.json"
    result = subprocess.run(
        [sys.executable, STUDY, "--device", "cpu", "--tiny", "--rows", "1,4", "--samples", "1,2",
         "--out", str(out)], capture_output=True, text=True, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out) as fh:
        return json.load(fh), out


def test_the_study_records_every_part(record):
    data, _ = record
    assert data["complete"] and data["environment"]["device"] == "cpu"
    assert set(SAMPLERS) <= set(data["features"]["variants"])
    models = data["models"]
    assert models["digits"]["dim"] == 64 and models["ddpm-unet"]["shape"] == [3, 8, 8]
    assert models["ddpm-unet"]["parameters"] > 0 and models["ddpm-unet"]["grid_steps"] == 39
    costs = {(r["model"], r["rows"]): r for r in data["batch_cost"]}
    assert set(costs) == {(m, n) for m in models for n in (1, 4)}
    assert all(r["status"] == "ok" and r["network_s"] > 0 and r["score_s"] > 0 for r in costs.values())


def test_every_sampler_ran_on_the_same_grid_and_matched_sequential(record):
    data, _ = record
    rows = {(r["model"], r["sampler"], r["samples"]): r for r in data["wall_clock"]}
    for model in ("digits", "ddpm-unet"):
        for samples in (1, 2):
            seq = rows[(model, "sequential-sde", samples)]
            assert seq["status"] == "ok" and seq["speedup"] == 1.0 and seq["rel_diff"] == 0.0
            assert seq["rounds"] == seq["sequential_rounds"] == seq["evaluations"]
            for name in SAMPLERS[1:]:
                row = rows[(model, name, samples)]
                assert row["status"] == "ok", row
                assert row["sequential_rounds"] == seq["sequential_rounds"]
                assert row["rounds"] <= row["sequential_rounds"] <= row["evaluations"]
                assert row["equal"] and row["rel_diff"] < 1e-2
                assert row["speedup"] == pytest.approx(seq["wall_s"] / row["wall_s"])
                assert row["gpu_max_memory_bytes"] is None


def test_the_sweep_breakdown_adds_up(record):
    data, _ = record
    (row,) = data["breakdown"]
    assert row["status"] == "ok" and row["model"] == "ddpm-unet" and row["ranks"] == 1
    parts = ("network_s", "copies_and_conversion_s", "communication_s", "other_s")
    assert row["network_s"] > 0 and all(row[p] >= 0 for p in parts[2:])
    assert sum(row[p] for p in parts) + row["noise_per_block_s"] / row["sweeps"] == \
        pytest.approx(row["wall_s"])
    assert row["per_rank"][0]["profile"]["top"]


def test_the_tables_are_written_beside_the_json(record):
    data, out = record
    report = load_study_module().markdown_report(data)
    assert report.count("| ddpm-unet | 2 | ") == 3 and "### One piadm-sde sweep" in report
    for table in ("batch_cost", "wall_clock", "breakdown"):
        with open(str(out)[:-len(".json")] + f"_{table}.csv") as fh:
            rows = list(csv.DictReader(fh))
        assert rows and "model" in rows[0] and "status" in rows[0]
