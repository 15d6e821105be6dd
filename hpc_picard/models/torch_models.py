"""Networks as score models: the adapters between numpy samplers and torch modules.

The samplers hand a model numpy batches ``x`` of shape (B, d) and forward times ``t``
of shape (B,) (float64, the project's clock: unit-rate OU, t = 0 at the data) and want
scores of shape (B, d) back. :class:`NetworkScoreModel` is that seam for networks: it
moves each chunk of at most ``max_batch`` rows to the rank's device, runs the network
under ``torch.no_grad``, converts its output to a score and copies it back.

What the network predicts (``prediction``):

- ``"score"``: grad log p_t(x) itself;
- ``"epsilon"``: the noise eps in X_t = e^{-t} X_0 + sqrt(1 - e^{-2t}) eps; then
  s = -eps / sqrt(1 - e^{-2t}) (ALGORITHM section 1);
- ``"sample"``: the clean data X_0; then s = -(x - e^{-t} x0) / (1 - e^{-2t});
- ``"v_prediction"``: v = e^{-t} eps - sqrt(1 - e^{-2t}) x0; then
  eps = e^{-t} v + sqrt(1 - e^{-2t}) x.

What the network is told about time (``clock``):

- ``None``: the project's forward time t itself;
- a :class:`VPSchedule`: the network was trained on a discrete DDPM/VP schedule and
  takes a timestep index; t is mapped to a fractional index by interpolating the
  schedule's own clock t_k = -log(abar_k) / 2 (exact at the schedule's points).

The network sees states in its own layout ``shape`` (e.g. (C, H, W)); the adapter
reshapes (B, d) <-> (B, *shape).
"""
from __future__ import annotations

import importlib
import inspect
import math
import os

import numpy as np

from ..process import time_from_signal_level
from .base import ScoreModel, score_model

PREDICTIONS = ("score", "epsilon", "sample", "v_prediction")

#: rows per network call on the CPU when nothing else is said: big enough to use the
#: BLAS well, small enough to keep activations in cache
CPU_ROWS = 256
#: fraction of the free GPU memory a chunk's activations may take
GPU_MEMORY_FRACTION = 0.5


def cpu_threads() -> int:
    """torch intra-op threads per rank on the CPU: OMP_NUM_THREADS if set, else 1.

    PIADM's parallelism is the ranks'; a torch thread pool per rank on top of them
    oversubscribes the cores, and torch's pool then slows down by an order of magnitude
    (measured 14x on a loaded 2-core machine for the digits U-Net). One rank on a big
    node sets OMP_NUM_THREADS to use more.
    """
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "1")))
    except ValueError:
        return 1


def _torch():
    try:
        import torch
    except ImportError:
        raise ImportError("network models need torch: `make install` pins a CPU build; "
                          "on a GPU machine install the CUDA build (docs/models.md)") from None
    return torch


class VPSchedule:
    """A discrete DDPM/VP schedule and its continuous-time interpolation.

    alphas_cumprod: abar_k for timesteps k = 0 .. K-1 (decreasing, in (0, 1]).
    Timestep k sits at forward time t_k = -log(abar_k) / 2 in the project's clock.
    """

    def __init__(self, alphas_cumprod):
        abar = np.asarray(alphas_cumprod, dtype=np.float64)
        if abar.ndim != 1 or len(abar) < 2:
            raise ValueError("alphas_cumprod must be a 1-D array of at least two levels")
        if not (np.all(abar > 0) and np.all(abar <= 1) and np.all(np.diff(abar) < 0)):
            raise ValueError("alphas_cumprod must decrease strictly inside (0, 1]")
        self.alphas_cumprod = abar
        self.times = time_from_signal_level(abar)          # t_k, increasing

    @classmethod
    def linear(cls, num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        """The DDPM paper's linear beta schedule."""
        betas = np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64)
        return cls(np.cumprod(1.0 - betas))

    @property
    def num_timesteps(self) -> int:
        return len(self.times)

    @property
    def t_min(self) -> float:
        return float(self.times[0])

    @property
    def t_max(self) -> float:
        return float(self.times[-1])

    def timestep(self, t) -> np.ndarray:
        """Fractional timestep index of forward times t (float64 array).

        Linear in t between the schedule's points; below t_0 it runs linearly down to
        index -1 at t = 0 (DDPM's "step before the first"), and above t_{K-1} it stays
        at K-1: past the schedule's end p_t is N(0, I) to within e^{-2 t_max}, and the
        last timestep is the network's best knowledge of that regime.
        """
        t = np.asarray(t, dtype=np.float64)
        knots = np.concatenate([[0.0], self.times])
        index = np.arange(-1, self.num_timesteps, dtype=np.float64)
        return np.interp(t, knots, index)


class NetworkScoreModel(ScoreModel):
    """A torch network (or any callable on torch tensors) as a score model.

    network:    called as ``network(x, time)`` with x a tensor (B, *shape) on ``device``
                and time a float tensor (B,): forward time t, or the schedule's
                fractional timestep if ``clock`` is a VPSchedule; returns a tensor of x's
                shape (or an object whose ``.sample`` is one, as diffusers models do);
    shape:      the network's layout of one state, prod(shape) = d;
    prediction: what the network returns (module docstring);
    device:     torch device string ("cpu", "cuda:0");
    max_batch:  rows per network call (0: automatic, see :meth:`preferred_batch`);
    dtype:      the network's floating type (default: its parameters' dtype, float32);
    num_classes: > 0 for a class-conditional network, always called as
                ``network(x, time, labels)`` with labels a long tensor (B,)
                (hpc_picard.conditioning); otherwise as network(x, time);
    null_label: the network's own index of "no label", which the project's -1 is
                mapped to (None: -1 is passed through, the network maps it itself).
    """

    name = "network"

    def __init__(self, network, shape, prediction: str = "score", clock: VPSchedule | None = None,
                 device: str = "cpu", max_batch: int = 0, dtype=None, name: str | None = None,
                 num_classes: int = 0, null_label: int | None = None):
        torch = _torch()
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {prediction!r}; choose one of {', '.join(PREDICTIONS)}")
        self.shape = tuple(int(n) for n in shape)
        self.dim = int(math.prod(self.shape))
        self.prediction = prediction
        self.clock = clock
        self.device = torch.device(device)
        self.max_batch = int(max_batch)
        self.num_classes = int(num_classes)
        self.null_label = null_label
        if name is not None:
            self.name = name
        if isinstance(network, torch.nn.Module):
            network = network.to(self.device).eval()
            params = [p for p in network.parameters()]
            if dtype is None and params:
                dtype = params[0].dtype
            for p in params:
                p.requires_grad_(False)
        self.network = network
        self.torch_dtype = dtype if dtype is not None else torch.float32
        if self.device.type == "cpu":
            torch.set_num_threads(cpu_threads())

    def parameters(self) -> dict:
        out = {"network": type(self.network).__name__, "prediction": self.prediction,
               "device": str(self.device), "shape": np.array(self.shape, dtype=np.int64)}
        if self.num_classes:
            out["num_classes"] = self.num_classes
        if self.clock is not None:
            out["alphas_cumprod"] = self.clock.alphas_cumprod
        return out

    def preferred_batch(self) -> int:
        """Rows per network call: ``max_batch`` if set, else sized to the device.

        On a GPU, half the free memory (split between the ranks that share the GPU,
        :func:`hpc_picard.devices.gpu_memory_budget`) divided by a generous per-row activation
        estimate (64 float32 copies of a state per layer, times the parameter count's
        log, a U-Net's width) so a rank does not run out of memory; on the CPU,
        :data:`CPU_ROWS`.
        """
        if self.max_batch > 0:
            return self.max_batch
        if self.device.type != "cuda":
            return CPU_ROWS
        from .. import devices
        torch = _torch()
        free, _ = torch.cuda.mem_get_info(self.device)
        # memory torch's caching allocator holds but does not use is free to us too;
        # without it every large call would shrink the next call's chunks
        free += torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
        per_row = 64 * 4 * self.dim * max(1, int(math.log2(max(2, self._parameter_count()))))
        return max(1, devices.gpu_memory_budget(free, GPU_MEMORY_FRACTION) // per_row)

    def _parameter_count(self) -> int:
        """Parameters of the network, or of the module a wrapper holds (``.unet``,
        ``.module``), or 1 for a plain function."""
        torch = _torch()
        for candidate in (self.network, getattr(self.network, "unet", None),
                          getattr(self.network, "module", None)):
            if isinstance(candidate, torch.nn.Module):
                return sum(p.numel() for p in candidate.parameters())
        return 1

    #: the sweep engine keeps this model's states as torch tensors (arrays.py)
    array_backend = "torch"

    @property
    def torch_device(self) -> str:
        return str(self.device)

    def score(self, x, t, cond=None):
        """Scores at x (B, d) and forward times t (B,): numpy in, numpy out (x's dtype);
        a torch tensor in, a tensor out on its device (the sweep engine's torch arrays
        stay where they are). cond: (B,) class labels (-1: none) of a conditional
        network, or None."""
        if type(x).__module__.startswith("torch"):
            return self._score_tensor(x, t, cond)
        x = np.asarray(x)
        t = np.broadcast_to(np.asarray(t, dtype=np.float64), (x.shape[0],))
        out = np.empty(x.shape, dtype=x.dtype if x.dtype.kind == "f" else np.float64)
        rows = self.preferred_batch()
        for lo in range(0, x.shape[0], rows):
            labels = None if cond is None else cond[lo:lo + rows]
            out[lo:lo + rows] = self._score_chunk(x[lo:lo + rows], t[lo:lo + rows], labels)
        return out

    def _labels(self, cond):
        """The network's label tensor for the project's labels (-1: none)."""
        torch = _torch()
        labels = np.asarray(cond, dtype=np.int64)
        if self.null_label is not None:
            labels = np.where(labels < 0, self.null_label, labels)
        return torch.as_tensor(labels, device=self.device)

    def _call_network(self, xs, ts, cond):
        """The network's raw output for a chunk; cond: (rows,) labels or None."""
        if not self.num_classes:
            raw = self.network(xs, ts)
        else:       # no labels: every row unconditional (the network's null class)
            labels = np.full(xs.shape[0], -1) if cond is None else cond
            raw = self.network(xs, ts, self._labels(labels))
        return getattr(raw, "sample", raw)

    def _score_chunk(self, x: np.ndarray, t: np.ndarray, cond=None) -> np.ndarray:
        torch = _torch()
        with torch.no_grad():
            xs = torch.as_tensor(np.ascontiguousarray(x), device=self.device).to(self.torch_dtype)
            xs = xs.reshape((x.shape[0],) + self.shape)
            clock = t if self.clock is None else self.clock.timestep(t)
            ts = torch.tensor(np.array(clock, dtype=np.float64), device=self.device, dtype=self.torch_dtype)
            raw = self._call_network(xs, ts, cond)
            if tuple(raw.shape) != tuple(xs.shape):
                raise ValueError(f"network returned shape {tuple(raw.shape)} for input "
                                 f"{tuple(xs.shape)}; a score model must keep the shape")
            # The conversion runs in float64 on the host: near t = 0 the factor
            # 1 / (1 - e^{-2t}) is large and float32 would lose digits in x - e^{-t} x0.
            refuse_coarse(raw.dtype)
            raw = raw.reshape(x.shape[0], -1).double().cpu().numpy()
        return prediction_to_score(raw, np.asarray(x, dtype=np.float64), t, self.prediction)

    def _score_tensor(self, x, t, cond=None):
        """The tensor path of :meth:`score`: float64 conversion on the model's device."""
        torch = _torch()
        t = np.broadcast_to(np.asarray(t, dtype=np.float64), (x.shape[0],))
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        rows = self.preferred_batch()
        with torch.no_grad():
            for lo in range(0, x.shape[0], rows):
                part = x[lo:lo + rows]
                xs = part.to(self.device, self.torch_dtype).reshape((part.shape[0],) + self.shape)
                clock = t[lo:lo + rows] if self.clock is None else self.clock.timestep(t[lo:lo + rows])
                ts = torch.tensor(np.array(clock, dtype=np.float64), device=self.device,
                                  dtype=self.torch_dtype)
                labels = None if cond is None else np.asarray(cond)[lo:lo + rows]
                raw = self._call_network(xs, ts, labels)
                if tuple(raw.shape) != tuple(xs.shape):
                    raise ValueError(f"network returned shape {tuple(raw.shape)} for input "
                                     f"{tuple(xs.shape)}; a score model must keep the shape")
                times = torch.as_tensor(np.array(t[lo:lo + rows]), device=self.device)
                out[lo:lo + rows] = prediction_to_score(
                    raw.reshape(part.shape[0], -1).double(), part.to(self.device).double(),
                    times, self.prediction).to(x.device)
        return out


def prediction_to_score(raw, x, t, prediction: str):
    """A network's raw output (B, d) at states x (B, d), forward times t (B,) -> score.
    numpy arrays, or torch tensors on one device (then computed in torch)."""
    if prediction == "score":
        return raw
    xp = np
    if type(raw).__module__.startswith("torch"):
        xp = _torch()
        t = xp.as_tensor(t, dtype=xp.float64, device=raw.device)[:, None]
    else:
        t = np.asarray(t, dtype=np.float64)[:, None]
    var = -xp.expm1(-2.0 * t)                 # 1 - e^{-2t}
    if prediction == "epsilon":
        return -raw / xp.sqrt(var)
    if prediction == "sample":
        return -(x - xp.exp(-t) * raw) / var
    if prediction == "v_prediction":
        eps = xp.exp(-t) * raw + xp.sqrt(var) * x
        return -eps / xp.sqrt(var)
    raise ValueError(f"unknown prediction {prediction!r}")


def refuse_coarse(dtype):
    """TypeError for scores coarser than float32: float16 and bfloat16 carry 3 digits,
    below the residuals the sweeps compare against --tol."""
    name = str(dtype).replace("torch.", "")
    if name not in ("float32", "float64"):
        raise TypeError(f"score returned {name}; it must return float32 or float64 "
                        f"(half precision loses the digits the sweeps need)")


class CallableScoreModel(ScoreModel):
    """A plain Python function ``score(x, t)`` on numpy arrays as a score model.

    x: (B, d) states; t: (B,) forward times (float64); returns (B, d).
    """

    name = "callable"

    def __init__(self, fn, dim: int, name: str | None = None):
        self.fn = fn
        self.dim = int(dim)
        if name is not None:
            self.name = name

    def score(self, x, t):
        out = np.asarray(self.fn(x, np.asarray(t, dtype=np.float64)))
        refuse_coarse(out.dtype)
        return out.astype(np.asarray(x).dtype, copy=False)


def as_score_model(obj, dim: int | None = None, device: str = "cpu", max_batch: int = 0,
                   name: str | None = None) -> ScoreModel:
    """Wrap what a user's factory returned into a score model.

    - a :class:`ScoreModel` (anything with ``dim`` and ``score``): through
      :func:`~hpc_picard.models.base.score_model`;
    - a ``torch.nn.Module``: a score network on (x, t) in the project's clock, with the
      state layout from its ``sample_shape`` attribute if present, else (d,); with a
      ``num_classes`` attribute > 0 it is class-conditional, called as (x, t, labels),
      labels -1 for none;
    - a plain callable: ``score(x, t)`` on numpy arrays; needs ``dim``.
    """
    if hasattr(obj, "score") and hasattr(obj, "dim"):
        return score_model(obj)
    try:
        import torch
        is_module = isinstance(obj, torch.nn.Module)
    except ImportError:
        is_module = False
    if is_module:
        shape = tuple(getattr(obj, "sample_shape", ()) or ((dim,) if dim else ()))
        if not shape:
            raise ValueError("a torch module needs a sample_shape attribute or --dim")
        prediction = getattr(obj, "prediction", "score")
        return NetworkScoreModel(obj, shape, prediction=prediction, device=device,
                                 max_batch=max_batch, name=name,
                                 num_classes=int(getattr(obj, "num_classes", 0) or 0))
    if callable(obj):
        if not dim:
            raise ValueError("a plain score function needs --dim")
        return CallableScoreModel(obj, dim, name=name)
    raise TypeError(f"the factory returned {'None' if obj is None else type(obj).__name__}, "
                    "which is neither a score model, a torch module nor a callable")


def load_factory(spec: str):
    """The factory named by "package.module:function" (imported, not called)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"--model {spec!r}: expected module:factory")
    module = importlib.import_module(module_name)
    try:
        factory = module
        for part in attr.split("."):
            factory = getattr(factory, part)
    except AttributeError:
        raise ValueError(f"--model {spec!r}: module {module_name} has no {attr}") from None
    if not callable(factory):
        raise ValueError(f"--model {spec!r}: {attr} is not callable")
    return factory


def build_from_factory(spec: str, config, device: str = "cpu") -> ScoreModel:
    """Call a user's factory and wrap its result.

    The factory is called with the keyword arguments it declares among ``config``
    (the RunConfig), ``dim`` (the --dim given, None when omitted: the model then
    fixes d) and ``device`` (a torch device string), so both ``make()`` and
    ``make(dim, device)`` work.
    """
    factory = load_factory(spec)
    offered = {"config": config, "dim": config.dim or None, "device": device}
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    takes_all = any(p.kind == p.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in offered.items() if takes_all or k in params}
    return as_score_model(factory(**kwargs), dim=config.dim or None, device=device,
                          max_batch=config.max_batch, name=spec)
