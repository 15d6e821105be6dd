"""GPU tests: `make gpu-check` runs them on a CUDA machine; without one they skip.

They run the same code as the CPU tests in tests/test_devices.py and
tests/test_torch_models.py, with the device set to the rank's GPU, and compare with
the CPU results.
"""
import os

import numpy as np
import pytest

pytestmark = pytest.mark.gpu
torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device visible", allow_module_level=True)

from hpc_picard import devices  # noqa: E402
from hpc_picard.config import RunConfig  # noqa: E402
from hpc_picard.models import build_model  # noqa: E402
from hpc_picard.models.grf import GaussianRandomField  # noqa: E402
from hpc_picard.parallel import Communicator  # noqa: E402
from hpc_picard.runner import run  # noqa: E402

# conv layers on Ampere and later default to TF32: compare at its precision
TF32_RTOL = 5e-3


def rel_err(a, b):
    return float(np.abs(a - b).max() / (np.abs(b).max() + 1e-30))


def test_placement_picks_a_visible_gpu():
    place = devices.place("cuda", Communicator.self_comm())
    assert place.kind == "cuda" and place.index == 0
    assert place.torch_device == "cuda:0"
    assert devices.place("auto", Communicator.self_comm()).kind == "cuda"


def test_digits_scores_on_gpu_match_cpu():
    pytest.importorskip("sklearn")
    cpu = build_model(RunConfig(model="digits"), device="cpu")
    gpu = build_model(RunConfig(model="digits"), device="cuda:0")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 64))
    t = np.geomspace(1e-3, 10, 300)
    assert rel_err(gpu.score(x, t), cpu.score(x, t)) < TF32_RTOL
    assert gpu.preferred_batch() > 0
    gpu.max_batch = 7
    assert rel_err(gpu.score(x, t), cpu.score(x, t)) < TF32_RTOL


def test_grf_score_on_gpu_matches_numpy():
    pytest.importorskip("cupy")
    config = RunConfig(model="grf", dim=1024)
    gpu = build_model(config, device="cuda:0")
    ref = GaussianRandomField(1024)
    x = np.random.default_rng(1).standard_normal((64, 1024))
    t = np.geomspace(1e-3, 10, 64)
    np.testing.assert_allclose(gpu.score(x, t), ref.score(x, t), rtol=1e-9, atol=1e-9)
    assert gpu.preferred_batch() > 0


def test_collectives_stage_gpu_tensors_through_the_host():
    comm = Communicator.self_comm()
    a = torch.arange(6, dtype=torch.float64, device="cuda:0").reshape(2, 3)
    for out in (comm.exscan_sum(a), comm.allreduce_sum(a)):
        assert out.is_cuda and out.shape == a.shape
    assert torch.equal(comm.allreduce_sum(a), a)
    comm.cuda_aware = True          # one rank: the direct path copies without MPI
    assert torch.equal(comm.allreduce_sum(a), a)


def test_sampling_on_gpu_matches_cpu():
    pytest.importorskip("sklearn")
    base = dict(model="digits", num_samples=8, sampler="piadm-sde", blocks=2, steps_per_block=8,
                picard_iters=8, tol=0.0, output=os.devnull)
    lines = []
    gpu = run(RunConfig(device="cuda", **base).validate(), Communicator.self_comm(), placement_log=lines.append)
    cpu = run(RunConfig(device="cpu", **base).validate(), Communicator.self_comm())
    assert "cuda:0" in lines[0]
    assert rel_err(gpu.samples, cpu.samples) < 10 * TF32_RTOL
