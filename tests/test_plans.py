"""--accuracy: plans from the theory, checked on the GRF with the exact linear analysis."""
import math

import numpy as np
import pytest

from hpc_picard import linear_analysis as la
from hpc_picard.config import ConfigError, RunConfig
from hpc_picard.grid import TimeGrid
from hpc_picard.models import GaussianRandomField
from hpc_picard.plans import plan, resolve_plan


@pytest.mark.parametrize("dim", [64, 1024])
@pytest.mark.parametrize("accuracy", [0.3, 0.1])
@pytest.mark.parametrize("path", ["sde", "ode"])
def test_planned_picard_run_meets_the_kl_budget(dim, accuracy, path):
    delta = 1e-3
    chosen = plan(dim, accuracy, delta, path)
    lam, mult = la.grf_modes(GaussianRandomField(dim), bins=64)
    grid = TimeGrid.build(chosen["T"], delta, chosen["blocks"], chosen["steps_per_block"])
    var = la.picard_variance(grid, path, lam, chosen["picard_iters"])[-1]
    kl = la.kl_gaussian(var, la.target_variance(lam, delta), mult)
    assert kl <= accuracy**2
    # ... and the plan is not wasteful: half the slices per block miss the budget or
    # come close to it.
    coarse = TimeGrid.build(chosen["T"], delta, chosen["blocks"],
                            max(1, chosen["steps_per_block"] // 4))
    var = la.sequential_variance(coarse, path, lam)
    assert la.kl_gaussian(var, la.target_variance(lam, delta), mult) > 0.1 * accuracy**2


def test_plans_grow_logarithmically_in_blocks_and_sweeps():
    small = plan(2**8, 0.3, 1e-3, "sde")
    large = plan(2**16, 0.3, 1e-3, "sde")
    assert large["blocks"] <= small["blocks"] + 3
    assert large["picard_iters"] <= small["picard_iters"] + 3
    assert large["steps_per_block"] > 4 * small["steps_per_block"]
    assert large["T"] > small["T"]


def test_resolve_plan_fills_the_config_only_when_asked():
    config = RunConfig(dim=256, sampler="piadm-ode", accuracy=0.2)
    resolved = resolve_plan(config)
    expected = {**plan(256, 0.2, config.delta, "ode"), "corrector_steps": 0}
    assert {k: getattr(resolved, k) for k in expected} == expected
    assert resolve_plan(resolved) == resolved                     # idempotent
    untouched = RunConfig(dim=256)
    assert resolve_plan(untouched) is untouched


def test_negative_accuracy_is_rejected():
    with pytest.raises(ConfigError, match="--accuracy"):
        RunConfig(accuracy=-0.1).validate(1)


def test_cli_applies_the_plan_and_writes_it_into_the_output(tmp_path):
    import json
    import subprocess
    import sys

    import h5py
    out = tmp_path / "planned.h5"
    subprocess.run([sys.executable, "-m", "hpc_picard.cli", "--accuracy", "0.5", "--dim", "16",
                    "--num-samples", "2", "--sampler", "piadm-sde", "--output", str(out),
                    "--quiet"], check=True, timeout=120)
    with h5py.File(out) as fh:
        written = json.loads(fh.attrs["config"])
    chosen = plan(16, 0.5, written["delta"], "sde")
    assert {k: written[k] for k in chosen} == chosen
