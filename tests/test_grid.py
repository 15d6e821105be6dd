import numpy as np
import pytest

from hpc_picard.grid import TimeGrid, unwarp, warp


def test_warp_is_continuous_and_invertible():
    t = np.array([1e-4, 0.3, 1 - 1e-12, 1.0, 1 + 1e-12, 7.5])
    np.testing.assert_allclose(unwarp(warp(t)), t, rtol=1e-12)
    assert abs(warp(1 - 1e-9) - warp(1 + 1e-9)) < 1e-8


@pytest.mark.parametrize("blocks,slices", [(1, 5), (4, 3), (16, 64)])
def test_grid_covers_horizon(blocks, slices):
    g = TimeGrid.build(10.0, 1e-3, blocks, slices)
    times = g.all_times()
    assert times[0] == 10.0 and times[-1] == 1e-3
    assert (np.diff(times) < 0).all()
    assert g.num_blocks == blocks and g.total_slices == blocks * slices
    for prev, nxt in zip(g.blocks, g.blocks[1:]):
        assert prev.times[-1] == nxt.times[0]
    for b in g.blocks:
        assert b.tau[0] == 0 and np.allclose(np.diff(b.tau), b.steps)


def test_geometric_near_data_uniform_in_bulk():
    g = TimeGrid.build(10.0, 1e-3, 16, 8)
    t = g.all_times()
    small = t[t < 1]
    ratios = small[1:] / small[:-1]
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-9)    # uniform in log t
    big = t[t > 1]
    np.testing.assert_allclose(np.diff(big), np.diff(big)[0], rtol=1e-9)


def test_bad_grid_rejected():
    with pytest.raises(ValueError):
        TimeGrid.build(1.0, 2.0, 4, 4)
    with pytest.raises(ValueError):
        TimeGrid.build(10.0, 1e-3, 0, 4)
