"""What a sampler class declares about itself: its options and its cost.

A sampler class lists the :class:`Option` s it reads from the RunConfig in its
``options`` attribute. The registry (samplers/__init__.py) is the only list of
samplers; config.py turns every registered option into a RunConfig field (a TOML key),
cli.py into a command-line flag ``--<name with dashes>`` with its help and default, and
every value is range-checked by :meth:`Option.check`. What an option means for the run
as a whole (cross-option checks, dry-run bounds, memory) is the class's own
``validate``, ``bounds`` and ``memory_bytes`` (samplers/base.py).

This module imports nothing heavier than the standard library and ConfigError, so the
configuration can be built without numpy work or MPI.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError


@dataclass(frozen=True)
class Option:
    """One option of a sampler.

    name:     the RunConfig field and TOML key; the flag is ``--name-with-dashes``;
    type:     int, float or str;
    default:  its value when neither the file nor the command line gives one;
    help:     one sentence for ``--help`` (the samplers that use it are prefixed);
    choices:  the allowed values of a str option (empty: any);
    minimum:  the smallest allowed value of a number (None: no bound);
    positive: numbers must be > 0 (checked before ``minimum``).

    Two samplers that share an option declare the same Option object (the registry
    refuses two different declarations of one name).
    """
    name: str
    type: type
    default: object
    help: str
    choices: tuple = ()
    minimum: float | None = None
    positive: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value) -> None:
        """ConfigError (one line, naming the flag) unless ``value`` is allowed."""
        if self.choices and value not in self.choices:
            raise ConfigError(f"unknown {self.flag} {value!r}; choose one of: {', '.join(self.choices)}")
        if self.type not in (int, float):
            return
        if self.type is float and not math.isfinite(value):
            raise ConfigError(f"{self.flag} must be finite, got {value}")
        if self.positive and not value > 0:
            raise ConfigError(f"{self.flag} must be positive, got {value}")
        if self.minimum is not None and value < self.minimum:
            bound = "non-negative" if self.minimum == 0 else f"at least {self.minimum}"
            raise ConfigError(f"{self.flag} must be {bound}, got {value}")


@dataclass(frozen=True)
class Cost:
    """The rounds (critical-path steps) and score evaluations per sample of a run.

    rounds, evaluations:         the most the run can take;
    min_rounds, min_evaluations: the fewest (equal to the most when nothing stops early);
    detail:                      how the rounds arise, for ``--dry-run``
                                 (e.g. "12 per block").
    """
    rounds: int
    evaluations: int
    min_rounds: int
    min_evaluations: int
    detail: str

    @property
    def exact(self) -> bool:
        return self.rounds == self.min_rounds and self.evaluations == self.min_evaluations


# -- options that several samplers share ----------------------------------------------
PICARD_ITERS = Option("picard_iters", int, 12, "Most Picard sweeps K per block.", positive=True)
TOL = Option("tol", float, 0.05,
             "Residual tolerance: a block's sweeps stop, a window's states are accepted, once "
             "the residual <= tol (0: never early).", minimum=0)

BALANCE = Option("balance", str, "auto",
                 "Work stealing of score evaluations between time ranks within a round: auto "
                 "(paradigms on host arrays), on or off.", choices=("auto", "on", "off"))


def collect_options(samplers: dict) -> dict:
    """Every option of the registered samplers, by name, each with the names of the
    samplers that read it: {name: (Option, (sampler names))}, in registry order."""
    found = {}
    for sampler_name, cls in samplers.items():
        for option in cls.options:
            known, users = found.get(option.name, (option, ()))
            if known != option:
                raise TypeError(f"sampler {sampler_name} declares option {option.name} "
                                f"differently from {', '.join(users)}: share one Option")
            found[option.name] = (option, users + (sampler_name,))
    return found
