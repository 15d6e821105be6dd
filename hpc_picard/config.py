"""The run's configuration: one typed, validated object.

Built from defaults, then an optional TOML file, then command-line options (each
later source overrides the earlier), validated on every rank before the first
collective call, and written as JSON into every output file.

Two kinds of fields (docs/design.md, "Options"):

- general options, written out in :class:`RunConfig` below: a field with its default,
  a row in ``cli.OPTIONS`` (flag and help) and, if it has a range, a check in
  :meth:`RunConfig.validate`;
- sampler options, declared by the sampler classes (samplers/options.py) and added to
  RunConfig from the registry by :func:`_with_sampler_options`: their defaults, types,
  ranges and cross-checks live in the class that reads them.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import tomllib
from dataclasses import dataclass, fields

from .errors import ConfigError
from .samplers import SAMPLERS as SAMPLER_CLASSES
from .samplers import sampler_options

SAMPLERS = tuple(SAMPLER_CLASSES)
MODELS = ("grf", "gmm")
# Models and devices (issue 5): built-in networks, and the two spellings that name a
# model from outside (a local diffusers folder, a user's factory function).
NETWORK_MODELS = ("digits", "digits-cond")
DIFFUSERS_PREFIX = "diffusers:"
DEVICES = ("auto", "cpu", "cuda")
CUDA_AWARE_CHOICES = ("auto", "yes", "no")
ARRAY_BACKENDS = ("auto", "numpy", "torch", "cupy")     # hpc_picard/arrays.py
DTYPES = ("float64", "float32")
#: --time-ranks auto: the performance model picks the split (perfmodel.py)
TIME_RANKS_AUTO = -1


def _with_sampler_options(cls):
    """Add one field per registered sampler option (its name, type and default)."""
    for name, (option, _) in sampler_options().items():
        if name in cls.__annotations__:
            raise TypeError(f"sampler option {name} clashes with a general option of RunConfig")
        cls.__annotations__[name] = option.type.__name__
        setattr(cls, name, option.default)
    return cls


@dataclass
@_with_sampler_options
class RunConfig:
    # what to sample
    model: str = "grf"
    dim: int = 0                 # 0: the model's own d (models.resolve_dim; 1024 for grf, gmm)
    num_samples: int = 256
    # how
    sampler: str = "piadm-sde"
    T: float = 10.0
    delta: float = 1e-3
    blocks: int = 16
    steps_per_block: int = 64
    seed: int = 0
    dtype: str = "float64"
    time_ranks: int = 0          # 0: every rank on time slices (one sample group)
    max_batch: int = 0           # 0: one score call per sweep, however large
    # where
    output: str = "samples.h5"
    # checkpoint and restart (operations, docs/operations.md)
    checkpoint: str = ""         # "": no checkpoints
    checkpoint_every: int = 1    # blocks between checkpoints
    # analytic model options
    grf_k0: float = 4.0
    grf_alpha: float = 2.0
    gmm_components: int = 8
    gmm_std: float = 0.5
    gmm_radius: float = 6.0
    # models and devices (issue 5)
    device: str = "auto"          # auto: a GPU where one is visible, else the CPU
    cuda_aware_mpi: str = "auto"  # auto: trust the MPI library's GPU-support switches
    array_backend: str = "auto"   # the sweep engine's arrays (auto: the model's own type)
    save_images: str = ""         # PNG grid of the samples ("" : none)
    # plans (docs/samplers.md)
    accuracy: float = 0.0            # > 0: choose T, blocks, slices, sweeps (plans.py)
    # -- conditional sampling (hpc_picard/conditioning.py, docs/models.md) --
    labels: str = ""                 # class label per sample: list, range, random or file
    guidance_scale: float = 0.0      # classifier-free guidance w (0: none)
    # scaling studies (docs/scaling.md)
    emulate_latency: str = ""        # "T0[,T1]": each score call lasts >= T0 + T1 x rows s
    perf_profile: str = ""           # JSON of measured costs for --dry-run and --time-ranks auto
    # ... and after these, one field per sampler option (_with_sampler_options)

    # -- construction -----------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_sources(cls, file: str | None = None, overrides: dict | None = None) -> "RunConfig":
        """Defaults < TOML file < overrides; unknown keys and wrong types are errors."""
        values = {}
        if file is not None:
            values.update(load_toml(file))
        values.update(overrides or {})
        return cls.from_dict(values)

    @classmethod
    def from_dict(cls, values: dict) -> "RunConfig":
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"unknown configuration key(s): {', '.join(unknown)}")
        kwargs = {}
        for name, value in values.items():
            if name == "time_ranks" and value == "auto":
                value = TIME_RANKS_AUTO
            kwargs[name] = _coerce(name, known[name].type, value)
        return cls(**kwargs)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    def replace(self, **changes) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    # -- validation -------------------------------------------------------------------
    def validate(self, num_ranks: int = 1) -> "RunConfig":
        """Raise ConfigError with a one-line message for the first problem found.

        Needs nothing but the configuration and the rank count, so every rank reaches
        the same verdict without communicating.
        """
        check_model_name(self.model)
        if self.device not in DEVICES:
            raise ConfigError(f"unknown device {self.device!r}; choose one of: {', '.join(DEVICES)}")
        if self.array_backend not in ARRAY_BACKENDS:
            raise ConfigError(f"unknown array backend {self.array_backend!r}; choose one of: "
                              f"{', '.join(ARRAY_BACKENDS)}")
        if self.cuda_aware_mpi not in CUDA_AWARE_CHOICES:
            raise ConfigError(f"--cuda-aware-mpi must be one of: {', '.join(CUDA_AWARE_CHOICES)}, "
                              f"got {self.cuda_aware_mpi!r}")
        if self.save_images:
            directory = os.path.dirname(os.path.abspath(self.save_images))
            if not os.path.isdir(directory):
                raise ConfigError(f"--save-images directory {directory} does not exist")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler {self.sampler!r}; choose one of: {', '.join(SAMPLERS)}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"unknown dtype {self.dtype!r}; choose one of: {', '.join(DTYPES)}")
        if self.dim < 0:
            raise ConfigError(f"--dim must be positive (omit it for the model's own d), got {self.dim}")
        for name in ("num_samples", "blocks", "steps_per_block"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        for name, (option, _) in sampler_options().items():
            option.check(getattr(self, name))
        for name in ("T", "delta", "grf_k0", "grf_alpha", "gmm_std", "gmm_radius"):
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(f"--{_flag(name)} must be finite, got {getattr(self, name)}")
        if not self.delta > 0:
            raise ConfigError(f"--delta must be positive, got {self.delta}")
        if not self.T > self.delta:
            raise ConfigError(f"--T must exceed --delta, got T={self.T} <= delta={self.delta}")
        if self.seed < 0:
            raise ConfigError(f"--seed must be non-negative, got {self.seed}")
        if self.max_batch < 0:
            raise ConfigError(f"--max-batch must be non-negative, got {self.max_batch}")
        self.validate_operations()
        if self.model == "grf" and math.isqrt(self.dim) ** 2 != self.dim:
            raise ConfigError(f"the grf model needs --dim to be a perfect square (n x n grid), got {self.dim}")
        if self.model == "grf" and not self.grf_k0 > 0:
            raise ConfigError(f"--grf-k0 must be positive, got {self.grf_k0}")
        if self.model == "grf" and self.grf_alpha < 0:
            raise ConfigError(f"--grf-alpha must be non-negative, got {self.grf_alpha}")
        if self.model == "gmm":
            if self.gmm_components < 1:
                raise ConfigError(f"--gmm-components must be at least 1, got {self.gmm_components}")
            if not self.gmm_std > 0:
                raise ConfigError(f"--gmm-std must be positive, got {self.gmm_std}")
            if self.gmm_radius < 0:
                raise ConfigError(f"--gmm-radius must be non-negative, got {self.gmm_radius}")
        if not (math.isfinite(self.accuracy) and self.accuracy >= 0):
            raise ConfigError(f"--accuracy must be non-negative and finite, got {self.accuracy}")
        self.sampler_class.validate(self)
        from .limits import check_combinations, check_ranges   # limits reads our fields
        check_ranges(self)
        from .conditioning import check_guidance
        check_guidance(self.guidance_scale, self.labels)
        self._validate_scaling()
        if self.time_ranks != TIME_RANKS_AUTO:   # auto: the model picks a valid split later
            self._validate_split(num_ranks)
        # after the split checks, whose messages say more about a bad split
        check_combinations(self)
        self.check_output_path()
        return self

    def _validate_split(self, num_ranks: int):
        time_ranks = self.resolved_time_ranks(num_ranks)
        if time_ranks < 1 or num_ranks % time_ranks:
            raise ConfigError(f"--time-ranks {self.time_ranks} must divide the number of ranks ({num_ranks})")
        groups = num_ranks // time_ranks
        if groups > self.num_samples:
            raise ConfigError(f"{groups} sample groups but only {self.num_samples} samples: "
                              f"use fewer ranks or more --num-samples")
        if time_ranks > self.steps_per_block and not self.sampler_class.whole_trajectory:
            raise ConfigError(f"{time_ranks} time ranks but only {self.steps_per_block} slices per block: "
                              f"use at most {self.steps_per_block} time ranks or more --steps-per-block")

    def _validate_scaling(self):
        from .emulation import EmulatedLatency, LatencyError
        try:
            EmulatedLatency.parse(self.emulate_latency)
        except LatencyError as exc:
            raise ConfigError(str(exc)) from None
        if self.perf_profile and not os.path.isfile(self.perf_profile):
            raise ConfigError(f"--perf-profile file {self.perf_profile} does not exist")

    # -- operations: process grid, checkpoints (docs/operations.md) ----------------------
    def validate_operations(self):
        if self.time_ranks < 0 and self.time_ranks != TIME_RANKS_AUTO:
            raise ConfigError(f"--time-ranks must be non-negative (0: all ranks) or auto, got {self.time_ranks}")
        if self.checkpoint_every < 1:
            raise ConfigError(f"--checkpoint-every must be at least 1, got {self.checkpoint_every}")
        if self.checkpoint:
            if os.path.abspath(self.checkpoint) == os.path.abspath(self.output):
                raise ConfigError(f"--checkpoint and --output must be different files, both are {self.output}")
            _check_writable_directory(self.checkpoint, "checkpoint")

    @property
    def sampler_class(self):
        """The registered class of ``sampler`` (samplers/__init__.py)."""
        return SAMPLER_CLASSES[self.sampler]

    def unused_options(self, given) -> list:
        """The flags among ``given`` (field names set by the file or the command line)
        that are options of other samplers, not of this one. The run ignores them;
        the CLI warns (a TOML file shared by several samplers is normal)."""
        mine = {option.name for option in self.sampler_class.options}
        return [option.flag for name, (option, _) in sampler_options().items()
                if name in given and name not in mine]

    def resolved_time_ranks(self, num_ranks: int) -> int:
        """Ranks per sample group. Sample-parallel samplers have no time axis to split."""
        if not self.sampler_class.time_parallel:
            return 1
        return self.time_ranks if self.time_ranks > 0 else num_ranks

    def check_output_path(self):
        _check_writable_directory(self.output, "output")


def _check_writable_directory(path: str, what: str):
    """Fail before computing if ``path`` cannot be created: its directory must exist and
    accept a new file. os.access says yes to root everywhere (even on read-only
    mounts), so root probes with a real file; other users do not, which spares a
    shared file system one probe per rank."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ConfigError(f"{what} directory {directory} does not exist")
    writable = os.access(directory, os.W_OK | os.X_OK)
    if writable and os.geteuid() == 0:
        try:
            fd, probe = tempfile.mkstemp(prefix=".probe-", dir=directory)
            os.close(fd)
            os.unlink(probe)
        except OSError:
            writable = False
    if not writable:
        raise ConfigError(f"{what} directory {directory} is not writable")


def model_kind(name: str) -> str:
    """"analytic", "network" (built in), "diffusers" or "factory" (module:function)."""
    if name in MODELS:
        return "analytic"
    if name in NETWORK_MODELS:
        return "network"
    if name.startswith(DIFFUSERS_PREFIX):
        return "diffusers"
    return "factory"


def check_model_name(name: str):
    """ConfigError unless ``name`` is a built-in model, diffusers:PATH to an existing
    folder, or a module:factory spelling (imported only when the model is built)."""
    kind = model_kind(name)
    if kind == "diffusers":
        path = name[len(DIFFUSERS_PREFIX):]
        if not os.path.isdir(path):
            raise ConfigError(f"--model {name}: folder {path} does not exist")
        return
    if kind == "factory":
        module, sep, attr = name.partition(":")
        dotted = all(part.isidentifier() for part in module.split(".")) and \
            all(part.isidentifier() for part in attr.split("."))
        if not sep or not dotted:
            raise ConfigError(f"unknown model {name!r}; choose one of: "
                              f"{', '.join(MODELS + NETWORK_MODELS)}, diffusers:PATH or module:factory")


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _coerce(name: str, annotation, value):
    """Check a value from a file or the command line against the field's type."""
    kind = {"int": int, "float": float, "str": str}.get(str(annotation), None)
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is str and isinstance(value, str):
        return value
    raise ConfigError(f"configuration key {name!r} must be of type {annotation}, "
                      f"got {type(value).__name__} {value!r}")


def load_toml(path: str) -> dict:
    """Read a TOML file of RunConfig keys (dashes or underscores); one flat table."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    return {key.replace("-", "_"): value for key, value in data.items()}
