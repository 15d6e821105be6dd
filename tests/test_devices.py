"""Device placement, GPU-aware MPI detection, host staging of device arrays, and the
backend-generic GRF score; the CPU paths of the code the GPU runs (tests/gpu/)."""
import os

import numpy as np
import pytest

from hpc_picard import devices
from hpc_picard.config import ConfigError, RunConfig
from hpc_picard.devices import DeviceError, choose_device, mpi_is_cuda_aware
from hpc_picard.models import GaussianRandomField, build_model
from hpc_picard.models.grf_device import DeviceGaussianRandomField
from hpc_picard.parallel import Communicator
from hpc_picard.runner import run


def test_device_policy():
    assert choose_device("cpu", 0, 4) == ("cpu", None)
    assert choose_device("auto", 3, 0) == ("cpu", None)
    assert choose_device("auto", 3, 2) == ("cuda", 1)       # round-robin over node GPUs
    assert choose_device("cuda", 5, 4) == ("cuda", 1)
    with pytest.raises(DeviceError):
        choose_device("cuda", 0, 0)
    with pytest.raises(DeviceError):
        choose_device("tpu", 0, 1)


def test_ranks_sharing_a_gpu_split_its_memory_budget(monkeypatch):
    assert [devices.ranks_sharing_gpu(r, 5, 2) for r in range(5)] == [3, 2, 3, 2, 3]
    assert devices.ranks_sharing_gpu(0, 1, 4) == 1
    monkeypatch.setattr(devices, "_gpu_sharers", 2)
    assert devices.gpu_memory_budget(1000, 0.5) == 250
    # without a GPU (gpu_count given) the placement still counts the sharers, and
    # a later CPU placement puts the budget back to one rank
    place = devices.place("cuda", Communicator.self_comm(), gpu_count=1)
    assert (place.kind, place.gpu_sharers, devices._gpu_sharers) == ("cuda", 1, 1)
    assert devices.place("cpu", Communicator.self_comm()).gpu_sharers == 1


def test_cuda_aware_detection(monkeypatch):
    for name in devices._CUDA_AWARE_ENV:
        monkeypatch.delenv(name, raising=False)
    assert mpi_is_cuda_aware("yes") and not mpi_is_cuda_aware("no")
    assert not mpi_is_cuda_aware("auto", library_version="MPICH Version: 5.0")
    assert mpi_is_cuda_aware("auto", library_version="Open MPI v5.0.3 ... CUDA support: yes")
    monkeypatch.setenv("MPICH_GPU_SUPPORT_ENABLED", "1")
    assert mpi_is_cuda_aware("auto", library_version="MPICH Version: 5.0")


def test_placement_on_one_rank():
    place = devices.place("cpu", Communicator.self_comm())
    assert (place.kind, place.index, place.rank, place.node_rank) == ("cpu", None, 0, 0)
    assert place.torch_device == "cpu"
    assert "device cpu" in place.describe() and place.host in place.describe()
    auto = devices.place("auto", Communicator.self_comm(), gpu_count=0)
    assert auto.kind == "cpu"
    with pytest.raises(DeviceError):
        devices.place("cuda", Communicator.self_comm(), gpu_count=0)


def test_run_logs_where_each_rank_runs(tmp_path):
    lines = []
    config = RunConfig(model="grf", dim=16, num_samples=4, blocks=2, steps_per_block=4,
                       device="cpu", output=str(tmp_path / "x.h5"))
    result = run(config.validate(), Communicator.self_comm(), placement_log=lines.append)
    assert len(lines) == 1 and "rank 0/1" in lines[0] and "device cpu" in lines[0]
    assert result.placement.kind == "cpu"


@pytest.mark.parametrize("field,value", [("device", "gpu"), ("cuda_aware_mpi", "maybe")])
def test_device_options_are_validated(field, value):
    with pytest.raises(ConfigError):
        RunConfig(**{field: value}).validate()


def test_backend_generic_grf_matches_the_reference():
    """The cupy code path, run with numpy as its array module."""
    ref = GaussianRandomField(64, k0=3.0, alpha=2.5)
    dev = DeviceGaussianRandomField(64, k0=3.0, alpha=2.5, xp=np)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 64))
    t = np.array([1e-3, 1e-3, 0.1, 0.5, 0.5, 2.0, 9.0])
    np.testing.assert_allclose(dev.score(x, t), ref.score(x, t), rtol=1e-10, atol=1e-12)
    assert dev.score(x.astype(np.float32), t).dtype == np.float32
    assert dev.preferred_batch() == (1 << 18) // 64


def test_grf_on_cuda_needs_cupy_or_a_gpu():
    config = RunConfig(model="grf", dim=16)
    try:
        import cupy  # noqa: F401
        pytest.skip("cupy present: the GPU test suite covers this")
    except ImportError:
        with pytest.raises(DeviceError):
            build_model(config, device="cuda:0")


def test_staging_of_device_style_arrays_on_one_rank():
    """torch tensors take the staging path (host copy, MPI, copy back) on the CPU too."""
    torch = pytest.importorskip("torch")
    comm = Communicator.self_comm()
    a = torch.arange(6, dtype=torch.float64).reshape(2, 3)
    for out in (comm.exscan_sum(a), comm.allreduce_sum(a)):
        assert isinstance(out, torch.Tensor) and out.shape == a.shape
    assert torch.equal(comm.exscan_sum(a), torch.zeros_like(a))
    assert torch.equal(comm.allreduce_sum(a), a)
    assert devices.is_device_array(a) and not devices.is_device_array(np.zeros(2))
    np.testing.assert_array_equal(devices.to_host(a), a.numpy())


# -- under MPI ----------------------------------------------------------------------------
@pytest.mark.mpi
@pytest.mark.timeout(60)
def test_node_local_split_and_staged_collectives():
    torch = pytest.importorskip("torch")
    from mpi4py import MPI
    world = Communicator(MPI.COMM_WORLD)
    node = world.node_local()
    # every rank of a test job runs on this one host
    same_node = node.size == world.size and node.rank == world.rank
    r = world.rank
    local = torch.full((2, 3), float(r + 1), dtype=torch.float64)
    ex = world.exscan_sum(local)
    total = world.allreduce_sum(local)
    root = torch.full((4,), float(r), dtype=torch.float64)
    got = world.bcast_array(root, root=world.size - 1)
    ok = (same_node and isinstance(ex, torch.Tensor) and isinstance(got, torch.Tensor)
          and torch.all(ex == r * (r + 1) / 2).item()
          and torch.all(total == world.size * (world.size + 1) / 2).item()
          and torch.all(got == world.size - 1).item())
    # every rank of the job is on one node: with one GPU they all share it
    shared = devices.place("cuda", world, gpu_count=1)
    ok = ok and shared.index == 0 and shared.gpu_sharers == world.size
    devices.place("cpu", world)
    verdicts = world.allgather_obj(bool(ok))
    assert all(verdicts), verdicts


@pytest.mark.mpi
@pytest.mark.timeout(120)
def test_placement_logs_every_rank(tmp_path_factory):
    from mpi4py import MPI
    world = Communicator(MPI.COMM_WORLD)
    lines = []
    config = RunConfig(model="grf", dim=16, num_samples=8, blocks=2, steps_per_block=8,
                       device="auto", output=os.devnull)
    run(config, world, placement_log=lines.append)
    ok = (len(lines) == world.size) if world.rank == 0 else (lines == [])
    if world.rank == 0:
        ok = ok and all(f"rank {i}/{world.size}" in line for i, line in enumerate(lines))
    assert all(world.allgather_obj(bool(ok)))


def test_job_script_binding_shares_gpus_round_robin_like_place(tmp_path):
    """jobscripts/bind-gpu.sh without a scheduler's GPU list: ranks past the node's last
    GPU wrap around (as choose_device does), instead of naming a GPU that is not there.
    A stand-in nvidia-smi in tmp_path reports two GPUs."""
    import subprocess
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: a)'\necho 'GPU 1: NVIDIA H200 (UUID: b)'\n")
    fake.chmod(0o755)
    bind = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "jobscripts", "bind-gpu.sh")
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_LOCALID")}
    env["PATH"] = f"{tmp_path}:{env.get('PATH', '')}"
    for rank in range(5):
        out = subprocess.run([bind, "sh", "-c", "echo $CUDA_VISIBLE_DEVICES"], capture_output=True,
                             text=True, timeout=30, env={**env, "MPI_LOCALRANKID": str(rank)})
        assert out.stdout.strip() == str(choose_device("cuda", rank, 2)[1])
