"""The trained digits demo: shipped weights, sampling, quality figures, PNG output."""
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from hpc_picard.check import check_model  # noqa: E402
from hpc_picard.config import RunConfig  # noqa: E402
from hpc_picard.models import build_model  # noqa: E402
from hpc_picard.models.digits import (WEIGHTS, DigitsQuality, frechet_distance, image_grid,  # noqa: E402
                                      load_real_digits, read_png, write_png)
from hpc_picard.parallel import Communicator  # noqa: E402
from hpc_picard.runner import run  # noqa: E402

BIN = os.path.dirname(sys.executable)


@pytest.fixture(scope="module")
def model():
    return build_model(RunConfig(model="digits"))


def small_config(**changes):
    base = dict(model="digits", num_samples=4, sampler="sequential-sde", blocks=2,
                steps_per_block=4, picard_iters=4, tol=0.0, output=os.devnull)
    return RunConfig(**{**base, **changes}).validate()


def test_weights_ship_with_the_package(model):
    assert os.path.isfile(WEIGHTS)
    assert os.path.getsize(WEIGHTS) < 2 * 1024 * 1024       # "small"
    assert model.dim == 64 and model.prediction == "epsilon"


def test_digits_model_passes_check_model(model):
    report = check_model(model, T=10.0, delta=1e-3)
    assert report.ok, report.text()


def test_quality_figures_tell_real_digits_from_noise():
    quality = DigitsQuality.shared()
    real, _ = load_real_digits()
    subset = real[np.random.default_rng(0).permutation(len(real))[:300]]
    good = quality.evaluate(subset)
    noise = quality.evaluate(np.random.default_rng(1).uniform(-1, 1, (300, 64)))
    assert good["classifier_confidence"] > 0.9 and good["class_balance"] > 0.95
    assert good["frechet_distance"] < 3 * good["frechet_floor"] + 1.0
    assert noise["frechet_distance"] > 10 * good["frechet_distance"]
    assert good["class_counts"].sum() == 300


def test_frechet_distance_of_identical_sets_is_zero():
    x = np.random.default_rng(0).standard_normal((200, 5))
    assert abs(frechet_distance(x, x)) < 1e-8
    assert frechet_distance(x, x + 1.0) == pytest.approx(5.0, rel=1e-6)


def test_generated_digits_are_recognisable(model):
    config = small_config(num_samples=48, blocks=4, steps_per_block=8)
    result = run(config, Communicator.self_comm(), model=model)
    quality = DigitsQuality.shared().evaluate(result.samples)
    noise = DigitsQuality.shared().evaluate(np.random.default_rng(1).uniform(-1, 1, (48, 64)))
    assert quality["classifier_confidence"] > 0.6, quality
    assert quality["frechet_distance"] < noise["frechet_distance"] / 3, (quality, noise)


def test_picard_with_k_equal_m_reproduces_sequential_on_digits(model):
    seq = run(small_config(), Communicator.self_comm(), model=model).samples
    par = run(small_config(sampler="piadm-sde"), Communicator.self_comm(), model=model).samples
    np.testing.assert_allclose(par, seq, rtol=1e-4, atol=1e-4)


def test_png_round_trip(tmp_path):
    samples = np.linspace(-1, 1, 5 * 64).reshape(5, 64)
    grid = image_grid(samples, 8, scale=2, columns=3)
    assert grid.shape == (2 * 17 + 1, 3 * 17 + 1) and grid.dtype == np.uint8
    assert grid[1, 1] == 0 and grid[0, 0] == 128            # darkest pixel, gap colour
    write_png(tmp_path / "g.png", grid)
    np.testing.assert_array_equal(read_png(tmp_path / "g.png"), grid)


def test_cli_samples_digits_and_saves_images(tmp_path):
    png = tmp_path / "digits.png"
    res = subprocess.run(
        [os.path.join(BIN, "picard-sample"), "--model", "digits", "--num-samples", "4",
         "--blocks", "2", "--steps-per-block", "4", "--output", str(tmp_path / "d.h5"),
         "--save-images", str(png), "--device", "cpu", "--cuda-aware-mpi", "no"],
        capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "classifier_confidence" in res.stdout
    assert "device cpu" in res.stderr                        # the placement log line
    image = read_png(png)
    assert image.shape == (2 * 33 + 1, 2 * 33 + 1)           # 2x2 tiles of 8x8 at scale 4
    import h5py
    import json
    with h5py.File(tmp_path / "d.h5") as fh:
        assert fh["samples"].shape == (4, 64)
        assert json.loads(fh.attrs["config"])["dim"] == 64   # the network's d, not --dim's


@pytest.mark.mpi
@pytest.mark.timeout(180)
def test_digits_piadm_is_independent_of_the_rank_count():
    from mpi4py import MPI
    world = Communicator(MPI.COMM_WORLD)
    model = build_model(RunConfig(model="digits"))
    # tol 0: a fixed number of sweeps, so float32 round-off of differently sized
    # network batches (rows per rank) cannot flip a convergence decision
    config = small_config(sampler="piadm-sde", num_samples=3, steps_per_block=4, picard_iters=3)
    got = run(config, world, model=model).samples
    ok = True
    if world.rank == 0:
        ref = run(config, Communicator.self_comm(), model=model).samples
        ok = bool(np.allclose(got, ref, rtol=1e-4, atol=1e-4))
    assert world.bcast_obj(ok)


def test_training_recipe_is_reproducible():
    """drivers/train_digits.py with its fixed seed gives the same weights twice."""
    import importlib.util
    path = os.path.join(os.path.dirname(__file__), "..", "drivers", "train_digits.py")
    spec = importlib.util.spec_from_file_location("train_digits", path)
    train_digits = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_digits)
    kwargs = dict(steps=3, width=16, batch=8, lr=1e-3, seed=0, t_min=1e-3, t_max=10.0, threads=1,
                  log_every=10)
    a = train_digits.train(**kwargs).state_dict()
    b = train_digits.train(**kwargs).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = train_digits.train(**{**kwargs, "seed": 1}).state_dict()
    assert not all(torch.equal(a[k], c[k]) for k in a)
