"""Progress line, rank-prefixed logs, and the summary table / output stats."""
from __future__ import annotations

import io
import logging
import sys

import h5py
import pytest
from click.testing import CliRunner

from hpc_picard.cli import main
from hpc_picard.progress import Progress, configure_logging, summary_table
from hpc_picard.samplers import BlockStats


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_draws_blocks_sweeps_and_residual_on_a_terminal():
    out = Terminal()
    progress = Progress(num_blocks=3, max_sweeps=5, stream=out, interval=0.0)
    assert progress.enabled
    progress.sweep(0, 2, 0.125)
    progress.block(2, BlockStats(sweeps=4, evaluations=32, residual=0.01))
    progress.close()
    text = out.getvalue()
    assert "\rpicard-sample: block 0 (blocks 0-2)  sweep 2/5  residual 0.125" in text
    assert "block 2 (blocks 0-2) done  (4 sweeps, residual 0.01)" in text
    assert text.endswith("\n")


def test_progress_is_off_when_not_a_terminal_or_disabled():
    plain = io.StringIO()
    Progress(3, 5, stream=plain).sweep(0, 1, 1.0)
    assert plain.getvalue() == ""
    term = Terminal()
    progress = Progress(3, 5, stream=term, enabled=False)
    progress.sweep(0, 1, 1.0)
    progress.close()
    assert term.getvalue() == ""


def test_log_lines_carry_the_rank():
    out = io.StringIO()
    logger = configure_logging(3, verbose=True, stream=out)
    logger.debug("block %d", 7)
    assert out.getvalue() == "[rank 3] DEBUG block 7\n"
    quiet = io.StringIO()
    logger = configure_logging(3, verbose=False, stream=quiet)
    logger.info("only rank 0 tells this")
    logger.warning("every rank tells this")
    assert quiet.getvalue() == "[rank 3] WARNING every rank tells this\n"
    configure_logging(0)
    assert logging.getLogger("hpc_picard").level == logging.INFO


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    configure_logging(0)


def test_cli_summary_matches_the_output_stats(cli_env):
    result = CliRunner().invoke(main, ["--dim", "16", "--num-samples", "4", "--blocks", "3",
                                       "--steps-per-block", "8", "--output", "out.h5",
                                       "--checkpoint", "ck.h5"])
    assert result.exit_code == 0, result.output
    text = result.output
    assert "picard-sample:" in text and "\r" not in text    # no progress: not a TTY
    with h5py.File("out.h5", "r") as fh:
        stats = dict(fh["stats"].attrs)
    assert f"rounds (critical path)            {stats['rounds']}" in text
    for label, name in [("score model", "score_time"), ("communication", "communication_time"),
                        ("I/O (checkpoints, output)", "io_time"), ("wall time", "wall_time")]:
        line = next(row for row in text.splitlines() if row.strip().startswith(label))
        assert f"{stats[name]:.3f} s" in line, (label, line)
    assert stats["io_time"] > 0                              # three checkpoints were written
    assert stats["restarts"] == 0
    assert "accuracy: kl_gaussian_fit" in text


def test_cli_verbose_logs_every_sweep_with_the_rank(cli_env):
    result = CliRunner().invoke(main, ["--dim", "16", "--num-samples", "4", "--blocks", "8",
                                       "--steps-per-block", "8", "--picard-iters", "3", "--tol", "0",
                                       "--output", "out.h5", "--verbose", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "[rank 0] DEBUG block 1 sweep 3 residual" in result.output
    assert "[rank 0] DEBUG block 7 (blocks 0-7): 3 sweeps" in result.output


def test_summary_table_reports_restarts_and_shares():
    from hpc_picard.config import RunConfig
    stats = {"rounds": 10, "sequential_rounds": 40, "evaluations": 80, "wall_time": 2.0,
             "score_time": 1.0, "communication_time": 0.5, "io_time": 0.25, "noise_time": 0.05,
             "restarts": 2}
    text = summary_table(RunConfig(), 4, 2, stats, {"kl": 0.5, "array": [1, 2]})
    assert "2 sample group(s) x 2 time rank(s)" in text
    assert "(4.0x)" in text
    assert "50.0%" in text and "25.0%" in text and "12.5%" in text
    assert "other (arithmetic)" in text and "0.200 s" in text
    assert "restarts" in text and "accuracy: kl" in text and "array" not in text


def test_cli_progress_can_be_forced_where_stderr_is_a_pipe(cli_env):
    # under mpiexec every rank's stderr is a pipe: --progress turns the line on anyway
    result = CliRunner().invoke(main, ["--dim", "16", "--num-samples", "4", "--blocks", "2",
                                       "--steps-per-block", "8", "--output", "out.h5", "--quiet",
                                       "--progress"])
    assert result.exit_code == 0, result.output
    assert "picard-sample: block 1 (blocks 0-1) done" in result.output
    assert result.output.endswith("\n")
