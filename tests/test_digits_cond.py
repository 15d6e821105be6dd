"""The class-conditional digits model (``--model digits-cond``): shipped weights, labels
reaching the network, guided samples the independent classifier recognises."""
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
from hpc_picard.models.digits import COND_WEIGHTS, DigitsQuality, read_png  # noqa: E402
from hpc_picard.parallel import Communicator  # noqa: E402
from hpc_picard.runner import run  # noqa: E402

BIN = os.path.dirname(sys.executable)


@pytest.fixture(scope="module")
def model():
    return build_model(RunConfig(model="digits-cond"))


def test_weights_ship_and_the_model_is_conditional(model):
    assert os.path.isfile(COND_WEIGHTS) and os.path.getsize(COND_WEIGHTS) < 2 * 1024 * 1024
    assert model.dim == 64 and model.num_classes == 10
    report = check_model(model, T=10.0, delta=1e-3)
    assert report.ok and report.status("condition") == "ok", report.text()


def test_guided_samples_are_the_requested_digits(model):
    config = RunConfig(model="digits-cond", num_samples=20, labels="0-9", guidance_scale=2.0,
                       sampler="sequential-sde", blocks=4, steps_per_block=8, output=os.devnull)
    result = run(config.validate(), Communicator.self_comm(), model=model)
    quality = DigitsQuality.shared().evaluate(result.samples, result.labels)
    assert quality["label_accuracy"] >= 0.8, quality


def test_cli_draws_threes(tmp_path):
    png = tmp_path / "threes.png"
    res = subprocess.run(
        [os.path.join(BIN, "picard-sample"), "--model", "digits-cond", "--labels", "3",
         "--guidance-scale", "2", "--num-samples", "4", "--blocks", "2", "--steps-per-block", "4",
         "--output", str(tmp_path / "t.h5"), "--save-images", str(png), "--device", "cpu"],
        capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "label_accuracy" in res.stdout and "network rows / sample" in res.stdout
    assert read_png(png).shape == (2 * 33 + 1, 2 * 33 + 1)
    import h5py
    with h5py.File(tmp_path / "t.h5") as fh:
        assert fh["labels"][()].tolist() == [3, 3, 3, 3]
