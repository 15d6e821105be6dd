"""The ODE path: sequential-ode, piadm-ode and its Langevin corrector."""
import numpy as np
import pytest

from hpc_picard.config import RunConfig
from hpc_picard.models import build_model
from hpc_picard.parallel import Communicator
from hpc_picard.runner import run
from hpc_picard.samplers import PicardSampler
from hpc_picard.samplers.corrector import CorrectorSlices, propagator

SMALL = dict(model="grf", dim=16, num_samples=4, blocks=3, steps_per_block=6, tol=0.0,
             T=4.0, delta=1e-2)


def sample(num_ranks=1, comm=None, **options):
    comm = comm or Communicator.self_comm()
    config = RunConfig(**{**SMALL, **options}).validate(comm.size)
    return run(config, comm)


def test_piadm_ode_without_corrector_reproduces_sequential_ode():
    reference = sample(sampler="sequential-ode")
    picard = sample(sampler="piadm-ode", corrector_steps=0, picard_iters=6)
    assert np.abs(picard.samples - reference.samples).max() < 1e-11
    assert picard.stats["rounds"] == reference.stats["rounds"] == 18


def test_corrector_slices_match_the_exact_two_by_two_flow():
    """Phi and Q against brute-force quadrature of e^{A u}; e^{A t} e^{-A t} = I."""
    gamma, h = 1.7, 0.3
    sl = CorrectorSlices.build(steps=1, duration=h, friction=gamma)
    u = np.linspace(0.0, h, 20001)
    flow = propagator(u, gamma)                                   # (U, 2, 2)
    phi = np.trapezoid(flow[:, :, 1], u, axis=0)
    col = flow[:, :, 1]
    q = 2 * gamma * np.trapezoid(col[:, :, None] * col[:, None, :], u, axis=0)
    back = propagator(h, gamma)
    np.testing.assert_allclose(back @ sl.drift[0], phi, rtol=1e-7)
    chol = back @ sl.noise[0]
    np.testing.assert_allclose(chol @ chol.T, q, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(propagator(0.8, gamma) @ propagator(-0.8, gamma), np.eye(2),
                               atol=1e-14)


def test_corrector_with_all_sweeps_equals_its_sequential_steps():
    """K_c = M_c Picard sweeps of the corrector == stepping Z' = e^{Ah} Z + Phi s + w."""
    from hpc_picard import noise
    config = RunConfig(**{**SMALL, "sampler": "piadm-ode", "corrector_steps": 5,
                          "picard_iters": 6}).validate(1)
    out = run(config, Communicator.self_comm()).samples
    # Replay the last block's corrector by hand from the predictor's block end.
    from hpc_picard.runner import build_grid
    from hpc_picard.samplers import SamplerContext, build_sampler
    model = build_model(config)
    ctx = SamplerContext(model=model, comm=Communicator.self_comm(),
                         samples=np.arange(config.num_samples), dtype=np.dtype("float64"),
                         seed=config.seed)
    sampler = build_sampler(config, ctx)
    grid = build_grid(config)
    y = noise.gaussian(config.seed, noise.STREAM_INITIAL, 0, 0, ctx.samples, model.dim)
    for block in grid.blocks[:-1]:
        y, _ = sampler.run_block(block, y)
    last = grid.blocks[-1]
    x, _ = PicardSampler.run_block(sampler, last, y)                  # predictor only
    sl = sampler.corrector.slices_at(float(last.times[-1]))
    step = propagator(sl.step, sl.friction)
    v = noise.gaussian(config.seed, noise.STREAM_VELOCITY, last.index, 0, ctx.samples, model.dim)
    for j in range(config.corrector_steps):
        s = model.score(x, np.full(len(x), last.times[-1]))
        zeta = noise.gaussian(config.seed, noise.STREAM_CORRECTOR, last.index, j, ctx.samples,
                              2 * model.dim).reshape(len(x), 2, model.dim)
        back = propagator((j + 1) * sl.step, sl.friction)        # undo e^{-A tau_{j+1}}
        drift = back @ sl.drift[j]
        chol = back @ sl.noise[j]
        w = np.einsum("ab,sbd->asd", chol, zeta)
        x, v = (step[0, 0] * x + step[0, 1] * v + drift[0] * s + w[0],
                step[1, 1] * v + drift[1] * s + w[1])
    np.testing.assert_allclose(out, x, rtol=1e-9, atol=1e-9)


def _spread_error(model, samples, t):
    """|E|x - e^{-t} mu_c(x)|^2 / (d v_t) - 1|: the relative error of the spread around
    each sample's most likely component (0 for exact samples, up to sampling noise)."""
    labels = model.posterior(samples, np.full(len(samples), t)).argmax(axis=1)
    rest = samples - np.exp(-t) * model.means[labels]
    return abs(float((rest**2).mean() / model._variance(t)) - 1.0)


def test_corrector_improves_gmm_accuracy_at_equal_predictor_settings():
    # A deliberately coarse predictor (9 ODE steps) leaves the components ~50% too wide;
    # the sampling error of the figure is ~2% (256 samples x 32 dimensions).
    options = dict(model="gmm", dim=32, num_samples=256, blocks=3, steps_per_block=3,
                   picard_iters=3, T=5.0, delta=1e-2, sampler="piadm-ode")
    plain = sample(corrector_steps=0, **options)
    corrected = sample(corrector_steps=4, **options)
    model = build_model(RunConfig(**{**SMALL, **options}))
    before = _spread_error(model, plain.samples, 1e-2)
    after = _spread_error(model, corrected.samples, 1e-2)
    assert before > 0.3
    assert after < 0.7 * before


@pytest.mark.mpi
@pytest.mark.timeout(120)
def test_piadm_ode_with_corrector_is_rank_count_invariant():
    from mpi4py import MPI
    world = Communicator(MPI.COMM_WORLD)
    options = dict(sampler="piadm-ode", corrector_steps=5, picard_iters=4, tol=0.0)
    parallel = sample(comm=world, **options).samples
    verdict = None
    if world.rank == 0:
        serial = sample(**options).samples
        verdict = float(np.abs(parallel - serial).max())
    verdict = world.bcast_obj(verdict)
    assert verdict < 1e-10
