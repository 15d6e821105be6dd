"""Plans from the theory: choose T, blocks, slices per block and sweeps from d and EPS.

``--accuracy EPS`` asks for KL(output || p_delta) <= EPS^2. PIADM's theorems fix the
form of every choice (docs/samplers.md, "Plans"); the constants are calibrated on the
analytic targets with the exact linear analysis (drivers/dimension_scaling.py,
tests/test_plans.py). With x = d / EPS^2:

    T      = max(2, log(25 x) / 4)          the initial law N(0, I) costs <= 1% of EPS^2
                                             (its KL is about d e^{-4T} / 4 per unit-size mode);
    U      = warp(T) - warp(delta)          the grid's length in its warped clock;
    blocks = ceil(U / BLOCK_LENGTH)         blocks of O(1) warped length: O(log(d / EPS^2));
    slices = ceil(SAFETY * C_path * U * x^BETA_path / blocks)
                                            the discretisation budget, spread over blocks;
    sweeps = min(slices, ceil(SWEEP_RATE * log x))
                                            Picard contraction per sweep is O(1): O(log x).

The theorems' worst-case step counts grow like d / EPS^2 (SDE) and sqrt(d) / EPS (ODE);
on the GRF the needed total slices grow more slowly: drivers/calibrate_plans.py fits
U x^0.53 (SDE) and U x^0.80 (ODE: its errors are not forgotten as they are under the
SDE's noise) over d = 2^6 .. 2^14 and EPS^2 = 0.1, 0.01. The SDE uses that fit; the
ODE's step counts follow a power law less closely, so its plan uses the steeper x^0.86,
which keeps every calibration point within budget (the fit itself overshoots by 30%).

The sampler's path (its class's ``path``: "sde" or "ode") picks the constants, and the
class may set its own options for the plan (``plan_options``: the ODE path's Langevin
corrector is turned off, its bias being outside the budget). A whole-trajectory sampler
uses the planned total slices (blocks x slices) as its grid and keeps its window.
delta is not planned: it sets the target p_delta and stays the user's.
"""
from __future__ import annotations

import math

from .grid import warp

#: warped-clock length of one block
BLOCK_LENGTH = 0.75
#: total slices = SAFETY * C * U * x^BETA (fitted on the GRF, KL budgets 0.01 .. 0.1;
#: SAFETY leaves part of the budget to the unfinished sweeps)
STEP_CONSTANT = {"sde": 0.184, "ode": 0.0095}
STEP_EXPONENT = {"sde": 0.533, "ode": 0.86}
SAFETY = 1.5
#: sweeps per block = ceil(SWEEP_RATE * log x)
SWEEP_RATE = 0.5


def plan(dim: int, accuracy: float, delta: float, path: str) -> dict:
    """T, blocks, steps_per_block and picard_iters for KL <= accuracy^2 on ``path``."""
    x = dim / accuracy**2
    T = max(2.0, 0.25 * math.log(25.0 * x))
    length = float(warp(T) - warp(delta))
    blocks = max(1, math.ceil(length / BLOCK_LENGTH))
    total = SAFETY * STEP_CONSTANT[path] * length * x ** STEP_EXPONENT[path]
    slices = max(1, math.ceil(total / blocks))
    sweeps = min(slices, max(1, math.ceil(SWEEP_RATE * math.log(x))))
    return {"T": T, "blocks": blocks, "steps_per_block": slices, "picard_iters": sweeps}


def resolve_plan(config):
    """The RunConfig with the planned fields filled in when --accuracy > 0, else itself.

    Pure: the same config in, the same config out, on every rank.
    """
    if not config.accuracy > 0:
        return config
    sampler = config.sampler_class
    chosen = plan(config.dim, config.accuracy, config.delta, sampler.path)
    chosen.update(sampler.plan_options(config))
    if not chosen["T"] > config.delta:
        chosen["T"] = config.delta + chosen["T"]
    return config.replace(**chosen)
