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
        return Communicator(self.comm.Split(color, key), cuda_aware=self.cuda_aware)

    def node_local(self) -> "Communicator":
        """The ranks of this communicator that share this rank's node (memory domain).

        An ``MPI.COMM_TYPE_SHARED`` split; its rank is the node-local index that picks
        this rank's GPU. Collective.
        """
        if self.size == 1:
            return self
        return Communicator(self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank),
                            cuda_aware=self.cuda_aware)


class GroupCommunicator(Communicator):
    """The time communicator of one sample group whose max-reductions span every group.

    Samplers decide when a block's sweeps stop (and whether they diverge) with
    ``allreduce_max`` of their residuals, and ParaDiGMS where its window slides with
    ``allreduce_min``. Reducing that over all groups, not just this
    one, makes every group stop at the same sweep with the verdict a single rank would
    reach on the whole batch, so the samples do not depend on how the ranks are split
    into sample groups. All other collectives stay inside the group.
    """

    def __init__(self, comm, verdicts: Communicator, cuda_aware: bool = False):
        super().__init__(comm, cuda_aware)
        self.verdicts = verdicts

    def allreduce_max(self, value: float) -> float:
        return self.verdicts.allreduce_max(value)

    def allreduce_min(self, value: float) -> float:
        return self.verdicts.allreduce_min(value)

    def allreduce_obj_max(self, value):
        return self.verdicts.allreduce_obj_max(value)


def world() -> Communicator:
    """The job's world communicator. Only the CLI and drivers call this."""
    return Communicator(MPI.COMM_WORLD)


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
    if MPI.COMM_WORLD.Get_size() > 1:
        MPI.COMM_WORLD.Abort(1)
    os._exit(1)


def install_abort_handler():
    sys.excepthook = abort_on_error
