"""hpc_picard: parallel-in-time sampling of diffusion models (PIADM) on MPI."""
__version__ = "0.1.0"
