"""The model owns d: user models are wrapped once (models.score_model), an omitted
--dim takes the model's, a contradicting one is refused before sampling, and
checkpoints, plans and dry runs use the model's d."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from model_factories import BareModel
from ops_support import leftovers

from hpc_picard.cli import finish, main
from hpc_picard.config import RunConfig
from hpc_picard.dry_run import make_plan
from hpc_picard.models import ScoreModel, resolve_dim, score_model
from hpc_picard.parallel import Communicator
from hpc_picard.runner import run

GRID = ["--num-samples", "4", "--blocks", "3", "--steps-per-block", "4", "--picard-iters", "4"]


@pytest.fixture(autouse=True)
def in_tmp(cli_tmp):
    return cli_tmp


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_a_bare_contract_model_runs_to_the_written_file(in_tmp):
    """dim and score, nothing else: the finishing step used to fail on parameters()."""
    result = invoke("--model", "model_factories:make_bare", *GRID, "--quiet")
    assert result.exit_code == 0, result.output
    with h5py.File(in_tmp / "samples.h5") as fh:
        assert fh["samples"].shape == (4, 9)
        assert json.loads(fh.attrs["config"])["dim"] == 9
        assert dict(fh["model"].attrs) == {}


def test_the_library_wraps_a_bare_model_once(in_tmp):
    model = score_model(BareModel())
    assert isinstance(model, ScoreModel) and model.parameters() == {} and model.dim == 9
    assert score_model(model) is model
    config = RunConfig(num_samples=4, blocks=3, steps_per_block=4, picard_iters=4,
                       output=str(in_tmp / "lib.h5")).validate(1)
    result = run(config, Communicator.self_comm(), model=BareModel())
    assert result.samples.shape == (4, 9) and result.config.dim == 9
    finish(config, 1, result, quiet=True)
    with h5py.File(in_tmp / "lib.h5") as fh:
        assert json.loads(fh.attrs["config"])["dim"] == 9
    with pytest.raises(TypeError, match="needs dim and score"):
        score_model(object())


@pytest.mark.parametrize("extra", [[], ["--dry-run"]])
def test_a_dim_contradicting_a_network_is_refused_before_sampling(in_tmp, extra):
    result = invoke("--model", "digits", "--dim", "16", *extra)
    assert result.exit_code == 2
    assert result.output.strip() == ("picard-sample: error: --dim 16 contradicts the model: "
                                     "digits has d = 64; omit --dim")
    assert leftovers(in_tmp) == []


def test_a_dim_contradicting_a_factory_model_is_refused_before_sampling(in_tmp):
    result = invoke("--model", "model_factories:make_bare", "--dim", "16", *GRID)
    assert result.exit_code == 2, result.output
    assert "--dim 16 contradicts the model: model_factories:make_bare has d = 9" in result.output
    assert leftovers(in_tmp) == []


def test_dry_run_plans_with_the_model_dim_without_loading_weights(in_tmp, monkeypatch):
    from hpc_picard.models import digits

    def no_weights(*args, **kwargs):
        raise AssertionError("a dry run must not load the network")
    monkeypatch.setattr(digits, "load_network", no_weights)
    result = invoke("--dry-run", "--model", "digits", "--num-samples", "8", "--blocks", "4")
    assert result.exit_code == 0, result.output
    assert "plan: piadm-sde on digits (d=64), 8 samples" in result.output
    planned = make_plan(RunConfig(model="digits", dim=64, num_samples=8, blocks=4), 1)
    assert make_plan(RunConfig(model="digits", dim=1024, num_samples=8, blocks=4), 1) != planned
    factory = invoke("--dry-run", "--model", "model_factories:make_bare")
    assert "(d=9)" in factory.output, factory.output


def test_omitted_dim_takes_the_model_default_for_analytic_targets():
    assert resolve_dim(RunConfig(model="grf")).dim == 1024
    assert resolve_dim(RunConfig(model="gmm", dim=5)).dim == 5
    assert resolve_dim(RunConfig(model="digits")).dim == 64


def test_network_checkpoint_then_resume(in_tmp):
    """The job scripts always pass --resume: a network job that is requeued resumes
    (it was refused: 'expected (2, 1024)')."""
    pytest.importorskip("torch")
    args = ["--model", "digits", "--num-samples", "2", "--blocks", "2", "--steps-per-block", "2",
            "--picard-iters", "2", "--checkpoint", "ck.h5", "--quiet"]
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    with h5py.File(in_tmp / "samples.h5") as fh:
        before = fh["samples"][...]
    again = invoke(*args, "--resume", "--overwrite")
    assert again.exit_code == 0, again.output
    with h5py.File(in_tmp / "samples.h5") as fh:
        np.testing.assert_array_equal(fh["samples"][...], before)
        assert fh["stats"].attrs["restarts"] == 1
    with h5py.File(in_tmp / "ck.h5") as fh:
        assert fh["states"].shape == (2, 64)
