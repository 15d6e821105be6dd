"""The exact per-mode variances of linear_analysis against the samplers themselves."""
import numpy as np
import pytest

from hpc_picard import linear_analysis as la
from hpc_picard.config import ConfigError, RunConfig
from hpc_picard.models import GaussianRandomField
from hpc_picard.models.grf import hartley
from hpc_picard.parallel import Communicator
from hpc_picard.runner import build_grid, run
from hpc_picard.samplers import SAMPLERS, sampler_options
from hpc_picard.samplers.corrector import LangevinCorrector

SMALL = dict(model="grf", dim=16, num_samples=1024, blocks=3, steps_per_block=5, tol=0.0,
             T=3.0, delta=2e-2, grf_k0=1.5)


def sampled_mode_variance(config):
    """(distinct eigenvalues, sampled variance per distinct eigenvalue, sample count)."""
    samples = run(config.validate(1), Communicator.self_comm()).samples
    model = GaussianRandomField(config.dim, k0=config.grf_k0, alpha=config.grf_alpha)
    power = (hartley(samples, model.n) ** 2).mean(axis=0)
    lam, inverse, counts = np.unique(model.eigenvalues.ravel(), return_inverse=True,
                                     return_counts=True)
    return lam, np.bincount(inverse, weights=power) / counts, counts * len(samples)


@pytest.mark.parametrize("sampler, options", [
    ("sequential-sde", {}),
    ("sequential-ode", {}),
    ("piadm-sde", {"picard_iters": 2}),
    ("piadm-sde", {"picard_iters": 3, "initial_guess": "noise"}),
    ("piadm-ode", {"picard_iters": 2, "corrector_steps": 3}),
])
def test_exact_variances_match_sampled_ones(sampler, options):
    config = RunConfig(**{**SMALL, "sampler": sampler, **options})
    lam, sampled, count = sampled_mode_variance(config)
    grid = build_grid(config)
    path = sampler[-3:]
    if sampler.startswith("sequential"):
        exact = la.sequential_variance(grid, path, lam)
    else:
        corrector = (LangevinCorrector(config.corrector_steps, config.corrector_time,
                                       config.corrector_friction, config.corrector_steps, 0.0)
                     if path == "ode" and config.corrector_steps else None)
        exact = la.picard_variance(grid, path, lam, config.picard_iters,
                                   initial_guess=config.initial_guess,
                                   corrector=corrector)[-1]
    # The sampled variance of a mode averaged over c draws has relative error sqrt(2/c).
    z = (sampled / exact - 1.0) / np.sqrt(2.0 / count)
    assert np.abs(z).max() < 4.5
    # ... and the samplers are far enough from the target for this to be a real check.
    target = la.target_variance(lam, config.delta)
    if sampler == "piadm-sde":
        assert np.abs(exact / target - 1).max() > 0.2


PICARD_SAMPLERS = sorted(name for name, cls in SAMPLERS.items()
                         if any(option.name == "initial_guess" for option in cls.options))
GUESSES = next(option.choices for option, _ in sampler_options().values()
               if option.name == "initial_guess")


@pytest.mark.parametrize("guess", GUESSES)
@pytest.mark.parametrize("sampler", PICARD_SAMPLERS)
def test_analysis_and_sampler_agree_on_every_path_and_guess(sampler, guess):
    """Both accept a (path, initial guess) pair or both refuse it; accepted pairs give
    the same variances (the ODE has no noise-only trajectory: both refuse it)."""
    config = RunConfig(**{**SMALL, "sampler": sampler, "initial_guess": guess,
                          "picard_iters": 2, "corrector_steps": 0})
    path = SAMPLERS[sampler].path
    grid = build_grid(config)
    try:
        config.validate(1)
        accepted = True
    except ConfigError:
        accepted = False
    try:
        la.picard_block_coefficients(grid.blocks[0], path, np.ones(1), 2, guess)
        analysed = True
    except ValueError:
        analysed = False
    assert accepted == analysed == (path == "sde" or guess == "constant")
    if accepted:
        lam, sampled, count = sampled_mode_variance(config)
        exact = la.picard_variance(grid, path, lam, 2, initial_guess=guess)[-1]
        z = (sampled / exact - 1.0) / np.sqrt(2.0 / count)
        assert np.abs(z).max() < 4.5


def test_enough_sweeps_equal_the_sequential_variance():
    config = RunConfig(**SMALL)
    lam = np.geomspace(1e-3, 1.0, 7)
    grid = build_grid(config)
    for path in ("sde", "ode"):
        seq = la.sequential_variance(grid, path, lam)
        picard = la.picard_variance(grid, path, lam, config.steps_per_block)[-1]
        np.testing.assert_allclose(picard, seq, rtol=1e-11)


def test_binned_modes_give_the_exact_kl():
    model = GaussianRandomField(64 * 64, k0=4.0)
    grid = build_grid(RunConfig(**{**SMALL, "blocks": 4, "steps_per_block": 20}))
    kls = []
    for bins in (0, 256):
        lam, mult = la.grf_modes(model, bins)
        assert mult.sum() == model.dim
        var = la.sequential_variance(grid, "sde", lam)
        kls.append(la.kl_gaussian(var, la.target_variance(lam, grid.delta), mult))
    assert abs(kls[1] / kls[0] - 1) < 1e-4


def test_paradigms_analysis_zero_tolerance_is_sequential():
    config = RunConfig(**SMALL)
    lam = np.geomspace(1e-3, 1.0, 5)
    mult = np.ones_like(lam)
    grid = build_grid(config)
    var, rounds = la.paradigms_variance(grid, lam, mult, window=4, tol=0.0)
    np.testing.assert_allclose(var, la.sequential_variance(grid, "sde", lam), rtol=1e-10)
    assert rounds == grid.total_slices


def test_paradigms_analysis_matches_a_sampled_run():
    """Rounds close to the sampler's (expected vs. largest residual) and the variance
    within the sampling error of a one-sample-per-mode-class run of d = 1024."""
    config = RunConfig(**{**SMALL, "sampler": "paradigms", "dim": 1024, "num_samples": 64,
                          "window": 6, "tol": 0.1, "grf_k0": 4.0})
    result = run(config.validate(1), Communicator.self_comm())
    model = GaussianRandomField(config.dim, k0=config.grf_k0)
    lam, mult = la.grf_modes(model)
    var, rounds = la.paradigms_variance(build_grid(config), lam, mult, config.window, config.tol)
    assert abs(rounds - result.stats["rounds"]) <= 2
    sampled = la.kl_gaussian(var, la.target_variance(lam, config.delta), mult)
    assert sampled > 0
    power = (hartley(result.samples, model.n) ** 2).mean(axis=0)
    _, inverse = np.unique(model.eigenvalues.ravel(), return_inverse=True)
    ratio = (power / var[inverse]).mean()            # ~1 with error sqrt(2 / (d n))
    assert abs(ratio - 1) < 5 * np.sqrt(2.0 / (config.dim * config.num_samples))
