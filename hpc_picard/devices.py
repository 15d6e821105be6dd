"""Where a rank evaluates its scores: device choice, array backends, host staging.

The samplers keep their states on the host as numpy arrays (the prefix sums are cheap
and run in float64); only the score evaluation moves to a device. So the seam between
host and device is the model: a network adapter takes numpy, runs on the rank's device
and hands numpy back. This module decides which device that is.

Device choice (``--device``):

- ``cpu``: every rank on the host;
- ``cuda``: rank with node-local index i takes GPU ``i mod G`` (G GPUs visible on the
  node; the node-local index comes from an ``MPI.COMM_TYPE_SHARED`` split, see
  :meth:`hpc_picard.parallel.Communicator.node_local`); an error if no GPU is visible;
- ``auto``: ``cuda`` where a GPU is visible, else ``cpu``.

Nothing here imports torch or cupy unless a GPU is asked for or probed, so the CPU-only
install stays light.
"""
from __future__ import annotations

import glob
import os
import socket
from dataclasses import dataclass

import numpy as np

DEVICES = ("auto", "cpu", "cuda")
CUDA_AWARE_CHOICES = ("auto", "yes", "no")

# Environment variables by which MPI libraries announce (or are told to use) GPU
# buffers: Open MPI, MVAPICH2, Cray MPICH, MPICH. Any of them set to a true value
# makes "auto" trust device buffers in collectives.
_CUDA_AWARE_ENV = ("OMPI_MCA_opal_cuda_support", "MV2_USE_CUDA", "MPICH_GPU_SUPPORT_ENABLED",
                   "MPIR_CVAR_ENABLE_GPU")


class DeviceError(RuntimeError):
    """A device was asked for that this rank cannot use."""


@dataclass(frozen=True)
class Placement:
    """Where one rank runs.

    kind:       "cpu" or "cuda";
    index:      the GPU ordinal on this node (None on the CPU);
    host:       the node's host name;
    rank, size: the world rank and size;
    node_rank, node_size: the rank's index among, and the number of, ranks on its node;
    gpu_sharers: how many ranks of the node use this rank's GPU (1 on the CPU).
    """
    kind: str
    index: int | None
    host: str
    rank: int = 0
    size: int = 1
    node_rank: int = 0
    node_size: int = 1
    gpu_sharers: int = 1

    @property
    def torch_device(self) -> str:
        """The torch device string: "cpu" or "cuda:<index>"."""
        return "cpu" if self.kind == "cpu" else f"cuda:{self.index}"

    @property
    def is_gpu(self) -> bool:
        return self.kind == "cuda"

    def describe(self) -> str:
        return (f"host {self.host} rank {self.rank}/{self.size} "
                f"(node rank {self.node_rank}/{self.node_size}) device {self.torch_device}")


def cuda_device_count() -> int:
    """GPUs visible to this process: torch's count, else cupy's, else 0.

    Without NVIDIA device files there is nothing to count, and importing torch just to
    hear so costs seconds per rank; CUDA_VISIBLE_DEVICES="" hides every GPU.
    """
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "" or not (
            os.path.exists("/dev/nvidiactl") or glob.glob("/dev/nvidia[0-9]*")):
        return 0
    try:
        import torch
        if torch.cuda.is_available():
            return int(torch.cuda.device_count())
    except ImportError:
        pass
    try:
        import cupy
        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:      # no cupy, or cupy without a driver: no GPU either way
        return 0


def choose_device(requested: str, node_rank: int, gpu_count: int) -> tuple:
    """(kind, index) for a rank: the pure policy behind :func:`place`.

    node_rank: the rank's index on its node; gpu_count: GPUs visible there. Ranks on a
    node share GPUs round-robin when there are more ranks than GPUs.
    """
    if requested not in DEVICES:
        raise DeviceError(f"unknown device {requested!r}; choose one of: {', '.join(DEVICES)}")
    if requested == "cpu" or (requested == "auto" and gpu_count == 0):
        return "cpu", None
    if gpu_count == 0:
        raise DeviceError("--device cuda, but no CUDA device is visible to this rank "
                          "(is a CUDA build of torch installed? see docs/models.md)")
    return "cuda", node_rank % gpu_count


def ranks_sharing_gpu(node_rank: int, node_size: int, gpu_count: int) -> int:
    """How many of a node's ``node_size`` ranks land on the GPU of ``node_rank`` under
    the round-robin of :func:`choose_device`."""
    return len(range(node_rank % gpu_count, node_size, gpu_count))


#: ranks of this node that share this process's GPU, set by :func:`place`
_gpu_sharers = 1


def gpu_memory_budget(free_bytes: int, fraction: float) -> int:
    """Bytes of a GPU's ``free_bytes`` one score call may take: ``fraction`` of them,
    split evenly between the ranks that share the GPU. Ranks on one GPU measure the
    free memory at about the same time, so each taking ``fraction`` would overcommit."""
    return int(fraction * free_bytes) // _gpu_sharers


def place(requested: str, world, gpu_count: int | None = None) -> Placement:
    """This rank's :class:`Placement`. Collective over ``world`` (the node split)."""
    global _gpu_sharers
    node = world.node_local()
    count = cuda_device_count() if gpu_count is None and requested != "cpu" else (gpu_count or 0)
    kind, index = choose_device(requested, node.rank, count)
    sharers = ranks_sharing_gpu(node.rank, node.size, count) if kind == "cuda" else 1
    _gpu_sharers = sharers
    if kind == "cuda":
        _set_current_gpu(index)
    return Placement(kind=kind, index=index, host=socket.gethostname(), rank=world.rank,
                     size=world.size, node_rank=node.rank, node_size=node.size,
                     gpu_sharers=sharers)


def _set_current_gpu(index: int):
    """Make ``index`` the current device for torch and cupy, so that library calls
    that do not take a device argument (cuFFT plans, new streams) land on it."""
    try:
        import torch
        if torch.cuda.is_available():
            torch.cuda.set_device(index)
    except ImportError:
        pass
    try:
        import cupy
        cupy.cuda.Device(index).use()
    except ImportError:
        pass


def mpi_is_cuda_aware(setting: str = "auto", library_version: str | None = None) -> bool:
    """Whether collectives may be handed device buffers directly.

    ``setting`` is the ``--cuda-aware-mpi`` choice; "auto" believes the environment
    variables MPI libraries use to switch GPU support on, or an Open MPI that reports
    CUDA in its version string. Wrongly answering yes crashes inside MPI, so anything
    unclear is a no: device arrays are then staged through host buffers.
    """
    if setting == "yes":
        return True
    if setting == "no":
        return False
    for name in _CUDA_AWARE_ENV:
        if os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on", "enabled"):
            return True
    if library_version is None:
        try:
            from .parallel.comm import library_version as query
            library_version = query()
        except Exception:
            library_version = ""
    return "open mpi" in library_version.lower() and "cuda" in library_version.lower()


# -- array backends --------------------------------------------------------------------
def is_device_array(array) -> bool:
    """True for torch tensors and cupy arrays (anything that is not a numpy array)."""
    return not isinstance(array, np.ndarray) and (
        hasattr(array, "__cuda_array_interface__") or type(array).__module__.startswith("torch"))


def synchronize(array):
    """Wait until the kernels producing ``array`` are done (before MPI reads it)."""
    module = type(array).__module__
    if module.startswith("torch"):
        import torch
        if array.is_cuda:
            torch.cuda.synchronize(array.device)
    elif module.startswith("cupy"):
        # the array's own device: the current one may be another GPU
        array.device.synchronize()


def to_host(array) -> np.ndarray:
    """A numpy copy (or view, for numpy input) of a numpy, cupy or torch array."""
    if isinstance(array, np.ndarray):
        return array
    module = type(array).__module__
    if module.startswith("torch"):
        return array.detach().cpu().numpy()
    if module.startswith("cupy"):
        return array.get()
    return np.asarray(array)


def like(host: np.ndarray, template):
    """``host`` moved back to where ``template`` lives (same library and device)."""
    if isinstance(template, np.ndarray):
        return host
    module = type(template).__module__
    if module.startswith("torch"):
        import torch
        return torch.from_numpy(np.ascontiguousarray(host)).to(template.device)
    if module.startswith("cupy"):
        import cupy
        with template.device:       # cupy.asarray places on the current device
            return cupy.asarray(host)
    raise TypeError(f"cannot place an array like {type(template).__name__}")


def contiguous(array):
    """A C-contiguous numpy, cupy or torch array (``array`` itself if it is one): MPI
    reads device buffers as flat memory."""
    if hasattr(array, "is_contiguous"):
        return array.contiguous()
    if isinstance(array, np.ndarray):
        return np.ascontiguousarray(array)
    import cupy
    return cupy.ascontiguousarray(array)


def array_module(kind: str):
    """numpy on the CPU, cupy on CUDA: for analytic targets written against ``xp``."""
    if kind == "cpu":
        return np
    try:
        import cupy
    except ImportError:
        raise DeviceError("an analytic target on --device cuda needs cupy "
                          "(pip install cupy-cuda12x or cupy-cuda13x, matching the CUDA driver)") from None
    return cupy
