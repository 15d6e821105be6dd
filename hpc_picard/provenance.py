"""Where an output file came from: when, by which command, with which software, on
which ranks and devices (the output's ``/provenance`` group, docs/usage.md).

The resolved configuration is stored beside it (the root's ``config`` attribute);
this records what the configuration does not: ``device = "auto"`` there, the devices
each rank actually used here.
"""
from __future__ import annotations

import datetime
import importlib.metadata
import json
import platform
import shlex
import socket
import sys

#: distributions whose versions change the numbers or the I/O
PACKAGES = ("numpy", "torch", "mpi4py", "h5py", "diffusers", "cupy")


def _version(name: str) -> str:
    """The installed version, without importing the package (torch takes seconds)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def mpi_library() -> str:
    try:
        from mpi4py import MPI
        return MPI.Get_library_version().strip().splitlines()[0]
    except Exception:               # pragma: no cover - mpi4py is a dependency
        return "unknown"


def provenance(config, n_ranks: int, placements: list) -> dict:
    """Flat attributes (strings and ints) for the output's /provenance group."""
    from . import __version__
    import h5py
    time_ranks = config.resolved_time_ranks(n_ranks)
    record = {
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command_line": shlex.join(sys.argv),
        "host": socket.gethostname(),
        "hpc_picard_version": __version__,
        "python_version": platform.python_version(),
        "hdf5_version": h5py.version.hdf5_version,
        "mpi_library": mpi_library(),
        "n_ranks": n_ranks,
        "time_ranks": time_ranks,
        "sample_groups": n_ranks // time_ranks,
        # one line per world rank, in rank order: host, rank, node rank, device
        "devices": json.dumps(list(placements)),
    }
    record.update({f"{name}_version": _version(name) for name in PACKAGES})
    return record
