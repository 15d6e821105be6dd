"""--emulate-latency: score calls padded to an emulated device's time; MPICH's no-spin
settings in the job scripts."""
from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import REPO
from hpc_picard.cli import main
from hpc_picard.config import ConfigError, RunConfig
from hpc_picard.emulation import QUIET_PROGRESS_ENV, EmulatedLatency, LatencyError
from hpc_picard.parallel import Communicator
from hpc_picard.runner import run


@pytest.mark.parametrize("text, expected", [("", None), ("0.02", EmulatedLatency(0.02, 0.0)),
                                            ("0.01,0.001", EmulatedLatency(0.01, 0.001)),
                                            (" 0 , 0 ", EmulatedLatency(0.0, 0.0))])
def test_latency_parses(text, expected):
    assert EmulatedLatency.parse(text) == expected


@pytest.mark.parametrize("text", ["x", "0.1,0.2,0.3", "-0.1", "nan", "0.1,inf"])
def test_bad_latency_is_a_config_error(text):
    with pytest.raises(LatencyError):
        EmulatedLatency.parse(text)
    with pytest.raises(ConfigError, match="--emulate-latency"):
        RunConfig(emulate_latency=text).validate()


def test_bad_latency_on_the_command_line_exits_2(cli_tmp):
    result = CliRunner().invoke(main, ["--emulate-latency", "0.1,x", "--dim", "16"])
    assert result.exit_code == 2
    assert "--emulate-latency" in result.output
    assert not list(cli_tmp.iterdir())


def test_every_score_call_lasts_the_emulated_time_and_scores_are_unchanged(small_config):
    """One score call per sweep: the score time is at least calls x (T0 + T1 rows), and
    the samples are those of the run without emulation (the real score is computed)."""
    config = small_config.replace(blocks=2, steps_per_block=4, picard_iters=3, num_samples=2)
    latency = EmulatedLatency(0.02, 0.001)
    plain = run(config, Communicator.self_comm())
    started = time.perf_counter()
    slow = run(config.replace(emulate_latency="0.02,0.001"), Communicator.self_comm())
    elapsed = time.perf_counter() - started
    np.testing.assert_array_equal(slow.samples, plain.samples)
    calls = slow.stats["rounds"]                       # one batched call per sweep
    rows = config.steps_per_block * config.num_samples
    floor = calls * latency.seconds(rows)
    assert slow.stats["score_time"] >= floor
    assert elapsed >= floor
    assert plain.stats["score_time"] < floor           # the floor came from the emulation


def test_sequential_calls_are_padded_per_step(small_config):
    config = small_config.replace(sampler="sequential-sde", blocks=1, steps_per_block=5,
                                  num_samples=2, emulate_latency="0.01")
    result = run(config, Communicator.self_comm())
    assert result.stats["score_time"] >= 5 * 0.01


def test_job_scripts_export_the_no_spin_settings(tmp_path):
    generator = f"{REPO}/jobscripts/make_sweep.py"
    picard = ["--", "--dim", "64", "--num-samples", "8", "--emulate-latency", "0.02"]
    quiet = tmp_path / "quiet"
    busy = tmp_path / "busy"
    for out, extra in ((quiet, []), (busy, ["--busy-wait"])):
        res = subprocess.run([sys.executable, generator, "--scheduler", "slurm", "--ranks", "2",
                              "--out", str(out), *extra, *picard],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
    text = (quiet / "picard-strong-p00002.sh").read_text()
    for name, value in QUIET_PROGRESS_ENV.items():
        assert f"{name}={value}" in text
        assert name not in (busy / "picard-strong-p00002.sh").read_text()
    assert "--emulate-latency 0.02" in text


def test_sweeps_pass_time_ranks_auto_through(tmp_path):
    res = subprocess.run([sys.executable, f"{REPO}/jobscripts/make_sweep.py", "--scheduler", "pbs",
                          "--ranks", "4", "--out", str(tmp_path), "--", "--dim", "64",
                          "--num-samples", "8", "--time-ranks", "auto"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "--time-ranks auto" in (tmp_path / "picard-strong-p00004.sh").read_text()
