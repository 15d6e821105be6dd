"""Score providers: the contract, the analytic targets, networks, and the model registry."""
from .base import AdoptedModel, AnalyticTarget, ScoreModel, score_model
from .gmm import GaussianMixture
from .grf import GaussianRandomField

ANALYTIC_MODELS = ("grf", "gmm")
#: d of an analytic target when --dim is omitted (they take any d; networks fix theirs)
DEFAULT_DIM = 1024


def model_dim(config) -> int | None:
    """The d the model named by ``config`` fixes, or None if it takes d from --dim.

    Found without loading weights where that is possible: the digits network's d is
    a constant, a diffusers folder's follows from its unet/config.json. A user's
    factory is called (on the CPU) when --dim is omitted; with --dim given the run
    checks the built model against it instead (:func:`resolve_dim`).
    """
    from ..config import model_kind
    kind = model_kind(config.model)
    if kind == "analytic":
        return None
    if config.model in ("digits", "digits-cond"):
        from .digits import DigitsModel
        return DigitsModel.dim
    if kind == "diffusers":
        from .diffusers_models import folder_dim, spec_path
        return folder_dim(spec_path(config.model))
    if config.dim:
        return config.dim
    return build_model(config, device="cpu").dim


def resolve_dim(config, model=None):
    """``config`` with ``dim`` set to the model's d (``model``'s if given, else
    :func:`model_dim`'s): an omitted --dim (0) takes it, a contradicting one is a
    ConfigError (one line, before any sampling). Analytic targets take --dim, or
    :data:`DEFAULT_DIM`."""
    from ..config import ConfigError, check_model_name
    check_model_name(config.model)
    if model is not None:
        fixed = int(model.dim)
    else:
        try:
            fixed = model_dim(config)
        except (ImportError, OSError, TypeError, ValueError) as exc:
            raise ConfigError(f"--model {config.model}: {exc}") from None
    if fixed is None:
        return config.replace(dim=config.dim or DEFAULT_DIM)
    if config.dim and config.dim != fixed:
        raise ConfigError(f"--dim {config.dim} contradicts the model: {config.model} has "
                          f"d = {fixed}; omit --dim")
    return config.replace(dim=fixed)


def build_model(config, device: str = "cpu"):
    """The model a resolved :class:`~hpc_picard.config.RunConfig` names.

    ``device`` is where its scores run: "cpu" or a torch device string "cuda:<i>"
    (the rank's placement, :mod:`hpc_picard.devices`). Network models import torch
    (and diffusers) only here, so the analytic targets need neither.
    """
    from ..config import model_kind
    kind = model_kind(config.model)
    on_gpu = device.startswith("cuda")
    dim = config.dim or DEFAULT_DIM         # analytic targets; networks fix their own
    if config.model == "grf":
        if on_gpu:
            from .. import devices
            from .grf_device import DeviceGaussianRandomField
            return DeviceGaussianRandomField(dim, k0=config.grf_k0, alpha=config.grf_alpha,
                                             xp=devices.array_module("cuda"))
        return GaussianRandomField(dim, k0=config.grf_k0, alpha=config.grf_alpha)
    if config.model == "gmm":
        return GaussianMixture(dim, components=config.gmm_components,
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


__all__ = ["AdoptedModel", "AnalyticTarget", "ScoreModel", "GaussianMixture",
           "GaussianRandomField", "build_model", "model_dim", "resolve_dim", "score_model",
           "ANALYTIC_MODELS", "DEFAULT_DIM"]
