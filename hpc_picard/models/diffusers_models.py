"""diffusers models as score models: ``--model diffusers:PATH``.

PATH is a local folder in diffusers' layout, read with no network access:

    PATH/unet/config.json + weights          a UNet2DModel
    PATH/scheduler/scheduler_config.json     its DDPM-family scheduler

(a folder holding a UNet2DModel's config.json and weights directly, with a
scheduler_config.json beside them, works too). The scheduler config gives the training
schedule (its alphas_cumprod) and what the network predicts (``prediction_type``:
epsilon, sample or v_prediction); :class:`~hpc_picard.models.torch_models.VPSchedule`
interpolates the discrete schedule to the project's continuous clock, and
:class:`~hpc_picard.models.torch_models.NetworkScoreModel` turns the prediction into a
score. The sampler's own grid decides where the network is evaluated; the scheduler's
step rule is not used.

Class-conditional UNets (``num_class_embeds`` = C + 1 in the UNet's config) are read as
C classes 0 .. C-1 plus the null class C, the last embedding, which the network was
trained on for dropped labels (the classifier-free guidance recipe, as in DiT): the
labels of ``--labels`` go to the UNet as ``class_labels``, and "no label" as C.
"""
from __future__ import annotations

import json
import os

import numpy as np

from .torch_models import NetworkScoreModel, VPSchedule

PREFIX = "diffusers:"


def _require_diffusers():
    try:
        import diffusers
    except ImportError:
        raise ImportError("--model diffusers:PATH needs the diffusers package "
                          "(pip install diffusers; `make install` includes it)") from None
    return diffusers


def find_parts(path: str) -> tuple:
    """(unet folder, scheduler config file) of a local diffusers folder, or ValueError."""
    if not os.path.isdir(path):
        raise ValueError(f"diffusers model folder {path} does not exist")
    for unet_dir, sched in ((os.path.join(path, "unet"),
                             os.path.join(path, "scheduler", "scheduler_config.json")),
                            (path, os.path.join(path, "scheduler_config.json"))):
        if os.path.isfile(os.path.join(unet_dir, "config.json")) and os.path.isfile(sched):
            return unet_dir, sched
    raise ValueError(f"{path} is not a diffusers folder with a UNet2DModel "
                     "(unet/config.json) and a scheduler (scheduler/scheduler_config.json)")


def folder_dim(path: str) -> int:
    """d of a diffusers folder's UNet2DModel (channels x height x width), read from its
    config.json without loading weights or diffusers."""
    unet_dir, _ = find_parts(path)
    with open(os.path.join(unet_dir, "config.json")) as fh:
        cfg = json.load(fh)
    size = cfg["sample_size"]
    size = size if isinstance(size, (list, tuple)) else (size, size)
    return int(cfg["in_channels"]) * int(size[0]) * int(size[1])


def schedule_from_config(config_file: str) -> tuple:
    """(VPSchedule, prediction_type) from a scheduler_config.json, built by diffusers'
    DDPMScheduler so that every beta_schedule diffusers knows is read the same way."""
    diffusers = _require_diffusers()
    with open(config_file) as fh:
        raw = json.load(fh)
    keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
            "prediction_type", "rescale_betas_zero_snr")
    scheduler = diffusers.DDPMScheduler(**{k: raw[k] for k in keys if k in raw})
    abar = scheduler.alphas_cumprod.double().numpy()
    if abar[-1] <= 0:
        # zero-terminal-SNR schedules end at abar = 0, t = infinity: drop that point
        abar = abar[:-1]
    return VPSchedule(abar), scheduler.config.prediction_type


class _UNetCall:
    """Calls a UNet2DModel as network(x, timestep[, labels]) and returns the plain tensor."""

    def __init__(self, unet):
        self.unet = unet

    def __call__(self, x, timestep, labels=None):
        return self.unet(x, timestep, class_labels=labels, return_dict=False)[0]


def load_diffusers(path: str, device: str = "cpu", max_batch: int = 0) -> NetworkScoreModel:
    """The score model of a local diffusers folder (see the module docstring)."""
    diffusers = _require_diffusers()
    unet_dir, sched_file = find_parts(path)
    unet = diffusers.UNet2DModel.from_pretrained(unet_dir, local_files_only=True,
                                                low_cpu_mem_usage=False)
    unet = unet.to(device).eval()
    for p in unet.parameters():
        p.requires_grad_(False)
    schedule, prediction = schedule_from_config(sched_file)
    cfg = unet.config
    size = cfg.sample_size if isinstance(cfg.sample_size, (list, tuple)) else (cfg.sample_size,) * 2
    shape = (cfg.in_channels,) + tuple(int(s) for s in size)
    classes = int(cfg.num_class_embeds or 0) - 1      # the last embedding is the null class
    if classes < 1 and cfg.num_class_embeds:
        raise ValueError(f"{path}: num_class_embeds = {cfg.num_class_embeds} leaves no class "
                         "besides the null class (the last embedding)")
    model = NetworkScoreModel(_UNetCall(unet), shape, prediction=prediction, clock=schedule,
                              device=device, max_batch=max_batch, dtype=unet.dtype,
                              name=PREFIX + path, num_classes=max(classes, 0),
                              null_label=classes if classes > 0 else None)
    model.unet = unet
    return model


def spec_path(spec: str) -> str:
    return spec[len(PREFIX):]


def is_spec(spec: str) -> bool:
    return spec.startswith(PREFIX)


def schedule_times(model) -> np.ndarray:
    """The project-clock times t_k of a loaded diffusers model's training timesteps."""
    return model.clock.times
