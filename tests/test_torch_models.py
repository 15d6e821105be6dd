"""The model contract: network adapters, the VP clock, factories and check_model."""
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import model_factories as mf  # noqa: E402  (tests/ is on sys.path under pytest)
from hpc_picard.check import check_model  # noqa: E402
from hpc_picard.config import ConfigError, RunConfig  # noqa: E402
from hpc_picard.models import GaussianRandomField, build_model  # noqa: E402
from hpc_picard.models.torch_models import (CallableScoreModel, NetworkScoreModel,  # noqa: E402
                                            VPSchedule, as_score_model, prediction_to_score)
from hpc_picard.parallel import Communicator  # noqa: E402
from hpc_picard.runner import run  # noqa: E402

TESTS = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.dirname(sys.executable)


def points(n=6, d=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), np.geomspace(1e-3, 10.0, n)


@pytest.mark.parametrize("prediction", ["score", "epsilon", "sample", "v_prediction"])
def test_every_prediction_type_gives_the_exact_score(prediction):
    x, t = points()
    model = NetworkScoreModel(mf.GaussianNet(16, prediction), (16,), prediction=prediction)
    exact = mf.gaussian_score(x, t)
    # float32 network: relative accuracy of float32, amplified by 1/(1 - e^{-2t}) for x0
    np.testing.assert_allclose(model.score(x, t), exact, rtol=2e-4, atol=1e-4 * np.abs(exact).max())


def test_prediction_conversion_formulas_agree_with_each_other():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3))
    t = np.array([0.01, 0.3, 1.0, 4.0])
    var = -np.expm1(-2 * t)[:, None]
    eps = rng.standard_normal((4, 3))
    x0 = (x - np.sqrt(var) * eps) / np.exp(-t)[:, None]     # consistent with x, eps
    v = np.exp(-t)[:, None] * eps - np.sqrt(var) * x0
    s_eps = prediction_to_score(eps, x, t, "epsilon")
    np.testing.assert_allclose(prediction_to_score(x0, x, t, "sample"), s_eps, rtol=1e-10)
    np.testing.assert_allclose(prediction_to_score(v, x, t, "v_prediction"), s_eps, rtol=1e-10)


def test_vp_schedule_maps_discrete_steps_to_the_ou_clock():
    sched = VPSchedule.linear(1000)
    abar = sched.alphas_cumprod
    np.testing.assert_allclose(np.exp(-2 * sched.times), abar, rtol=1e-12)
    # exact at the schedule's own points, linear between, -1 at t = 0, clamped past the end
    np.testing.assert_allclose(sched.timestep(sched.times[[0, 10, 999]]), [0, 10, 999])
    mid = 0.5 * (sched.times[10] + sched.times[11])
    assert sched.timestep(mid) == pytest.approx(10.5)
    assert sched.timestep(0.0) == pytest.approx(-1.0)
    assert sched.timestep(sched.t_max + 3.0) == pytest.approx(999)
    with pytest.raises(ValueError):
        VPSchedule([0.5, 0.9])          # must decrease


def test_network_on_a_discrete_clock_sees_the_timestep_index():
    sched = VPSchedule.linear(100)

    class IndexedNet(torch.nn.Module):
        """Exact Gaussian eps-net that reads a DDPM index and looks its level up."""

        def forward(self, x, k):
            t = torch.tensor(np.interp(k.double().numpy(), np.arange(100), sched.times))
            return mf.GaussianNet(x.shape[1], "epsilon")(x, t)

    model = NetworkScoreModel(IndexedNet(), (16,), prediction="epsilon", clock=sched)
    x, _ = points(5)
    t = sched.times[[3, 20, 50, 70, 99]]
    exact = mf.gaussian_score(x, t)
    np.testing.assert_allclose(model.score(x, t), exact, rtol=2e-4, atol=1e-5)


def test_network_calls_are_chunked_to_max_batch():
    net = mf.GaussianNet(16, "score")
    model = NetworkScoreModel(net, (16,), max_batch=4)
    x, t = points(10)
    whole = NetworkScoreModel(mf.GaussianNet(16, "score"), (16,)).score(x, t)
    np.testing.assert_allclose(model.score(x, t), whole, rtol=1e-6)
    assert net.calls == [4, 4, 2]


def test_sampler_asks_the_model_for_its_chunk_size():
    """With --max-batch 0 a device-aware model sets the chunk (samplers/base.py)."""
    net = mf.GaussianNet(16, "score")
    model = NetworkScoreModel(net, (16,))
    model.preferred_batch = lambda: 3          # what a GPU model computes from free memory
    config = RunConfig(model="grf", dim=16, num_samples=5, sampler="sequential-sde",
                       blocks=1, steps_per_block=2, output=os.devnull)
    run(config, Communicator.self_comm(), model=model)
    assert net.calls == [3, 2, 3, 2]


def test_network_output_keeps_the_state_dtype():
    model = NetworkScoreModel(mf.GaussianNet(16, "score"), (16,))
    x, t = points()
    assert model.score(x.astype(np.float32), t).dtype == np.float32
    assert model.score(x, t).dtype == np.float64


def test_as_score_model_wraps_callables_modules_and_models():
    grf = GaussianRandomField(16)
    assert as_score_model(grf) is grf
    wrapped = as_score_model(mf.make_callable(), dim=16)
    assert isinstance(wrapped, CallableScoreModel) and wrapped.dim == 16
    module = as_score_model(mf.make_module(16))
    assert isinstance(module, NetworkScoreModel) and module.prediction == "epsilon"
    with pytest.raises(ValueError):
        as_score_model(mf.make_callable())      # a bare function needs dim
    with pytest.raises(TypeError):
        as_score_model(42, dim=3)


def test_factory_model_from_config():
    config = RunConfig(model="model_factories:make_module", dim=16).validate()
    model = build_model(config)
    x, t = points()
    np.testing.assert_allclose(model.score(x, t), mf.gaussian_score(x, t), rtol=2e-4, atol=1e-5)
    callable_model = build_model(RunConfig(model="model_factories:make_callable", dim=9))
    assert callable_model.dim == 9


@pytest.mark.parametrize("name", ["nonsense", "a b:c", "pkg:", "diffusers:/no/such/folder"])
def test_bad_model_names_are_config_errors(name):
    with pytest.raises(ConfigError):
        RunConfig(model=name).validate()


# -- check_model ------------------------------------------------------------------------
def test_check_model_passes_good_models():
    for model in (GaussianRandomField(16), as_score_model(mf.make_module(16)),
                  as_score_model(mf.make_callable(), dim=8)):
        report = check_model(model)
        assert report.ok, report.text()


def test_check_model_catches_the_wrong_clock():
    report = check_model(as_score_model(mf.make_ddpm_clocked(16)))
    assert not report.ok
    assert report.status("time convention") == "fail"


def test_check_model_catches_broken_models():
    good = as_score_model(mf.make_callable(), dim=8)

    class Broken:
        dim = 8

        def __init__(self, fn):
            self.fn = fn

        def score(self, x, t):
            return self.fn(x, t)

    cases = {
        "device": lambda x, t: torch.as_tensor(good.score(x, t)),
        "shape": lambda x, t: good.score(x, t)[:, :4],
        "finite": lambda x, t: np.where(t[:, None] > 0.01, good.score(x, t), np.nan),
        # batch-coupled: each row depends on the batch mean
        "rows": lambda x, t: good.score(x, t) - x.mean(axis=0),
    }
    for name, fn in cases.items():
        report = check_model(Broken(fn))
        assert report.status(name) == "fail", (name, report.text())
        assert not report.ok

    class Raises(Broken):
        def score(self, x, t):
            raise RuntimeError("boom")

    assert check_model(Raises(None)).status("call") == "fail"


def _cli(*args, timeout=240):
    env = dict(os.environ, PYTHONPATH=TESTS + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, env=env)


def test_check_model_command_exit_codes():
    ok = _cli(os.path.join(BIN, "picard-check-model"), "--model", "model_factories:make_module",
              "--dim", "16")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "model OK" in ok.stdout
    bad = _cli(os.path.join(BIN, "picard-check-model"), "--model", "model_factories:make_ddpm_clocked",
               "--dim", "16")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "time convention" in bad.stdout


def test_picard_sample_runs_a_factory_model(tmp_path):
    out = tmp_path / "f.h5"
    res = _cli(os.path.join(BIN, "picard-sample"), "--model", "model_factories:make_module",
               "--dim", "16", "--num-samples", "64", "--blocks", "4", "--steps-per-block", "8",
               "--output", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "device cpu" in res.stderr
    import h5py
    with h5py.File(out) as fh:
        samples = fh["samples"][...]
    assert samples.shape == (64, 16)
    # the data law is N(0, 0.25 I): the sample variance must be near it, far from 1
    assert 0.15 < samples.var() < 0.4
