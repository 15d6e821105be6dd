"""The parallel runtime: communicators, the process grid and the decomposition."""
import importlib

from .decomposition import balanced_range

# Importing mpi4py initialises MPI. The communicators load on first use, so that code
# which only reads the sampler classes (config.py, `picard-sample --help`, the job-script
# generator on a login node) does not start MPI.
_LAZY = {"Communicator": ".comm", "install_abort_handler": ".comm", "world": ".comm",
         "ProcessGrid": ".grid"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Communicator", "ProcessGrid", "balanced_range", "install_abort_handler", "world"]
