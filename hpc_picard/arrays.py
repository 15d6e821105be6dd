"""Array backends: the one seam between the sweep engine and numpy, torch or cupy.

The sweep engine (samplers/engine.py) keeps a block's states, increments, prefix sums
and residuals in one array type, the model's own (``--array-backend auto``): numpy for
the analytic targets on a CPU, torch tensors for torch networks (on the CPU or a GPU),
cupy for the cupy GRF. Only per-rank block totals and scalars leave that array type,
through MPI (parallel/comm.py stages device buffers through host memory where the MPI
library is not GPU-aware).

The engine needs a dozen operations, all with an ``out=`` argument so that a sweep
allocates nothing of the state's size: a :class:`Backend` is that list. numpy and cupy
share one implementation (cupy mirrors numpy's ufuncs); torch has its own. The
maintained array-API layer (array-api-compat) was considered: the array API has no
``out=`` arguments and no in-place prefix sum, which are the point here, so the
engine would still need this seam.

Host data (coefficients, noise, the start state) enter with :meth:`Backend.asarray`;
model calls that take numpy see zero-copy host views of CPU tensors
(:meth:`Backend.host_view`).
"""
from __future__ import annotations

import numpy as np

from .config import ARRAY_BACKENDS

#: host cache blocks of a sweep: 2^16 float64 numbers (512 KiB), measured in
#: docs/design.md (the sweep engine, "Fast")
HOST_BLOCK_NUMBERS = 1 << 16


class Backend:
    """Operations on one array type, on one device. ``name``: numpy, torch or cupy."""

    name = "numpy"
    #: numbers of one row that a sweep works on at a time (engine.py) so that a row's
    #: increments, prefix sum, state and difference stay in cache; 0: whole rows (a
    #: device, where a launch per block would cost more than the memory traffic)
    block_numbers = HOST_BLOCK_NUMBERS

    def __init__(self, xp=np):
        self.xp = xp
        self.name = "cupy" if xp is not np else "numpy"
        if xp is not np:
            self.block_numbers = 0

    # -- creation and transfer ---------------------------------------------------------
    def empty(self, shape, dtype):
        return self.xp.empty(shape, dtype=np.dtype(dtype))

    def zeros(self, shape, dtype):
        return self.xp.zeros(shape, dtype=np.dtype(dtype))

    def asarray(self, host, dtype=None):
        """A host (numpy) array on this backend, converted to ``dtype`` if given."""
        return self.xp.asarray(host, dtype=None if dtype is None else np.dtype(dtype))

    def to_host(self, array) -> np.ndarray:
        return array.get() if self.xp is not np else np.asarray(array)

    def host_view(self, array) -> np.ndarray:
        """A numpy array sharing memory with ``array`` where it lives on the host, else
        a host copy."""
        return self.to_host(array)

    def is_host(self) -> bool:
        return self.xp is np

    # -- arithmetic (out= everywhere: a sweep allocates nothing of a state's size) -------
    def multiply(self, a, b, out):
        return self.xp.multiply(a, b, out=out)

    def add(self, a, b, out):
        return self.xp.add(a, b, out=out)

    def subtract(self, a, b, out):
        return self.xp.subtract(a, b, out=out)

    def scale_into(self, a, factor: float, out):
        """out = factor * a computed in out's dtype (a float32 state times a float64
        coefficient into a float64 increment keeps the coefficient's precision)."""
        return self.xp.multiply(a, factor, out=out, dtype=out.dtype)

    def copy(self, src, out):
        out[...] = src
        return out

    def sum_squares_into(self, a, out):
        """Sum of squares over the last axis, accumulated in float64, into out
        (a.shape[:-1], float64)."""
        if self.xp is np and hasattr(np, "vecdot"):     # numpy >= 2: 2.5x its einsum
            return np.vecdot(a, a, out=out, dtype=np.float64)
        return self.xp.einsum("...d,...d->...", a, a, dtype=np.float64, out=out)

    def max_last(self, a):
        """Largest entry over the last axis: a.shape[:-1]."""
        return a.max(axis=-1)

    def all_finite(self, a) -> bool:
        return bool(self.xp.isfinite(a).all())


class TorchBackend(Backend):
    """The same operations on torch tensors of one device ("cpu", "cuda:0")."""

    name = "torch"

    def __init__(self, device="cpu"):
        import torch
        self.torch = torch
        self.device = torch.device(device)
        self.xp = torch
        self.block_numbers = HOST_BLOCK_NUMBERS if self.device.type == "cpu" else 0
        if self.device.type == "cpu":
            # the sweep's tensor arithmetic runs on the rank's own cores: one thread per
            # rank unless OMP_NUM_THREADS says otherwise, as for torch models (a pool per
            # rank on top of the ranks oversubscribes the cores)
            from .models.torch_models import cpu_threads
            torch.set_num_threads(cpu_threads())

    def _dtype(self, dtype):
        return {np.dtype("float64"): self.torch.float64, np.dtype("float32"): self.torch.float32,
                np.dtype("int64"): self.torch.int64}[np.dtype(dtype)]

    def empty(self, shape, dtype):
        return self.torch.empty(shape, dtype=self._dtype(dtype), device=self.device)

    def zeros(self, shape, dtype):
        return self.torch.zeros(shape, dtype=self._dtype(dtype), device=self.device)

    def asarray(self, host, dtype=None):
        if isinstance(host, self.torch.Tensor):
            out = host.to(self.device)
        else:
            out = self.torch.as_tensor(np.asarray(host), device=self.device)
        return out if dtype is None else out.to(self._dtype(dtype))

    def to_host(self, array) -> np.ndarray:
        return array.detach().cpu().numpy()

    def host_view(self, array) -> np.ndarray:
        return array.detach().numpy() if array.device.type == "cpu" else self.to_host(array)

    def is_host(self) -> bool:
        return self.device.type == "cpu"

    def multiply(self, a, b, out):
        return self.torch.mul(a, b, out=out)

    def add(self, a, b, out):
        return self.torch.add(a, b, out=out)

    def subtract(self, a, b, out):
        return self.torch.sub(a, b, out=out)

    def copy(self, src, out):
        return out.copy_(src)

    def scale_into(self, a, factor: float, out):
        if a.dtype == out.dtype:
            return self.torch.mul(a, factor, out=out)
        out.copy_(a)                # torch would multiply in a's dtype, then cast
        return out.mul_(factor)

    def sum_squares_into(self, a, out):
        self.torch.linalg.vector_norm(a, dim=-1, dtype=self.torch.float64, out=out)
        return out.square_()

    def max_last(self, a):
        return a.amax(dim=-1)

    def all_finite(self, a) -> bool:
        return bool(self.torch.isfinite(a).all())


def native_backend_name(model) -> str:
    """The model's own array type: its ``array_backend`` attribute, else numpy."""
    return getattr(model, "array_backend", "numpy")


def make_backend(choice: str, model=None, device: str = "cpu") -> Backend:
    """The backend ``--array-backend`` names ("auto": the model's native type).

    ``device`` is the rank's torch device string (devices.Placement.torch_device).
    """
    if choice not in ARRAY_BACKENDS:
        raise ValueError(f"unknown array backend {choice!r}; choose one of {', '.join(ARRAY_BACKENDS)}")
    name = native_backend_name(model) if choice == "auto" else choice
    if name == "numpy":
        return Backend(np)
    if name == "torch":
        return TorchBackend(getattr(model, "torch_device", None) or device)
    import cupy
    return Backend(cupy)


#: glibc's mallopt parameters and the values :func:`keep_freed_memory` sets
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 64 << 20


def keep_freed_memory() -> bool:
    """Let freed blocks of up to 32 MiB stay in the process for the next allocation.

    glibc serves an allocation above its mmap threshold (128 KiB at start) with fresh
    pages and unmaps them on free; the threshold only rises after a larger block has
    been freed. A model's per-call temporaries (the GRF's FFTs: a few MiB each) then
    fault in new pages on every call unless something happened to free a big array
    first. The engine allocates nothing per sweep, so nothing did: the ring window's
    first version took 3.7 million page faults where the engine before it took 0.18
    million, and scored 1.6x slower (docs/design.md). Fixing both thresholds (as
    MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ would) keeps those blocks in the
    heap. Process-wide, idempotent; returns False where the C library has no mallopt
    (not glibc), which changes nothing.
    """
    import ctypes
    import sys
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
