"""Samplers: sequential references and the parallel-in-time methods."""
from .base import BlockStats, Sampler, SamplerContext, SamplingError
from .piadm import PicardSampler
from .sequential import SequentialODESampler, SequentialSampler

SAMPLERS = {
    "sequential-sde": SequentialSampler,
    "piadm-sde": PicardSampler,
}


def build_sampler(config, context) -> Sampler:
    """The sampler a resolved RunConfig names, on the given context."""
    cls = SAMPLERS[config.sampler]
    return cls(context, picard_iters=config.picard_iters, tol=config.tol)


__all__ = ["BlockStats", "Sampler", "SamplerContext", "SamplingError", "PicardSampler",
           "SequentialSampler", "SequentialODESampler", "SAMPLERS", "build_sampler"]
