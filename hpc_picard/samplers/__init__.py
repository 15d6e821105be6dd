"""Samplers: sequential references and the parallel-in-time methods."""
from .base import BlockStats, Sampler, SamplerContext, SamplingError
from .paradigms import ParadigmsSampler
from .piadm import PicardODESampler, PicardSampler
from .sequential import SequentialODESampler, SequentialSampler

SAMPLERS = {
    "sequential-sde": SequentialSampler,
    "piadm-sde": PicardSampler,
    "sequential-ode": SequentialODESampler,
    "piadm-ode": PicardODESampler,
    "paradigms": ParadigmsSampler,
}


def build_sampler(config, context) -> Sampler:
    """The sampler a resolved RunConfig names, on the given context."""
    return SAMPLERS[config.sampler].from_config(config, context)


__all__ = ["BlockStats", "Sampler", "SamplerContext", "SamplingError", "PicardSampler",
           "PicardODESampler", "ParadigmsSampler", "SequentialSampler", "SequentialODESampler",
           "SAMPLERS", "build_sampler"]
