"""The output file: samples, the resolved configuration, statistics and the model.

Layout (docs/usage.md):

    /samples                       (num_samples, dim)
    /labels                        (num_samples,) int64: each sample's class label
                                   (conditional runs only, --labels)
    /  attrs: config (JSON), hpc_picard_version, n_ranks
    /stats attrs: rounds, evaluations, wall_time, score_time, communication_time,
                  io_time, noise_time, restarts, ... and accuracy scalars
    /stats/sweeps_per_block, /stats/residual_per_block, accuracy arrays
    /model attrs and datasets: the analytic target's defining parameters
    /provenance attrs: created_utc, command_line, host, versions (python, numpy,
                  torch, mpi4py, h5py, HDF5, the MPI library), n_ranks, time_ranks,
                  sample_groups, devices (JSON: each rank's actual placement)

The file is built in memory, written to a temporary name in the same directory,
fsynced and renamed, so a file at the final path is always complete.
"""
from __future__ import annotations

import itertools
import os
import time

import h5py
import numpy as np

from . import __version__, fileguard

_images = itertools.count()


def _put(group, name: str, value):
    if isinstance(value, np.ndarray):
        group.create_dataset(name, data=value)
    elif isinstance(value, (bool, int, float, str, np.integer, np.floating)):
        group.attrs[name] = value
    else:
        raise TypeError(f"cannot store {name!r} of type {type(value).__name__}")


def hdf5_image(fill, userblock_size: int = 0) -> bytes:
    """The bytes of an HDF5 file that ``fill(h5file)`` writes, built in memory.

    The file's user block (``userblock_size`` bytes) is not part of the image: the
    caller puts its own bytes there. HDF5 itself never writes to disk here, so a full
    disk is an ordinary OSError from Python's write, not an HDF5 failure (HDF5 2.0
    crashes or leaves half-closed ids on a failed write).
    """
    name = f"hpc_picard-image-{os.getpid()}-{next(_images)}"
    with h5py.File(name, "w", driver="core", backing_store=False,
                   userblock_size=userblock_size) as fh:
        fill(fh)
        fh.flush()
        return bytes(fh.id.get_file_image())


def write_atomic(path: str, fill, userblock_size: int = 0, seal=None) -> None:
    """Create an HDF5 file at ``path`` atomically; ``fill(h5file)`` writes its contents.

    ``seal(image)`` makes the user block: it gets the image after it and returns the
    whole file (the checkpoint puts its checksum there); without it the user block is
    zeros. The bytes go to a temporary file next to ``path``, which is synced and
    renamed over ``path``; it is removed on every failure, and by SIGTERM/SIGINT
    (:mod:`hpc_picard.fileguard`).
    """
    image = hdf5_image(fill, userblock_size)
    data = seal(image) if seal is not None else bytes(userblock_size) + image
    tmp = fileguard.new_temp(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        fileguard.commit_temp(tmp, path)
    except BaseException:
        fileguard.discard_temp(tmp)
        raise


def write_samples(path: str, samples: np.ndarray, config_json: str, n_ranks: int,
                  stats: dict, per_block: dict, model_parameters: dict,
                  accuracy: dict | None = None, io_started: float | None = None,
                  provenance: dict | None = None,
                  labels: np.ndarray | None = None) -> dict:
    """Write the output file atomically; returns the stats as written.

    ``io_started`` is the time.perf_counter() value at which output I/O began: the
    seconds since then, up to the stats being written, are added to ``io_time`` and
    ``wall_time`` so that the file's figures include writing the samples.
    """
    written = dict(stats)

    def fill(fh):
        fh.create_dataset("samples", data=samples)
        if labels is not None:
            fh.create_dataset("labels", data=np.asarray(labels, dtype=np.int64))
        fh.attrs["config"] = config_json
        fh.attrs["hpc_picard_version"] = __version__
        fh.attrs["n_ranks"] = n_ranks
        if io_started is not None:
            elapsed = time.perf_counter() - io_started
            for name in ("io_time", "wall_time"):
                written[name] = written.get(name, 0.0) + elapsed
        st = fh.create_group("stats")
        for name, value in {**written, **per_block, **(accuracy or {})}.items():
            _put(st, name, value)
        model = fh.create_group("model")
        for name, value in model_parameters.items():
            _put(model, name, value)
        origin = fh.create_group("provenance")
        for name, value in (provenance or {}).items():
            _put(origin, name, value)
    write_atomic(path, fill)
    return written
