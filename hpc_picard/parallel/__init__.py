"""The parallel runtime: communicators, the process grid and the decomposition."""
from .comm import Communicator, install_abort_handler, world
from .decomposition import balanced_range
from .grid import ProcessGrid

__all__ = ["Communicator", "ProcessGrid", "balanced_range", "install_abort_handler", "world"]
