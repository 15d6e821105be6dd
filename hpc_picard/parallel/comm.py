"""Every MPI call hpc_picard makes lives in this module.

:class:`Communicator` wraps an mpi4py communicator with the handful of collectives the
samplers need, on float64 numpy buffers (uppercase, buffer-based mpi4py calls), and
times them for the run's statistics. A one-rank communicator turns every collective
into a copy, which is how the serial case runs the same code as the parallel one.
"""
from __future__ import annotations

import os
import sys
import time
import traceback

import numpy as np
from mpi4py import MPI

#: the tag of cyclic_exscan_into's two-rank swap (point-to-point, unlike the collectives)
_CYCLIC = 81


class Communicator:
    """A thin, timed wrapper around an ``MPI.Comm``.

    ``comm_seconds`` accumulates the wall time spent inside collectives (including the
    time waiting for other ranks, which is where load imbalance shows up).
    """

    def __init__(self, comm, cuda_aware: bool = False):
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.comm_seconds = 0.0
        #: whether device (cupy / torch CUDA) buffers may go to MPI directly; if not,
        #: the array collectives stage them through host memory (see _to_buffer)
        self.cuda_aware = cuda_aware

    @classmethod
    def self_comm(cls) -> "Communicator":
        return cls(MPI.COMM_SELF)

    def _timed(self, fn, *args):
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.comm_seconds += time.perf_counter() - start

    # -- device arrays ---------------------------------------------------------------
    def _to_buffer(self, array):
        """(buffer MPI may read, whether it was staged) for a numpy or device array.

        Device arrays (cupy, torch) are synchronised first, so that MPI never reads a
        buffer a kernel is still writing. Without a GPU-aware MPI they are copied to
        host memory and the result is copied back by :meth:`_from_buffer`.
        """
        from .. import devices
        if not devices.is_device_array(array):
            return array, False
        devices.synchronize(array)
        if self.cuda_aware and hasattr(array, "__cuda_array_interface__"):
            array = devices.contiguous(array)
            devices.synchronize(array)
            return array, False
        return np.ascontiguousarray(devices.to_host(array)), True

    def _readable(self, array, role: str):
        """A buffer MPI may read holding ``array``: host memory as it is (numpy, CPU
        tensors, zero-copy), device memory directly where MPI is GPU-aware, else a
        copy in a host staging buffer kept for the next call (pinned where the array
        library can pin it)."""
        host = _host_view(array)
        if host is not None:
            return host
        from .. import devices
        devices.synchronize(array)
        if self.cuda_aware:
            return array
        buffer = self._staging(role, tuple(array.shape), array.dtype)
        _copy_to_host(array, buffer)
        return buffer

    def _writable(self, array, role: str):
        """(buffer MPI may write, staging buffer to copy back to ``array`` or None)."""
        host = _host_view(array)
        if host is not None:
            return host, None
        if self.cuda_aware:
            from .. import devices
            devices.synchronize(array)
            return array, None
        buffer = self._staging(role, tuple(array.shape), array.dtype)
        return buffer, buffer

    def _staging(self, role: str, shape: tuple, dtype):
        """A host buffer per (role, shape, dtype), allocated once, pinned if possible."""
        cache = self.__dict__.setdefault("_staging_buffers", {})
        key = (role, shape, str(dtype))
        if key not in cache:
            cache[key] = _pinned_empty(shape, dtype)
        return cache[key]

    def exscan_sum_into(self, local, out):
        """Exclusive prefix sum over ranks of ``local`` into ``out`` (same shape and
        float dtype, numpy, torch or cupy); zeros on rank 0. No allocation per call:
        what a sweep sends is its rank's block total, every sweep."""
        if self.size == 1:
            out[...] = 0
            return out
        send = self._readable(local, "exscan-send")
        recv, staged = self._writable(out, "exscan-recv")
        self._timed(self.comm.Exscan, send, recv, MPI.SUM)
        if self.rank == 0:          # MPI leaves rank 0's receive buffer undefined
            recv[...] = 0
        if staged is not None:
            _copy_from_host(staged, out)
        return out

    def cyclic_exscan_into(self, first: int, local, out):
        """Exclusive prefix sums along the cyclic rank order first, first + 1, ...,
        first - 1 that ends on rank ``first`` again (ParaDiGMS' window on a ring,
        samplers/engine.py: rank ``first`` holds the window's first and last slices).

        ``local``: this rank's float64 contribution (rank ``first``: that of its first
        part); ``out`` (same shape and kind): every other rank receives the sum of the
        contributions before it in that order, rank ``first`` the sum of all of them
        (the base of its last part). numpy, torch or cupy arrays.

        Nothing is subtracted, so the sums are as accurate as an Exscan's: one Exscan
        of the affine maps z -> z + local (rank ``first``: z -> local, which cuts the
        sum there; :meth:`exscan_affine`'s operator) gives every rank after ``first``
        its sum and every other rank the sum of the ranks below it, and one broadcast
        from the last rank adds the total of ranks first .. P - 1 to the latter. Two
        messages of one contribution on two ranks; host buffers are reused.

        On two ranks the ranks just swap their contributions (one Sendrecv) and rank
        ``first`` adds its own to the other's.
        """
        if self.size == 1:
            out[...] = local
            return out
        if self.size == 2:
            send = self._readable(local, "cyclic-send")
            recv, staged = self._writable(out, "cyclic-recv")
            peer = 1 - self.rank
            self._timed(self.comm.Sendrecv, send, peer, _CYCLIC, recv, peer, _CYCLIC)
            if staged is not None:
                _copy_from_host(staged, out)
            if self.rank == first:      # its own first part and the other's: all of them
                out += local
            return out
        _, before, mine = self._affine_exscan(0.0 if self.rank == first else 1.0, local)
        total = self._staging("cyclic-total", tuple(local.shape), np.dtype(np.float64))
        last = self.size - 1
        if self.rank == last:       # the sum over ranks first .. P - 1
            np.add(mine, 0.0 if last == first else before, out=total)
        self._timed(self.comm.Bcast, total, last)
        if self.rank <= first:      # after ranks first .. P - 1, the ranks below
            np.add(total, before, out=before)
        target = _host_view(out)
        if target is not None:
            target[...] = before
        else:
            _copy_from_host(np.ascontiguousarray(before), out)
        return out

    @staticmethod
    def _from_buffer(result, template, staged: bool):
        if not staged:
            return result
        from .. import devices
        return devices.like(result, template)

    # -- collectives on arrays --------------------------------------------------------
    def exscan_sum(self, local):
        """Exclusive prefix sum over ranks of a float64 array; zeros on rank 0.

        Accepts numpy or device arrays (staged through the host unless cuda_aware)
        and returns the same kind.
        """
        template = local
        local, staged = self._to_buffer(local)
        if not staged and not isinstance(local, np.ndarray):
            return self._device_collective(self.comm.Exscan, local, zero_rank0=True)
        local = np.ascontiguousarray(local, dtype=np.float64)
        out = np.zeros_like(local)
        if self.size > 1:
            self._timed(self.comm.Exscan, local, out, MPI.SUM)
            if self.rank == 0:          # MPI leaves rank 0's receive buffer undefined
                out[...] = 0.0
        return self._from_buffer(out, template, staged)

    def exscan_affine(self, factor: float, offset: np.ndarray) -> tuple:
        """Exclusive scan over ranks of affine maps z -> factor z + offset, composed in
        rank order (the maps of lower ranks act first): the identity (1, 0) on rank 0.

        This is the segmented prefix sum of the wavefront schedule (samplers/
        wavefront.py): a factor 0 cuts the sum at a segment start, any other factor
        carries the sum across a block boundary through the linear part. One message of
        1 + offset.size float64 per rank, through a non-commutative user-defined op.
        """
        offset = np.ascontiguousarray(offset, dtype=np.float64)
        if self.size == 1:
            return 1.0, np.zeros_like(offset)
        factor, before, _ = self._affine_exscan(factor, offset)
        return factor, before.copy()

    def _affine_exscan(self, factor: float, local) -> tuple:
        """The Exscan of :meth:`exscan_affine` through reused host buffers: (factor,
        offset) of the maps composed below this rank, and ``local`` as sent (host
        float64); both arrays are views of the buffers, valid until the next call.
        ``local``: numpy, torch or cupy."""
        shape = tuple(local.shape)
        size = int(np.prod(shape, dtype=np.int64))
        send = self._staging("affine-send", (size + 1,), np.dtype(np.float64))
        recv = self._staging("affine-recv", (size + 1,), np.dtype(np.float64))
        send[0] = factor
        host = _host_view(local)
        if host is not None:
            send[1:] = host.reshape(-1)
        else:
            from .. import devices
            devices.synchronize(local)
            _copy_to_host(local, send[1:].reshape(shape))
        self._timed(self.comm.Exscan, send, recv, _affine_op())
        if self.rank == 0:          # MPI leaves rank 0's receive buffer undefined
            recv[0], recv[1:] = 1.0, 0.0
        return float(recv[0]), recv[1:].reshape(shape), send[1:].reshape(shape)

    def allreduce_sum(self, local):
        """Sum over ranks of a float64 array (numpy or device array, returned alike)."""
        template = local
        local, staged = self._to_buffer(local)
        if not staged and not isinstance(local, np.ndarray):
            return self._device_collective(self.comm.Allreduce, local, zero_rank0=False)
        local = np.ascontiguousarray(local, dtype=np.float64)
        if self.size == 1:
            return self._from_buffer(local.copy(), template, staged)
        out = np.empty_like(local)
        self._timed(self.comm.Allreduce, local, out, MPI.SUM)
        return self._from_buffer(out, template, staged)

    def _device_collective(self, collective, local, zero_rank0: bool):
        """A SUM collective straight on device buffers (GPU-aware MPI only)."""
        from .. import devices
        out = local.clone() if hasattr(local, "clone") else local.copy()
        if self.size > 1:
            # MPI writes `out` outside the GPU stream's order: the copy kernel that
            # allocated it must be done first, or it could land after MPI's result.
            devices.synchronize(out)
            self._timed(collective, local, out, MPI.SUM)
        if zero_rank0 and self.rank == 0:
            out[...] = 0
        return out

    def _allreduce_scalar(self, value: float, op) -> float:
        if self.size == 1:
            return float(value)
        buf = np.array([value], dtype=np.float64)
        out = np.empty(1, dtype=np.float64)
        self._timed(self.comm.Allreduce, buf, out, op)
        return float(out[0])

    def allreduce_max(self, value: float) -> float:
        return self._allreduce_scalar(value, MPI.MAX)

    def allreduce_min(self, value: float) -> float:
        return self._allreduce_scalar(value, MPI.MIN)

    def sweep_verdict(self, largest: float, first_failing: int) -> tuple:
        """(max of ``largest``, min of ``first_failing``) over every rank, in one
        Allreduce: the convergence verdict of a Picard sweep (largest residual, first
        window position that failed the tolerance)."""
        if self.size == 1:
            return float(largest), int(first_failing)
        buf = np.array([largest, -float(first_failing)], dtype=np.float64)
        out = np.empty(2, dtype=np.float64)
        self._timed(self.comm.Allreduce, buf, out, MPI.MAX)
        return float(out[0]), int(-out[1])

    def move_rows(self, send, recv, plan) -> int:
        """Rows (axis 0) between ranks, one Alltoallv: returns the rows received.

        ``plan`` = (sends, receives), each a list over ranks of (first row, count) in
        ``send`` / ``recv``; received rows from all peers must be contiguous from row 0
        (as the sliding window's moves are). numpy or device arrays (staged).
        """
        sends, receives = plan
        received = sum(count for _, count in receives)
        if self.size == 1:
            (first, count), = sends
            recv[:count] = send[first:first + count]
            return received
        row = int(np.prod(tuple(send.shape[1:]), dtype=np.int64))
        host_send = self._readable(send, "rows-send")
        host_recv, staged = self._writable(recv, "rows-recv")
        counts = lambda plan: np.array([c * row for _, c in plan], dtype=np.int64)   # noqa: E731
        displs = lambda plan: np.array([f * row for f, _ in plan], dtype=np.int64)   # noqa: E731
        self._timed(self.comm.Alltoallv,
                    [_flat(host_send), (counts(sends), displs(sends))],
                    [_flat(host_recv), (counts(receives), displs(receives))])
        if staged is not None:
            _copy_from_host(staged[:received], recv[:received])
        return received

    def recv_array_into(self, out, source: int, tag: int):
        """Blocking receive of an array sent with :meth:`isend_array` into ``out`` (same
        shape and dtype; numpy or device arrays, contiguous or not)."""
        host, staged = self._writable(out, f"recv-{tag}")
        target = host if host.flags.c_contiguous else np.empty(host.shape, host.dtype)
        self._timed(self.comm.Recv, _flat(target), source, tag)
        if target is not host:
            host[...] = target
        if staged is not None:
            _copy_from_host(staged, out)
        return out

    def isend_array(self, array, dest: int, tag: int) -> tuple:
        """Non-blocking send of an array: (request, the buffer MPI reads).
        Keep both until :meth:`wait_all` has completed the request. Device arrays are
        copied to a new host buffer unless MPI is GPU-aware."""
        buffer = _host_view(array)
        if buffer is None:
            from .. import devices
            devices.synchronize(array)
            buffer = array if self.cuda_aware else np.ascontiguousarray(devices.to_host(array))
        else:
            buffer = np.ascontiguousarray(buffer)   # a copy only if it is not contiguous
        return self.comm.Isend(_flat(buffer), dest, tag), buffer

    def post_recv(self, out: np.ndarray, source: int, tag: int):
        """Non-blocking receive of a small host array into ``out``: a request for
        :meth:`test`, :meth:`wait_any` or :meth:`wait_all`."""
        return self.comm.Irecv(_flat(out), source, tag)

    @staticmethod
    def test(request) -> bool:
        """Whether ``request`` has completed (never waits)."""
        return bool(request.Test())

    def wait_any(self, requests) -> int:
        """Wait until one of ``requests`` completes; its index."""
        return int(self._timed(MPI.Request.Waitany, list(requests)))

    def wait_all(self, requests):
        """Wait until every one of ``requests`` has completed."""
        if requests:
            self._timed(MPI.Request.Waitall, list(requests))

    def allgather_rows(self, local: np.ndarray, counts) -> np.ndarray:
        """Concatenate every rank's float64 rows (axis 0) on every rank, in rank order.

        ``counts[r]`` is rank r's number of rows, known to every rank beforehand (so no
        extra message is needed to learn them).
        """
        local = np.ascontiguousarray(local, dtype=np.float64)
        if self.size == 1:
            return local.copy()
        counts = np.asarray(counts, dtype=np.int64)
        row = int(np.prod(local.shape[1:], dtype=np.int64))
        out = np.empty((int(counts.sum()),) + local.shape[1:], dtype=np.float64)
        self._timed(self.comm.Allgatherv, local, [out, counts * row, MPI.DOUBLE])
        return out

    def bcast_array(self, array, root: int):
        """Broadcast a contiguous array whose shape and dtype every rank already knows.

        numpy or device arrays; device arrays are staged through the host unless
        cuda_aware, and come back as the same kind on the same device.
        """
        if self.size == 1:
            return array
        template = array
        array, staged = self._to_buffer(array)
        if isinstance(array, np.ndarray):
            array = np.ascontiguousarray(array)
        self._timed(self.comm.Bcast, array, root)
        return self._from_buffer(array, template, staged)

    def gather_rows(self, local: np.ndarray, root: int = 0):
        """Concatenate every rank's rows (axis 0) on ``root`` in rank order; None elsewhere."""
        local = np.ascontiguousarray(local)
        if self.size == 1:
            return local.copy()
        counts = np.array(self.comm.allgather(local.shape[0]))
        row = int(np.prod(local.shape[1:], dtype=np.int64))
        out = None
        if self.rank == root:
            out = np.empty((int(counts.sum()),) + local.shape[1:], dtype=local.dtype)
            recv = [out, counts * row, MPI._typedict[local.dtype.char]]
        else:
            recv = None
        self._timed(self.comm.Gatherv, local, recv, root)
        return out

    # -- small objects ----------------------------------------------------------------
    def allreduce_obj_max(self, value):
        return value if self.size == 1 else self._timed(self.comm.allreduce, value, MPI.MAX)

    def bcast_obj(self, obj, root: int = 0):
        return obj if self.size == 1 else self._timed(self.comm.bcast, obj, root)

    def allgather_obj(self, obj) -> list:
        return [obj] if self.size == 1 else self._timed(self.comm.allgather, obj)

    def barrier(self):
        if self.size > 1:
            self._timed(self.comm.Barrier)

    def split(self, color: int, key: int) -> "Communicator":
        """A new communicator per color (ranks ordered by key); :meth:`free` it."""
        return Communicator(self.comm.Split(color, key), cuda_aware=self.cuda_aware)

    def abort(self, code: int = 1):
        """End every rank of this communicator's job now (MPI_Abort)."""
        if self.size > 1:
            self.comm.Abort(code)
        os._exit(code)

    def free(self):
        """Release a communicator this program created (split, duplicated)."""
        if self.comm not in (MPI.COMM_WORLD, MPI.COMM_SELF, MPI.COMM_NULL):
            self.comm.Free()

    def node_local(self) -> "Communicator":
        """The ranks of this communicator that share this rank's node (memory domain).

        An ``MPI.COMM_TYPE_SHARED`` split; its rank is the node-local index that picks
        this rank's GPU. Collective.
        """
        if self.size == 1:
            return self
        return Communicator(self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank),
                            cuda_aware=self.cuda_aware)


def _flat(array):
    """A 1-D view of a contiguous buffer for the vector (v) collectives."""
    return array.reshape(-1)


def _host_view(array):
    """A numpy view of host memory (numpy arrays, CPU torch tensors), else None."""
    if isinstance(array, np.ndarray):
        return array
    if type(array).__module__.startswith("torch") and array.device.type == "cpu":
        return array.detach().numpy()
    return None


def _pinned_empty(shape: tuple, dtype):
    """A host array in page-locked memory where torch or cupy can provide it (faster,
    asynchronous device copies), else plain host memory."""
    module = type(dtype).__module__
    if module.startswith("torch"):
        import torch
        return torch.empty(shape, dtype=dtype, pin_memory=torch.cuda.is_available()).numpy()
    try:
        import cupyx
        return cupyx.empty_pinned(shape, dtype=np.dtype(dtype))
    except ImportError:
        return np.empty(shape, dtype=np.dtype(dtype))


def _copy_to_host(device_array, host: np.ndarray):
    if type(device_array).__module__.startswith("torch"):
        import torch
        torch.from_numpy(host).copy_(device_array)
    else:
        device_array.get(out=host)


def _copy_from_host(host: np.ndarray, device_array):
    if type(device_array).__module__.startswith("torch"):
        import torch
        device_array.copy_(torch.from_numpy(host))
    else:
        device_array.set(host)


_AFFINE_OP = None


def _compose_affine(left, right, datatype):
    """right <- right o left for packed (factor, offset...) float64 buffers."""
    a = np.frombuffer(left, dtype=np.float64)
    b = np.frombuffer(right, dtype=np.float64)
    b[1:] += b[0] * a[1:]
    b[0] *= a[0]


def _affine_op():
    global _AFFINE_OP
    if _AFFINE_OP is None:
        _AFFINE_OP = MPI.Op.Create(_compose_affine, commute=False)
    return _AFFINE_OP


def world() -> Communicator:
    """A duplicate of the job's world communicator (so that hpc_picard's messages can
    never match a caller's). Only the CLI and drivers call this."""
    return Communicator(MPI.COMM_WORLD.Dup())


def library_version() -> str:
    """The MPI library's version string (MPI_Get_library_version)."""
    return MPI.Get_library_version()


def abort(code: int = 1):
    """End every rank of the job (MPI_Abort on COMM_WORLD), or this process alone."""
    if MPI.COMM_WORLD.Get_size() > 1:
        MPI.COMM_WORLD.Abort(code)
    os._exit(code)


def abort_on_error(exc_type, exc, tb):
    """sys.excepthook for MPI jobs: print this rank's traceback, then end every rank.

    mpi4py installs such a hook for ``python -m mpi4py script.py`` but not for console
    scripts; without it, one rank's exception leaves the others waiting in a
    collective forever.
    """
    rank = MPI.COMM_WORLD.Get_rank()
    text = "".join(traceback.format_exception(exc_type, exc, tb))
    sys.stderr.write("".join(f"[rank {rank}] {line}\n" for line in text.rstrip().splitlines()))
    sys.stderr.flush()
    abort(1)


def install_abort_handler():
    sys.excepthook = abort_on_error
