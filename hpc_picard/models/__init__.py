"""Score providers: the contract, the analytic targets, networks, and the model registry."""
from .base import AnalyticTarget, ScoreModel
from .gmm import GaussianMixture
from .grf import GaussianRandomField

ANALYTIC_MODELS = ("grf", "gmm")


def build_model(config, device: str = "cpu"):
    """The model a resolved :class:`~hpc_picard.config.RunConfig` names.

    ``device`` is where its scores run: "cpu" or a torch device string "cuda:<i>"
    (the rank's placement, :mod:`hpc_picard.devices`). Network models import torch
    (and diffusers) only here, so the analytic targets need neither.
    """
    from ..config import model_kind
    kind = model_kind(config.model)
    on_gpu = device.startswith("cuda")
    if config.model == "grf":
        if on_gpu:
            from .. import devices
            from .grf_device import DeviceGaussianRandomField
            return DeviceGaussianRandomField(config.dim, k0=config.grf_k0, alpha=config.grf_alpha,
                                             xp=devices.array_module("cuda"))
        return GaussianRandomField(config.dim, k0=config.grf_k0, alpha=config.grf_alpha)
    if config.model == "gmm":
        return GaussianMixture(config.dim, components=config.gmm_components,
                               std=config.gmm_std, radius=config.gmm_radius, seed=config.seed)
    if config.model in ("digits", "digits-cond"):
        from .digits import DigitsModel
        return DigitsModel(device=device, max_batch=config.max_batch,
                           conditional=config.model == "digits-cond")
    if kind == "diffusers":
        from .diffusers_models import load_diffusers, spec_path
        return load_diffusers(spec_path(config.model), device=device, max_batch=config.max_batch)
    if kind == "factory":
        from .torch_models import build_from_factory
        return build_from_factory(config.model, config, device=device)
    raise ValueError(f"unknown model {config.model!r}")


__all__ = ["AnalyticTarget", "ScoreModel", "GaussianMixture", "GaussianRandomField",
           "build_model", "ANALYTIC_MODELS"]
