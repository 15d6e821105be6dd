"""Score providers: the contract, the analytic targets, and the model registry."""
from .base import AnalyticTarget, ScoreModel
from .gmm import GaussianMixture
from .grf import GaussianRandomField

ANALYTIC_MODELS = ("grf", "gmm")


def build_model(config):
    """The model a resolved :class:`~hpc_picard.config.RunConfig` names."""
    if config.model == "grf":
        return GaussianRandomField(config.dim, k0=config.grf_k0, alpha=config.grf_alpha)
    if config.model == "gmm":
        return GaussianMixture(config.dim, components=config.gmm_components,
                               std=config.gmm_std, radius=config.gmm_radius, seed=config.seed)
    raise ValueError(f"unknown model {config.model!r}; expected one of {', '.join(ANALYTIC_MODELS)}")


__all__ = ["AnalyticTarget", "ScoreModel", "GaussianMixture", "GaussianRandomField",
           "build_model", "ANALYTIC_MODELS"]
