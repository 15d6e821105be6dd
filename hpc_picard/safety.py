"""Setting a run up without tracebacks: where a rank runs and which model it builds.

Both steps can fail for reasons that are the user's to fix (``--device cuda`` with no
GPU visible, a factory module that is missing, takes the wrong arguments or returns the
wrong thing, a network whose output has the wrong shape or dtype). Such a failure is a
:class:`SetupError`: one line that names the model and what is wrong, exit code 2.
:func:`agree` makes every rank raise the same error, so that the line is printed once
(by rank 0) and no rank is left waiting in a collective.
"""
from __future__ import annotations

import numpy as np

from .config import ConfigError, model_kind
from .devices import DeviceError

#: rows of the one score call that checks a model's output before sampling
PROBE_ROWS = 2
#: the state types the samplers compute in; anything else loses precision silently
SCORE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class SetupError(ConfigError):
    """Bad input found while setting up (device, model): one line, exit code 2."""


def agree(world, step):
    """``step()`` on every rank; if it raises a SetupError (or DeviceError) on any rank,
    every rank raises the error of the lowest such rank. Collective over ``world``."""
    failure = None
    try:
        value = step()
    except (SetupError, DeviceError) as exc:
        value, failure = None, str(exc)
    failures = [f for f in world.allgather_obj(failure) if f is not None]
    if failures:
        raise SetupError(failures[0])
    return value


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:240] if text else type(exc).__name__


def resolve_dim_checked(config):
    """models.resolve_dim, with whatever a user's factory raises (it is called when
    --dim is omitted) as one SetupError line."""
    from .models import resolve_dim
    try:
        return resolve_dim(config)
    except ConfigError:
        raise
    except Exception as exc:       # a user's code
        raise SetupError(f"model {config.model}: building it failed: {_describe(exc)}") from None


def build_checked(config, device: str, probe: bool = True):
    """The model ``config`` names, built on ``device`` and, unless it is a built-in
    analytic target or ``probe`` is False, checked with one small score call. Raises
    SetupError."""
    from .models import build_model
    kind = model_kind(config.model)
    name = f"model {config.model}"
    if kind == "analytic":
        try:
            return build_model(config, device=device)
        except DeviceError as exc:
            raise SetupError(f"{name}: {exc}") from None
    try:
        model = build_model(config, device=device)
    except ModuleNotFoundError as exc:
        raise SetupError(f"{name}: cannot import module {exc.name!r} (is it installed, "
                         f"and on PYTHONPATH on every node?)") from None
    except Exception as exc:       # a user's code: whatever it raises is one line
        raise SetupError(f"{name}: building it failed: {_describe(exc)}") from None
    if probe:
        probe_model(model, config, name)
    return model


def probe_model(model, config, name: str):
    """SetupError unless ``model.score`` maps a (PROBE_ROWS, d) batch at t = T to an
    array of that shape in float32 or float64 (picard-check-model checks far more)."""
    dim = getattr(model, "dim", None)
    if not isinstance(dim, (int, np.integer)) or dim <= 0:
        raise SetupError(f"{name}: model.dim must be a positive integer, got {dim!r}")
    x = np.random.default_rng(0).standard_normal((PROBE_ROWS, int(dim))).astype(config.dtype)
    t = np.full(PROBE_ROWS, config.T)
    try:
        out = model.score(x, t)
    except Exception as exc:
        raise SetupError(f"{name}: score(x, t) on a ({PROBE_ROWS}, {dim}) batch raised "
                         f"{_describe(exc)}") from None
    shape, dtype = getattr(out, "shape", None), getattr(out, "dtype", None)
    if shape is None or dtype is None:
        raise SetupError(f"{name}: score(x, t) returned {type(out).__name__}, not an array")
    if tuple(shape) != x.shape:
        raise SetupError(f"{name}: score(x, t) returned shape {tuple(shape)} for input "
                         f"{x.shape}; it must return one score per row, shape (B, d)")
    if np.dtype(str(dtype).replace("torch.", "")) not in SCORE_DTYPES:
        raise SetupError(f"{name}: score(x, t) returned {dtype}; it must return float32 or "
                         f"float64 (float16 loses the precision the sweeps need)")
