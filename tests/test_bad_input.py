"""Bad input and numerical faults: each fails with a clear one-line message, the
documented exit code (2: bad input, 1: the numerics failed), and no output file."""
from __future__ import annotations

import math
import os

import pytest
from click.testing import CliRunner
from ops_support import TESTS_ON_PATH, leftovers, mpirun

from hpc_picard.cli import main
from hpc_picard.grid import TimeGrid
from hpc_picard.samplers import SamplingError
from hpc_picard.samplers.monitor import SweepMonitor

SMALL = ["--dim", "16", "--num-samples", "4", "--blocks", "4", "--steps-per-block", "8"]


@pytest.fixture(autouse=True)
def in_tmp(cli_tmp):
    return cli_tmp


def invoke(args):
    return CliRunner().invoke(main, args + ["--quiet"], catch_exceptions=False)


def assert_fails(args, code: int, message: str, tmp_path):
    result = invoke(args)
    assert result.exit_code == code, result.output
    assert message in result.output
    assert leftovers(tmp_path) == []
    return result


def write(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    return str(tmp_path / name)


@pytest.mark.parametrize("args, message", [
    (["--model", "nope"], "unknown model 'nope'"),
    (["--sampler", "nope"], "Invalid value for '--sampler'"),
    (["--dim", "10"], "the grf model needs --dim to be a perfect square (n x n grid), got 10"),
    (["--dim", "-4"], "--dim must be positive (omit it for the model's own d), got -4"),
    (["--num-samples", "0"], "--num-samples must be positive, got 0"),
    (["--blocks", "-1"], "--blocks must be positive, got -1"),
    (["--steps-per-block", "0"], "--steps-per-block must be positive, got 0"),
    (["--picard-iters", "0"], "--picard-iters must be positive, got 0"),
    (["--T", "0.001", "--delta", "0.01"], "--T must exceed --delta, got T=0.001 <= delta=0.01"),
    (["--T", "0.01", "--delta", "0.01"], "--T must exceed --delta"),
    (["--delta", "0"], "--delta must be positive"),
    (["--tol", "-0.1"], "--tol must be non-negative, got -0.1"),
    (["--time-ranks", "2"], "--time-ranks 2 must divide the number of ranks (1)"),
    (["--checkpoint-every", "0", "--checkpoint", "ck.h5"], "--checkpoint-every must be at least 1"),
    (["--checkpoint", "out.h5", "--output", "out.h5"], "--checkpoint and --output must be different files"),
    (["--checkpoint", "nowhere/ck.h5"], "checkpoint directory"),
    (["--output", "nowhere/out.h5"], "output directory"),
])
def test_bad_options(args, message, in_tmp):
    result = assert_fails(SMALL + args, 2, message, in_tmp)
    if "directory" in message:
        assert "nowhere does not exist" in result.output


@pytest.mark.parametrize("text, message", [
    ('model = "nope"\n', "unknown model 'nope'; choose one of: grf, gmm"),
    ('sampler = "nope"\n', "unknown sampler 'nope'"),
    ("bogus = 1\nother-thing = 2\n", "unknown configuration key(s): bogus, other_thing"),
    ('dim = "big"\n', "configuration key 'dim' must be of type int, got str 'big'"),
    ("tol = true\n", "configuration key 'tol' must be of type float, got bool True"),
    ("dim = [16]\n", "configuration key 'dim' must be of type int"),
    ("dim = \n", "is not valid TOML"),
])
def test_bad_config_files(text, message, in_tmp):
    path = write(in_tmp, "run.toml", text)
    assert_fails(["--config", path], 2, message, in_tmp)


def test_a_missing_config_file(in_tmp):
    assert_fails(["--config", "absent.toml"], 2, "cannot read config file absent.toml", in_tmp)


def test_an_unwritable_output_directory_fails_before_computing(in_tmp):
    if os.geteuid() == 0:
        # root may write anywhere a mode allows nothing; /proc accepts no new files at all
        directory = "/proc"
    else:
        directory = str(in_tmp / "locked")
        os.mkdir(directory, 0o500)
    assert_fails(SMALL + ["--output", f"{directory}/out.h5"], 2,
                 f"output directory {directory} is not writable", in_tmp)


def test_an_existing_output_file_is_kept_unless_overwrite(in_tmp):
    (in_tmp / "out.h5").write_bytes(b"precious")
    result = invoke(SMALL + ["--output", "out.h5"])
    assert result.exit_code == 2
    assert "output file out.h5 exists; pass --overwrite to replace it" in result.output
    assert (in_tmp / "out.h5").read_bytes() == b"precious"
    assert invoke(SMALL + ["--output", "out.h5", "--overwrite"]).exit_code == 0
    assert (in_tmp / "out.h5").read_bytes()[:8] == b"\x89HDF\r\n\x1a\n"


def test_a_non_finite_score_names_block_slice_and_rank(in_tmp):
    assert_fails(["--model", "fault_models:make_nan", "--dim", "4", "--num-samples", "4",
                  "--blocks", "2", "--steps-per-block", "8"], 1,
                 "error on rank 0: non-finite score in block 0, slice 0 (forward time t=10) "
                 "on time rank 0", in_tmp)


def test_diverging_sweeps_stop_with_advice(in_tmp):
    # Two blocks over [delta, T]: the first block is far too long for 12 sweeps.
    result = assert_fails(["--model", "gmm", "--dim", "8", "--num-samples", "4", "--blocks", "2",
                           "--steps-per-block", "64"], 1,
                          "Picard sweeps diverge in block 0: the residual grew over 6 "
                          "consecutive sweeps", in_tmp)
    assert "use more --blocks" in result.output


def test_a_corrupt_checkpoint_is_refused_by_the_cli(in_tmp):
    write(in_tmp, "ck.h5", "garbage\n" * 100)
    result = invoke(SMALL + ["--checkpoint", "ck.h5", "--resume"])
    assert result.exit_code == 2
    assert "checkpoint ck.h5 is corrupt or truncated" in result.output
    assert leftovers(in_tmp) == ["ck.h5"]


# -- under mpiexec: every rank stops, one message, no hang --------------------------------
def test_more_time_ranks_than_slices_under_mpiexec(in_tmp):
    result = mpirun(2, SMALL + ["--steps-per-block", "1", "--output", "out.h5"], cwd=in_tmp)
    assert result.returncode == 2
    assert result.stderr.count("2 time ranks but only 1 slices per block") == 1
    assert leftovers(in_tmp) == []


def test_a_non_finite_score_under_mpiexec_ends_every_rank(in_tmp):
    result = mpirun(2, ["--model", "fault_models:make_nan", "--dim", "4", "--num-samples", "4",
                        "--blocks", "2", "--steps-per-block", "8", "--output", "out.h5"],
                    cwd=in_tmp, env=TESTS_ON_PATH)
    assert result.returncode != 0
    assert "non-finite score in block 0, slice" in result.stderr
    assert "on time rank" in result.stderr
    assert leftovers(in_tmp) == []


# -- the divergence rule itself -----------------------------------------------------------
def block_of(slices: int):
    return TimeGrid.build(10.0, 1e-3, 4, slices).blocks[0]


def feed(monitor, residuals):
    for sweep, r in enumerate(residuals, start=1):
        monitor.check(sweep, r * r)


def test_healthy_transients_are_not_divergence():
    # residual histories of real blocks: two or three growing sweeps, then contraction
    feed(SweepMonitor(block_of(64), 12, 0.05), [20, 27, 22, 12, 5.0, 1.7, 0.46, 0.11, 0.02])
    feed(SweepMonitor(block_of(16), 12, 0.05), [35, 130, 230, 270, 230, 150, 72, 27, 8, 1.9, 0.34, 0.05])
    # unconverged after K sweeps but far below where it started: not divergence
    feed(SweepMonitor(block_of(64), 12, 0.05), [46, 130, 200, 210, 170, 120, 63, 30, 12, 4.3, 1.4, 0.38])
    # near round-off a residual may wobble upwards
    feed(SweepMonitor(block_of(64), 12, 0.0), [1, 1e-3, 1e-9, 2e-15, 3e-15, 4e-15, 5e-15])


def test_growth_over_half_the_sweeps_is_divergence():
    monitor = SweepMonitor(block_of(64), 12, 0.05)
    with pytest.raises(SamplingError, match=r"grew over 6 consecutive sweeps \(249 -> "):
        feed(monitor, [249, 1580, 5220, 11600, 19000, 26000, 28000])


def test_no_net_progress_after_k_sweeps_is_divergence():
    monitor = SweepMonitor(block_of(16), 12, 0.05)
    with pytest.raises(SamplingError, match="after 12 sweeps the residual 8.8e"):
        feed(monitor, [6.2e5, 7e6, 4e7, 1e8, 9e7, 5e7, 2e7, 1e7, 5e6, 2e6, 1e6, 8.8e5])


def test_small_k_studies_are_not_divergence():
    feed(SweepMonitor(block_of(64), 3, 0.05), [20, 27, 22])
    feed(SweepMonitor(block_of(64), 2, 0.05), [20, 27])


def test_k_at_least_m_is_exact_whatever_the_transient():
    feed(SweepMonitor(block_of(8), 8, 0.05), [1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7])


def test_a_non_finite_residual_is_divergence():
    with pytest.raises(SamplingError, match="the residual is nan after sweep 2"):
        feed(SweepMonitor(block_of(64), 12, 0.05), [3.0, math.nan])
