"""--dry-run: the plan of a run, printed without computing or writing anything."""
from __future__ import annotations


import pytest
from click.testing import CliRunner
from ops_support import leftovers, mpirun

from hpc_picard.cli import main
from hpc_picard.config import RunConfig
from hpc_picard.dry_run import format_plan, make_plan


@pytest.fixture(autouse=True)
def in_tmp(cli_tmp):
    return cli_tmp


def test_the_plan_of_a_time_by_sample_grid(in_tmp):
    config = RunConfig(dim=64, num_samples=10, blocks=5, steps_per_block=7, picard_iters=4,
                       time_ranks=2, checkpoint="ck.h5", checkpoint_every=2)
    plan = make_plan(config, 4)
    assert (plan["sample_groups"], plan["time_ranks"]) == (2, 2)
    assert plan["rounds"] == 5 * 4 and plan["sequential_rounds"] == 5 * 7
    # sweep k scores the 7 - (k - 1) slices not yet exact
    assert plan["evaluations_per_sample"] == 5 * (7 + 6 + 5 + 4)
    assert plan["checkpoints"] == 3
    assert [b["slices"] for b in plan["blocks"]] == [7] * 5
    assert plan["blocks"][0]["t_start"] == 10.0 and plan["blocks"][-1]["t_end"] == 1e-3
    ranks = plan["ranks"]
    assert [r["samples"] for r in ranks] == [(0, 5), (0, 5), (5, 10), (5, 10)]
    assert [r["slices"] for r in ranks] == [(0, 4), (4, 7), (0, 4), (4, 7)]
    assert [r["device"] for r in ranks] == ["cpu"] * 4
    # rank 0 also holds every sample for the output; owning more slices costs more
    assert ranks[0]["memory_bytes"] > ranks[2]["memory_bytes"] > ranks[3]["memory_bytes"] > 0


def test_sequential_samplers_split_samples_only():
    plan = make_plan(RunConfig(sampler="sequential-sde", dim=16, num_samples=6, blocks=3,
                               steps_per_block=5), 3)
    assert (plan["sample_groups"], plan["time_ranks"]) == (3, 1)
    assert plan["rounds"] == plan["sequential_rounds"] == 15
    assert plan["evaluations_per_sample"] == 15
    assert [r["slices"] for r in plan["ranks"]] == [(0, 5)] * 3


def test_cli_dry_run_prints_the_plan_and_writes_nothing(in_tmp):
    result = CliRunner().invoke(main, ["--dry-run", "--plan-ranks", "8", "--time-ranks", "4",
                                       "--dim", "64", "--num-samples", "16", "--blocks", "40",
                                       "--output", "out.h5"])
    assert result.exit_code == 0, result.output
    text = result.output
    assert "process grid: 2 sample group(s) x 4 time rank(s)" in text
    assert "rounds: at most 480 (12 per block; sequential: 2560)" in text
    assert "score evaluations per sample: at most 28080" in text     # 40 x (12 x 64 - 66)
    assert "  ..." in text                      # 40 blocks are cut to their ends
    assert "[8, 16)" in text and "[48, 64)" in text
    assert leftovers(in_tmp) == []


def test_cli_dry_run_still_validates(in_tmp):
    result = CliRunner().invoke(main, ["--dry-run", "--plan-ranks", "3", "--time-ranks", "2"])
    assert result.exit_code == 2
    assert "--time-ranks 2 must divide the number of ranks (3)" in result.output


def test_dry_run_under_mpiexec_prints_once(in_tmp):
    result = mpirun(2, ["--dry-run", "--dim", "16", "--blocks", "3"], cwd=in_tmp)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("plan: piadm-sde on grf (d=16), 256 samples, 2 rank(s)") == 1
    assert leftovers(in_tmp) == []


def test_format_plan_lists_every_rank_of_a_small_job():
    text = format_plan(make_plan(RunConfig(dim=16, blocks=2, steps_per_block=4), 2))
    assert text.count(" cpu") == 2
