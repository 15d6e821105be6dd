"""The performance model: fits of measured costs, predictions, --time-ranks auto,
--dry-run's prediction lines."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from hpc_picard.cli import main
from hpc_picard.config import TIME_RANKS_AUTO, RunConfig
from hpc_picard.perfmodel import (CollectiveCost, CostProfile, Curve, LinearCost, NoiseCost,
                                  best_data_parallel, choose_time_ranks, predict,
                                  time_rank_choices)


def profile(eval_seconds=(0.01, 0.01), comm_alpha=1e-3, **changes) -> CostProfile:
    """A hand-made profile: a flat 10 ms score call, no arithmetic, Exscan/Allreduce of
    ``comm_alpha`` seconds at any size."""
    comm = {name: CollectiveCost([2, 4], [comm_alpha, comm_alpha], [0.0, 0.0])
            for name in ("exscan", "allreduce", "bcast", "allgather")}
    values = dict(model="grf", dim=16, cores=64, eval=Curve([1, 1024], list(eval_seconds)),
                  sweep_arith=LinearCost(0, 0), step_arith=LinearCost(0, 0),
                  noise=NoiseCost(0, 0), io=LinearCost(0, 0), setup=0.0, comm=comm)
    values.update(changes)
    return CostProfile(**values)


def test_fits_recover_latency_and_bandwidth():
    samples = [(p, n, 1e-5 * p + 2e-9 * p * n) for p in (2, 8) for n in (8, 4096, 65536)]
    cost = CollectiveCost.fit(samples)
    assert cost.sizes == [2, 8]
    np.testing.assert_allclose(cost.alpha, [2e-5, 8e-5], rtol=1e-6)
    np.testing.assert_allclose(cost.beta, [4e-9, 1.6e-8], rtol=1e-6)
    assert cost(1, 1e6) == 0.0                                      # one rank: no message
    assert cost(4, 0) == pytest.approx(5e-5)                        # halfway in log2 P
    assert cost(64, 0) == pytest.approx(8e-5 * 6 / 3)               # beyond: x log2 P


def test_curve_interpolates_and_extends_linearly():
    curve = Curve([1, 4, 8], [1.0, 1.0, 2.0])
    assert curve(0) == 0.0 and curve(2) == 1.0 and curve(6) == 1.5
    assert curve(16) == pytest.approx(4.0)                          # slope of the last piece


def test_the_sequential_prediction_is_steps_times_the_call():
    config = RunConfig(sampler="sequential-sde", dim=16, num_samples=4, blocks=3, steps_per_block=10)
    pred = predict(config, 4, profile())
    assert pred.rounds == 30 and pred.time_ranks == 1
    assert pred.wall == pytest.approx(30 * 0.01 + 4 * 1e-3 + 1e-3)   # + setup collectives, gather


def test_a_paradigms_round_costs_the_ring_collectives_not_the_window():
    """ParaDiGMS' ring window moves no rows: a round's communication is the Exscan,
    the verdict and two broadcasts of one state, whatever the window's width."""
    walls = {}
    for window in (4, 16):
        config = RunConfig(sampler="paradigms", dim=16, num_samples=2, blocks=2,
                           steps_per_block=16, window=window)
        alpha = {"exscan": 1e-3, "allreduce": 2e-3, "bcast": 5e-3, "allgather": 1.0}
        comm = {name: CollectiveCost([2, 4], [a, a], [0.0, 0.0]) for name, a in alpha.items()}
        pred = predict(config, 2, profile(comm=comm), sweeps=10)
        walls[window] = pred.comm
        # 10 rounds of (Exscan + verdict + 2 broadcasts), + the start's and end's collectives
        assert pred.comm == pytest.approx(10 * (1e-3 + 2e-3 + 2 * 5e-3), abs=2e-2)
    assert walls[4] == pytest.approx(walls[16])


def test_emulated_latency_sets_the_floor_of_each_call():
    config = RunConfig(dim=16, num_samples=1, blocks=2, steps_per_block=8, picard_iters=5,
                       emulate_latency="0.05,0.01")
    pred = predict(config, 4, profile(), sweeps=[3, 4])
    assert pred.rounds == 7
    assert pred.score == pytest.approx(7 * (0.05 + 0.01 * 2))       # 2 slices per rank


def test_auto_picks_the_split_with_the_smallest_prediction():
    config = RunConfig(dim=16, num_samples=8, blocks=2, steps_per_block=8, picard_iters=4)
    assert time_rank_choices(config, 8) == [1, 2, 4, 8]
    assert time_rank_choices(config.replace(num_samples=2), 8) == [4, 8]
    # expensive collectives: fewest time ranks; a call whose cost grows fast with rows
    # and free collectives: still the same rows per rank, so the collectives decide
    costly = profile(comm_alpha=1.0)
    assert choose_time_ranks(config, 8, costly) == 1
    walls = {t: predict(config, 8, costly, t).wall for t in (1, 2, 4, 8)}
    assert min(walls, key=walls.get) == 1
    # uneven sample counts: 3 samples on 4 ranks -> 2 groups hold 2 samples, 1 group 3 x
    # fewer slices per rank; with a cost that grows with rows the larger time groups win
    steep = profile(eval_seconds=(0.0, 1.0), comm_alpha=0.0)
    uneven = config.replace(num_samples=3)
    pick = choose_time_ranks(uneven, 4, steep)
    assert pick == min(time_rank_choices(uneven, 4),
                       key=lambda t: predict(uneven, 4, steep, t).wall)
    assert pick == 4


def test_data_parallel_baseline_uses_at_most_one_rank_per_sample():
    config = RunConfig(dim=16, num_samples=2, blocks=2, steps_per_block=8)
    base = best_data_parallel(config, 64, profile())
    assert base.time_ranks == 1 and base.rounds == 16


def test_profile_round_trips_through_json(tmp_path):
    original = profile()
    path = tmp_path / "costs.json"
    path.write_text(original.to_json())
    assert CostProfile.load(str(path)) == original
    assert json.loads(path.read_text())["eval"]["rows"] == [1, 1024]


def test_dry_run_prints_the_prediction_and_auto_split(cli_tmp):
    path = cli_tmp / "costs.json"
    path.write_text(profile(model="grf", dim=64).to_json())
    result = CliRunner().invoke(main, ["--dry-run", "--plan-ranks", "8", "--dim", "64",
                                       "--num-samples", "2", "--blocks", "2",
                                       "--steps-per-block", "8", "--time-ranks", "auto",
                                       "--perf-profile", str(path), "--emulate-latency", "0.02"])
    assert result.exit_code == 0, result.output
    assert "process grid: 2 sample group(s) x 4 time rank(s)" in result.output
    assert "predicted wall time: at most" in result.output
    assert "best data-parallel sequential run on 2 rank(s)" in result.output
    assert "predicted speed-up" in result.output
    assert sorted(p.name for p in cli_tmp.iterdir()) == ["costs.json"]


def test_auto_in_a_toml_file_and_bad_spellings(cli_tmp):
    (cli_tmp / "run.toml").write_text('time-ranks = "auto"\n')
    assert RunConfig.from_sources(str(cli_tmp / "run.toml")).time_ranks == TIME_RANKS_AUTO
    result = CliRunner().invoke(main, ["--time-ranks", "several"])
    assert result.exit_code == 2 and "neither an integer nor auto" in result.output
    result = CliRunner().invoke(main, ["--perf-profile", "missing.json", "--dim", "16"])
    assert result.exit_code == 2 and "missing.json does not exist" in result.output


def test_oversubscribed_ranks_stretch_their_own_work_and_a_cluster_does_not():
    """8 ranks on 2 cores: each rank's real score and round overhead take 4x as long;
    the same profile on one rank per core (ranks_per_node unset) has no stretch."""
    config = RunConfig(dim=16, num_samples=1, blocks=1, steps_per_block=8, picard_iters=8)
    costs = profile(comm_alpha=0.0, cores=2, round_overhead={"sweep": LinearCost(1e-3, 0.0)})
    sweeps = [3]            # one slice per rank: the last rank scores it every sweep
    node = predict(config, 8, costs, 8, sweeps=sweeps, ranks_per_node=8)
    assert node.score == pytest.approx(3 * 4 * 0.01)
    assert node.other == pytest.approx(3 * 4 * 1e-3)
    cluster = predict(config, 8, costs, 8, sweeps=sweeps)
    assert cluster.score == pytest.approx(3 * 0.01) and cluster.other == pytest.approx(3e-3)
    # the measured round overhead replaces the synthetic sweep kernel
    assert costs.overhead("sweep", 1e6) == 1e-3
    assert costs.overhead("step", 1e6) == 0.0


def test_frozen_prefix_rows_bound_and_fit():
    from hpc_picard.perfmodel import frozen_prefix_rows
    # the bound: i sweeps freeze at least i slices; one rank scores the rest
    assert frozen_prefix_rows(8, [4], 1) == [[8, 7, 6, 5]]
    # two time ranks: the last one keeps its 4 slices until the prefix reaches them
    assert frozen_prefix_rows(8, [4], 2) == [[4, 4, 4, 4]]
    # fitted to the evaluations a run made (per sample): they add up
    rows = frozen_prefix_rows(8, [4, 4], 1, evaluations=40)
    assert sum(map(sum, rows)) == 40 and rows[0][0] == 8


def test_measured_evaluations_shrink_a_blockwise_prediction():
    config = RunConfig(dim=16, num_samples=1, blocks=1, steps_per_block=8, picard_iters=8)
    steep = profile(eval_seconds=(0.0, 1.0), comm_alpha=0.0)        # 1/1023 s per row past 1
    per_row = 1.0 / 1023
    bound = predict(config, 1, steep, sweeps=[4])
    fitted = predict(config, 1, steep, sweeps=[4], evaluations=20)
    assert bound.score == pytest.approx(per_row * sum(r - 1 for r in (8, 7, 6, 5)))
    assert fitted.score == pytest.approx(per_row * sum(r - 1 for r in (8, 6, 4, 2)))


def test_wavefront_rounds_and_rows_per_round():
    """--schedule wavefront: window_bounds' rounds (one slice a round at most) with the
    window's slices over the time ranks; measured rounds and evaluations replace them."""
    config = RunConfig(sampler="piadm-sde", schedule="wavefront", active_blocks=2, dim=16,
                       num_samples=2, blocks=4, steps_per_block=8, picard_iters=8)
    steep = profile(eval_seconds=(0.0, 1.0), comm_alpha=0.0)
    per_row = 1.0 / 1023
    bound = predict(config, 4, steep, 4)
    assert bound.rounds == 32                                       # 4 x 8 slices
    assert bound.score == pytest.approx(32 * per_row * (4 * 2 - 1))  # 16 slices / 4 ranks x 2
    measured = predict(config, 4, steep, 4, sweeps=10, evaluations=80)
    assert measured.rounds == 10
    assert measured.score == pytest.approx(10 * per_row * (2 * 2 - 1))  # 8 slices a round
    assert predict(config, 4, profile(), 4, sweeps=10).comm > \
        predict(config.replace(schedule="blockwise"), 4, profile(), 4, sweeps=[3, 3, 2, 2]).comm


def test_a_guided_run_scores_two_rows_per_state():
    plain = RunConfig(sampler="sequential-sde", dim=16, num_samples=4, blocks=1, steps_per_block=10,
                      emulate_latency="0.01,0.001")
    guided = plain.replace(guidance_scale=2.0, labels="0")
    free = profile(eval_seconds=(0.0, 0.0), comm_alpha=0.0)
    assert predict(plain, 1, free).score == pytest.approx(10 * (0.01 + 0.001 * 4))
    assert predict(guided, 1, free).score == pytest.approx(10 * (0.01 + 0.001 * 8))
    steep = profile(eval_seconds=(0.0, 1.0), comm_alpha=0.0)
    real = guided.replace(emulate_latency="")
    assert predict(real, 1, steep).score == pytest.approx(10 * (8 - 1) / 1023)


def load_scaling_study():
    import importlib.util
    import os
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "drivers", "scaling_study.py")
    spec = importlib.util.spec_from_file_location("scaling_study", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_scaling_study_plan_and_auto_verdicts():
    """The wavefront is a series of the strong study; every auto split is measured
    AUTO_REPEATS times, one pass over all splits after another; the verdict compares
    the median walls and counts the model's pick against them."""
    study = load_scaling_study()
    points = study.plan_points(8, 2)
    wavefront = [pt for pt in points if pt[4].get("schedule") == "wavefront"]
    assert sorted({pt[2] for pt in wavefront if pt[1] == "emulated"}) == [1, 2, 4, 8]
    assert {pt[2] for pt in wavefront if pt[1] == "real"} == {1, 2}
    auto = [pt for pt in points if pt[0].startswith("auto")]
    per_repeat = len(auto) // study.AUTO_REPEATS
    assert [pt[1] for pt in auto[::per_repeat]] == [f"repeat {r}" for r in range(study.AUTO_REPEATS)]
    assert [pt[:1] + pt[2:4] for pt in auto[:per_repeat]] == [pt[:1] + pt[2:4] for pt in auto[per_repeat:2 * per_repeat]]
    # a configuration's rows: the median decides the fastest split, not one lucky run
    first = auto[0]
    rows = []
    for t, walls in ((2, (1.0, 1.0, 5.0)), (4, (0.9, 1.1, 1.2))):
        for i, wall in enumerate(walls):
            rows.append({"study": first[0], "series": f"repeat {i}", "ranks": first[2],
                         "time_ranks": t, "samples": first[4]["num_samples"], "dim": 256,
                         "blocks": 2, "steps_per_block": 32, "emulate_latency": first[4]["emulate_latency"],
                         "sampler": "piadm-sde", "sweeps_per_block": [10, 10], "evals_per_sample": 400,
                         "wall_s": wall})
    verdict = study.auto_verdicts(rows, profile(eval_seconds=(0.0, 1.0), dim=256))[0]
    assert verdict["fastest"] == 2 and verdict["walls"] == {2: 1.0, 4: 1.1}
    assert verdict["pick"] in (2, 4) and verdict["loss"] == pytest.approx(0.0 if verdict["pick"] == 2 else 0.1)


def test_an_emulated_round_costs_the_measured_round_of_its_group_size():
    """After an emulated device wait a round costs the profile's "sync/g" measurement
    for sample groups of g time ranks ("sync": one group of all ranks)."""
    config = RunConfig(dim=16, num_samples=4, blocks=1, steps_per_block=8, picard_iters=8,
                       emulate_latency="0.02")
    comm = {name: CollectiveCost([2, 8], [0.0, 0.0], [0.0, 0.0])
            for name in ("exscan", "allreduce", "bcast", "allgather")}
    comm.update({"sync": CollectiveCost([8], [4e-3], [0.0]),
                 "sync/4": CollectiveCost([8], [3e-3], [0.0]),
                 "sync/2": CollectiveCost([8], [2e-3], [0.0])})
    costs = profile(comm=comm, eval_seconds=(0.0, 0.0))
    for time_ranks, seconds in ((8, 4e-3), (4, 3e-3), (2, 2e-3)):
        pred = predict(config, 8, costs, time_ranks, sweeps=[5])
        assert pred.comm == pytest.approx(5 * seconds), time_ranks
