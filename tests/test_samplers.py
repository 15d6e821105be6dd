"""The samplers against their references, on one rank (a COMM_SELF communicator)."""
import numpy as np
import pytest

from hpc_picard.config import RunConfig
from hpc_picard.grid import TimeGrid
from hpc_picard.models import build_model
from hpc_picard.parallel import Communicator
from hpc_picard.runner import initial_state, run
from hpc_picard.samplers import PicardSampler, SamplerContext, SequentialSampler


def make(cls, model, **kw):
    ctx = SamplerContext(model=model, comm=Communicator.self_comm(), samples=np.arange(5),
                         dtype=np.dtype("float64"), seed=11)
    return cls(ctx, **kw)


@pytest.mark.parametrize("model_name,dim", [("grf", 16), ("gmm", 3)])
def test_picard_with_M_sweeps_equals_sequential(model_name, dim):
    cfg = RunConfig(model=model_name, dim=dim, gmm_components=3, gmm_radius=3.0, seed=11)
    model = build_model(cfg)
    grid = TimeGrid.build(10.0, 1e-3, 4, 9)
    y_seq = y_pic = initial_state(cfg, np.arange(5), dim)
    picard = make(PicardSampler, model, picard_iters=9, tol=0.0)
    seq = make(SequentialSampler, model)
    for block in grid.blocks:
        y_seq, _ = seq.run_block(block, y_seq)
        y_pic, stats = picard.run_block(block, y_pic)
        assert stats.sweeps == 9
        np.testing.assert_allclose(y_pic, y_seq, rtol=1e-10, atol=1e-12 * np.abs(y_seq).max())


def test_point_m_is_exact_after_m_sweeps_not_before():
    """After k sweeps the first k+1 points are exact: on the first m slices of a block,
    m sweeps reproduce the sequential end point and m - 1 sweeps do not."""
    cfg = RunConfig(model="gmm", dim=4, gmm_components=2, gmm_radius=3.0)
    model = build_model(cfg)
    block = TimeGrid.build(2.0, 0.5, 1, 6).blocks[0]
    y0 = initial_state(cfg, np.arange(5), 4)
    for m in range(1, 7):
        sub = type(block)(0, block.times[: m + 1])
        exact, _ = make(SequentialSampler, model).run_block(sub, y0)
        y, _ = make(PicardSampler, model, picard_iters=m, tol=0.0).run_block(sub, y0)
        np.testing.assert_allclose(y, exact, rtol=1e-11)
        if m > 1:
            y, _ = make(PicardSampler, model, picard_iters=m - 1, tol=0.0).run_block(sub, y0)
            assert np.abs(y - exact).max() > 1e-6


def test_tolerance_stops_early_and_tol_zero_runs_all_sweeps():
    cfg = RunConfig(model="grf", dim=64, num_samples=4, blocks=8, steps_per_block=16,
                    picard_iters=16, tol=0.0)
    full = run(cfg, Communicator.self_comm())
    assert (full.per_block["sweeps_per_block"] == 16).all()
    early = run(cfg.replace(tol=1e-3), Communicator.self_comm())
    sweeps = early.per_block["sweeps_per_block"]
    assert (sweeps < 16).all()
    assert early.stats["rounds"] == sweeps.sum()
    # Slices freeze once exact or converged (engine.py): fewer evaluations than
    # 16 slices x sweeps. tests/test_engine.py counts them against the model's calls.
    assert early.stats["evaluations"] < 16 * sweeps.sum()
    # a converged block agrees with the exact (K = M) trajectory to about the tolerance
    err = np.abs(early.samples - full.samples).max() / np.abs(full.samples).max()
    assert err < 1e-2


def test_piadm_converges_to_sequential_accuracy_on_grf():
    """At the default grid and tolerance, piadm-sde matches sequential-sde's accuracy
    with several times fewer rounds (the full-size check is drivers/acceptance.py)."""
    cfg = RunConfig(model="grf", dim=256, num_samples=64, seed=5)
    seq = run(cfg.replace(sampler="sequential-sde"), Communicator.self_comm())
    pic = run(cfg, Communicator.self_comm())
    assert seq.stats["rounds"] == cfg.blocks * cfg.steps_per_block
    assert pic.stats["rounds"] * 5 <= seq.stats["rounds"]
    model = build_model(cfg)
    a_seq = model.accuracy(seq.samples, cfg.delta, 0)
    a_pic = model.accuracy(pic.samples, cfg.delta, 0)
    assert abs(a_pic["kl_gaussian_fit"] - a_seq["kl_gaussian_fit"]) < 0.05 * a_seq["kl_gaussian_fit"]
    assert np.abs(pic.samples - seq.samples).max() < 0.05 * np.abs(seq.samples).max()


def test_float32_runs_in_float32():
    cfg = RunConfig(model="gmm", dim=4, num_samples=8, blocks=3, steps_per_block=8,
                    dtype="float32", gmm_radius=3.0)
    res32 = run(cfg, Communicator.self_comm())
    res64 = run(cfg.replace(dtype="float64"), Communicator.self_comm())
    assert res32.samples.dtype == np.float32
    np.testing.assert_allclose(res32.samples, res64.samples, rtol=1e-3, atol=1e-3)


class NaNAfter:
    """A model that returns NaN for forward times below t_bad."""
    dim = 3

    def __init__(self, t_bad):
        self.t_bad = t_bad

    def score(self, x, t):
        out = -x.copy()
        out[t < self.t_bad] = np.nan
        return out


def test_non_finite_score_names_block_and_slice():
    from hpc_picard.samplers import SamplingError
    grid = TimeGrid.build(4.0, 0.1, 2, 5)
    bad_block = grid.blocks[1]
    t_bad = bad_block.score_times[3] + 1e-12         # slice 3 of block 1 is the first bad one
    for cls, kw in [(PicardSampler, {"picard_iters": 5, "tol": 0.0}), (SequentialSampler, {})]:
        sampler = make(cls, NaNAfter(t_bad), **kw)
        y, _ = sampler.run_block(grid.blocks[0], np.zeros((5, 3)))
        with pytest.raises(SamplingError, match=r"block 1, slice 3 .* on time rank 0"):
            sampler.run_block(bad_block, y)
