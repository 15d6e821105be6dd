"""Samplers: sequential references and the parallel-in-time methods.

:data:`SAMPLERS` is the registry: the only list of sampler names in the package. A new
sampler is a module with its class and one line here (docs/design.md, "Adding a
sampler"); its options then appear in RunConfig, the TOML keys, ``picard-sample
--help`` and ``--dry-run`` without any other change.
"""
from .base import BlockStats, Sampler, SamplerContext, SamplingError
from .options import Cost, Option, collect_options
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


def sampler_options() -> dict:
    """{option name: (Option, names of the samplers that read it)}, registry order."""
    return collect_options(SAMPLERS)


def build_sampler(config, context) -> Sampler:
    """The sampler a resolved RunConfig names, on the given context."""
    return SAMPLERS[config.sampler].from_config(config, context)


__all__ = ["BlockStats", "Cost", "Option", "Sampler", "SamplerContext", "SamplingError",
           "PicardSampler", "PicardODESampler", "ParadigmsSampler", "SequentialSampler",
           "SequentialODESampler", "SAMPLERS", "build_sampler", "sampler_options"]
