"""GPU tests under MPI: two (or more) ranks on one GPU, device arrays in collectives.

    mpiexec -n 2 python -m pytest --with-mpi -m "gpu and mpi" tests/gpu

(`make gpu-check` runs this.) Without a CUDA device the module skips, also inside the
CPU suite's MPI runs. Every verdict is rank 0's, broadcast, so no rank waits on one
that failed.
"""
import os

import numpy as np
import pytest

pytestmark = [pytest.mark.gpu, pytest.mark.mpi, pytest.mark.timeout(180)]
torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device visible", allow_module_level=True)

from mpi4py import MPI  # noqa: E402

from hpc_picard import devices  # noqa: E402
from hpc_picard.config import RunConfig  # noqa: E402
from hpc_picard.parallel import Communicator, world  # noqa: E402
from hpc_picard.runner import run  # noqa: E402


def agree(ok: bool, message: str = ""):
    """Assert on every rank: all ranks' verdicts gathered, the first failure reported."""
    verdicts = MPI.COMM_WORLD.allgather((bool(ok), message))
    bad = [f"rank {r}: {m}" for r, (good, m) in enumerate(verdicts) if not good]
    assert not bad, "; ".join(bad)


def device_arrays(rank: int):
    """Per-rank test arrays on the GPU: a float64 torch tensor, and a cupy array if cupy
    is installed; as (name, array, to_numpy, on_gpu)."""
    out = [("torch", torch.full((2, 3), float(rank + 1), dtype=torch.float64, device="cuda"),
            lambda a: a.cpu().numpy(), lambda a: isinstance(a, torch.Tensor) and a.is_cuda)]
    try:
        import cupy
        out.append(("cupy", cupy.full((2, 3), float(rank + 1)), cupy.asnumpy,
                    lambda a: isinstance(a, cupy.ndarray)))
    except ImportError:
        pass
    return out


def check_collectives(comm: Communicator) -> list:
    """Problems (empty if none) of exscan, allreduce and bcast on device arrays."""
    r, n = comm.rank, comm.size
    problems = []
    for name, a, host, on_gpu in device_arrays(r):
        results = {"exscan": (comm.exscan_sum(a), r * (r + 1) / 2),
                   "allreduce": (comm.allreduce_sum(a), n * (n + 1) / 2),
                   "bcast": (comm.bcast_array(a, root=n - 1), float(n))}
        for what, (out, expected) in results.items():
            if not on_gpu(out) or not np.all(host(out) == expected):
                problems.append(f"{name} {what}: got {host(out).ravel()[:3]}, expected {expected}")
    return problems


def test_ranks_share_one_gpu():
    comm = world()
    place = devices.place("cuda", comm)
    gpus = torch.cuda.device_count()
    agree(place.index == place.node_rank % gpus and
          place.gpu_sharers == devices.ranks_sharing_gpu(place.node_rank, place.node_size, gpus),
          f"placed on {place.torch_device} shared by {place.gpu_sharers} of {place.node_size}")


def test_staged_collectives_carry_device_arrays():
    comm = world()
    comm.cuda_aware = False
    problems = check_collectives(comm)
    agree(not problems, "; ".join(problems))


def test_gpu_aware_collectives_take_device_arrays_directly():
    if not devices.mpi_is_cuda_aware("auto"):
        pytest.skip("this MPI does not say it is GPU-aware: device buffers would crash it")
    comm = world()
    comm.cuda_aware = True
    problems = check_collectives(comm)
    agree(not problems, "; ".join(problems))


@pytest.mark.parametrize("model", ["grf", "digits"])
def test_two_ranks_on_one_gpu_match_one_rank(model):
    """The time-parallel run on every rank (all on the one GPU) against one rank alone."""
    pytest.importorskip("cupy" if model == "grf" else "sklearn")
    comm = world()
    config = RunConfig(model=model, dim=256, num_samples=6, sampler="piadm-sde", blocks=2,
                       steps_per_block=8, picard_iters=8, tol=0.0, device="cuda",
                       output=os.devnull).validate(comm.size)
    parallel = run(config, comm)
    if comm.rank != 0:
        agree(parallel.samples is None)
        return
    serial = run(config, Communicator.self_comm())
    err = np.abs(parallel.samples - serial.samples).max() / np.abs(serial.samples).max()
    # float64 FFTs: round-off only; the network: TF32 in batches of different sizes
    agree(err < (1e-10 if model == "grf" else 5e-2), f"{model}: relative difference {err:.3g}")
