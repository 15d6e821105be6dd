"""picard-sample end to end, as users run it (subprocesses) and in-process (CliRunner)."""
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from hpc_picard import __version__
from hpc_picard.cli import main

from conftest import tool

SMALL = ["--dim", "64", "--num-samples", "8", "--blocks", "4", "--steps-per-block", "8",
         "--picard-iters", "8"]


def cli(*args, timeout=120):
    return subprocess.run([tool("picard-sample"), *args], capture_output=True, text=True,
                          timeout=timeout)


def test_help_documents_every_option_with_default():
    res = cli("--help")
    assert res.returncode == 0
    from hpc_picard.cli import OPTIONS
    for flag, name, _, _ in OPTIONS:
        assert flag in res.stdout
    assert "[default: 10.0]" in res.stdout and "[default: 0.001]" in res.stdout


def test_output_layout(tmp_path):
    out = tmp_path / "x.h5"
    res = cli(*SMALL, "--output", str(out), "--seed", "4")
    assert res.returncode == 0, res.stderr
    assert "rounds" in res.stdout and "kl_gaussian_fit" in res.stdout
    with h5py.File(out) as fh:
        assert fh["samples"].shape == (8, 64)
        cfg = json.loads(fh.attrs["config"])
        assert cfg["seed"] == 4 and cfg["dim"] == 64 and cfg["sampler"] == "piadm-sde"
        assert fh.attrs["hpc_picard_version"] == __version__
        assert fh.attrs["n_ranks"] == 1
        st = fh["stats"]
        assert st.attrs["rounds"] == st["sweeps_per_block"][()].sum()
        # at most 8 slices per sweep: exact and converged slices are not re-evaluated
        assert st.attrs["rounds"] <= st.attrs["evaluations"] < 8 * st.attrs["rounds"]
        assert st.attrs["wall_time"] > 0
        assert st["residual_per_block"].shape == (4,)
        assert "kl_gaussian_fit" in st.attrs and "spectrum_rel_error" in st
        assert fh["model"].attrs["n"] == 8 and fh["model"].attrs["k0"] == 4.0
    assert [p.name for p in tmp_path.iterdir()] == ["x.h5"]     # no temporary left


def test_gmm_output_records_means(tmp_path):
    out = tmp_path / "g.h5"
    res = cli("--model", "gmm", "--dim", "3", "--num-samples", "16", "--blocks", "4",
              "--steps-per-block", "8", "--gmm-components", "5", "--output", str(out))
    assert res.returncode == 0, res.stderr
    with h5py.File(out) as fh:
        assert fh["model/means"].shape == (5, 3)
        np.testing.assert_allclose(fh["model/weights"][()], 0.2)
        assert fh["model"].attrs["std"] == 0.5
        assert {"weight_error", "sliced_wasserstein"} <= set(fh["stats"].attrs)


def test_config_file_and_override(tmp_path):
    conf = tmp_path / "run.toml"
    conf.write_text('dim = 16\nnum-samples = 4\nblocks = 2\nsteps-per-block = 4\nseed = 9\n')
    out = tmp_path / "c.h5"
    res = CliRunner().invoke(main, ["--config", str(conf), "--seed", "2", "--quiet",
                                    "--output", str(out)])
    assert res.exit_code == 0, res.output
    with h5py.File(out) as fh:
        cfg = json.loads(fh.attrs["config"])
    assert (cfg["dim"], cfg["seed"], cfg["blocks"]) == (16, 2, 2)


@pytest.mark.parametrize("args,needle", [
    (["--dim", "10"], "perfect square"),
    (["--blocks", "0"], "--blocks must be positive"),
    (["--T", "0.0001"], "--T must exceed --delta"),
    (["--tol", "-1"], "--tol must be non-negative"),
    (["--output", "/nonexistent/x.h5"], "does not exist"),
    (["--model", "nope"], "unknown model 'nope'"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, needle):
    res = subprocess.run([tool("picard-sample"), *SMALL, *args] +
                         ([] if "--output" in args else ["--output", str(tmp_path / "x.h5")]),
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert res.returncode == 2
    assert needle in res.stderr
    assert not list(tmp_path.iterdir())


def test_existing_output_needs_overwrite(tmp_path):
    out = tmp_path / "x.h5"
    out.write_text("precious")
    res = cli(*SMALL, "--output", str(out))
    assert res.returncode == 2 and "--overwrite" in res.stderr
    assert out.read_text() == "precious"
    assert cli(*SMALL, "--output", str(out), "--overwrite").returncode == 0
    assert h5py.is_hdf5(out)
