"""GPU tests: `make gpu-check` runs them on a CUDA machine; without one they skip.

They run the same code as the CPU tests in tests/test_devices.py and
tests/test_torch_models.py, with the device set to the rank's GPU, and compare with
the CPU results: the cupy GRF score with the numpy one in float64 (1e-12), the torch
networks with their CPU selves within float32 round-off (TF32 off) and within TF32's
precision (the default for convolutions), device arrays through the staged
collectives, and a whole run on the GPU with the same run on the CPU. The two-rank
checks (two ranks on one GPU) are in test_gpu_mpi.py.
"""
import contextlib
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

# Convolutions on Ampere and later default to TF32 (10-bit mantissa): compare at its
# precision. With TF32 off, cuDNN and the CPU differ only by float32 round-off summed
# through a few dozen layers.
TF32_RTOL = 5e-3
FLOAT32_RTOL = 5e-5
GRF_RTOL = 1e-12


def rel_err(a, b):
    """max |a - b| over max |b|: the error relative to the output's scale."""
    return float(np.abs(a - b).max() / (np.abs(b).max() + 1e-30))


@contextlib.contextmanager
def ieee_float32():
    """cuDNN and cuBLAS in full float32 (no TF32) inside the block."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def points(rows, dim, seed=0):
    """Random states and forward times from delta = 1e-3 (the stiff end) to T = 10."""
    return np.random.default_rng(seed).standard_normal((rows, dim)), np.geomspace(1e-3, 10, rows)


def test_placement_picks_a_visible_gpu():
    place = devices.place("cuda", Communicator.self_comm())
    assert place.kind == "cuda" and place.index == 0 and place.gpu_sharers == 1
    assert place.torch_device == "cuda:0"
    assert devices.place("auto", Communicator.self_comm()).kind == "cuda"


@pytest.mark.parametrize("dim", [1024, 4096])
def test_grf_cupy_score_equals_numpy_in_float64(dim):
    pytest.importorskip("cupy")
    gpu = build_model(RunConfig(model="grf", dim=dim), device="cuda:0")
    assert gpu.xp.__name__ == "cupy"
    ref = GaussianRandomField(dim)
    x, t = points(64, dim, seed=1)
    got = gpu.score(x, t)
    assert isinstance(got, np.ndarray) and got.dtype == np.float64
    assert rel_err(got, ref.score(x, t)) <= GRF_RTOL
    assert gpu.score(x.astype(np.float32), t).dtype == np.float32
    assert gpu.preferred_batch() > 0


def test_digits_network_on_cuda_matches_cpu():
    pytest.importorskip("sklearn")
    cpu = build_model(RunConfig(model="digits"), device="cpu")
    gpu = build_model(RunConfig(model="digits"), device="cuda:0")
    x, t = points(300, 64)
    ref = cpu.score(x, t)
    with ieee_float32():
        assert rel_err(gpu.score(x, t), ref) < FLOAT32_RTOL
    assert rel_err(gpu.score(x, t), ref) < TF32_RTOL
    assert gpu.preferred_batch() > 0
    gpu.max_batch = 7                   # chunked calls give the same rows
    with ieee_float32():
        assert rel_err(gpu.score(x, t), ref) < FLOAT32_RTOL


def test_diffusers_unet_on_cuda_matches_cpu(tmp_path):
    pytest.importorskip("diffusers")
    from test_diffusers import make_folder      # tests/ is on sys.path (conftest)
    folder = make_folder(str(tmp_path))
    cpu = build_model(RunConfig(model=f"diffusers:{folder}"), device="cpu")
    gpu = build_model(RunConfig(model=f"diffusers:{folder}"), device="cuda:0")
    assert next(gpu.unet.parameters()).is_cuda
    x, t = points(50, 64, seed=2)
    with ieee_float32():
        assert rel_err(gpu.score(x, t), cpu.score(x, t)) < FLOAT32_RTOL


@pytest.mark.parametrize("library", ["torch", "cupy"])
def test_collectives_stage_device_arrays_through_the_host(library):
    comm = Communicator.self_comm()
    if library == "torch":
        a = torch.arange(6, dtype=torch.float64, device="cuda:0").reshape(2, 3)
        on_gpu, equal = (lambda out: out.is_cuda), torch.equal
    else:
        cupy = pytest.importorskip("cupy")
        a = cupy.arange(6, dtype=cupy.float64).reshape(2, 3)
        on_gpu = lambda out: isinstance(out, cupy.ndarray)  # noqa: E731
        equal = lambda u, v: bool((u == v).all())           # noqa: E731
    for out in (comm.exscan_sum(a), comm.allreduce_sum(a), comm.bcast_array(a, root=0)):
        assert on_gpu(out) and tuple(out.shape) == (2, 3)
    assert equal(comm.allreduce_sum(a), a) and not comm.exscan_sum(a).any()
    comm.cuda_aware = True          # one rank: the direct path copies without MPI
    assert equal(comm.allreduce_sum(a), a) and on_gpu(comm.allreduce_sum(a))


@pytest.mark.parametrize("model", ["digits", "grf"])
def test_sampling_on_gpu_matches_cpu(model):
    pytest.importorskip("sklearn" if model == "digits" else "cupy")
    base = dict(model=model, dim=256, num_samples=8, sampler="piadm-sde", blocks=2,
                steps_per_block=8, picard_iters=8, tol=0.0, output=os.devnull)
    lines = []
    gpu = run(RunConfig(device="cuda", **base).validate(), Communicator.self_comm(),
              placement_log=lines.append)
    cpu = run(RunConfig(device="cpu", **base).validate(), Communicator.self_comm())
    assert "cuda:0" in lines[0]
    # the network's TF32 round-off grows along the trajectory; the GRF is float64
    assert rel_err(gpu.samples, cpu.samples) < (10 * TF32_RTOL if model == "digits" else 1e-10)
