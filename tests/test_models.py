import numpy as np
import pytest

from hpc_picard.models import GaussianMixture, GaussianRandomField
from hpc_picard.models.base import gaussian_fit_kl_floor
from hpc_picard.models.grf import hartley


def finite_difference_score(model, x, t, h=1e-5):
    grad = np.empty_like(x)
    for i in range(x.shape[1]):
        e = np.zeros(x.shape[1]); e[i] = h
        grad[:, i] = (model.log_density(x + e, t) - model.log_density(x - e, t)) / (2 * h)
    return grad


@pytest.mark.parametrize("model", [GaussianRandomField(16, k0=2.0, alpha=3.0),
                                   GaussianMixture(5, components=3, std=0.7, radius=2.0, seed=4)])
@pytest.mark.parametrize("t", [1e-3, 0.2, 3.0])
def test_score_is_gradient_of_log_density(model, t):
    x = np.random.default_rng(0).standard_normal((4, model.dim))
    s = model.score(x, np.full(4, t))
    np.testing.assert_allclose(s, finite_difference_score(model, x, t), rtol=1e-5, atol=1e-5)


def test_grf_score_handles_mixed_times_per_row():
    m = GaussianRandomField(64)
    x = np.random.default_rng(1).standard_normal((5, 64))
    t = np.array([0.1, 0.1, 2.0, 0.1, 0.5])
    joint = m.score(x, t)
    for i in range(5):
        np.testing.assert_allclose(joint[i], m.score(x[i:i + 1], t[i:i + 1])[0], rtol=1e-13)


def test_hartley_is_orthonormal_and_diagonalises_grf():
    m = GaussianRandomField(36)
    eye = np.eye(36)
    H = hartley(eye, 6)
    np.testing.assert_allclose(H @ H.T, eye, atol=1e-13)
    cov = H @ (-np.linalg.inv(m.score(eye, np.full(36, 0.3)))) @ H.T   # score = -C_t^{-1} x
    np.testing.assert_allclose(cov, np.diag(m.variances(0.3).ravel()), atol=1e-12)


def test_grf_exact_samples_and_accuracy():
    m = GaussianRandomField(256, k0=3.0)
    x = m.exact_samples(400, 1e-3, seed=2)
    acc = m.accuracy(x, 1e-3, seed=0)
    # exact samples sit at the statistical floor, wrong ones far above it
    assert acc["kl_gaussian_fit"] < 1.5 * acc["kl_noise_floor"]
    assert acc["spectrum_max_rel_error"] < 0.25
    bad = m.accuracy(1.2 * x, 1e-3, seed=0)
    assert bad["kl_gaussian_fit"] > 3 * acc["kl_noise_floor"]


def test_kl_floor_matches_monte_carlo():
    rng = np.random.default_rng(0)
    n = 50
    v = (rng.standard_normal((20000, n)) ** 2).mean(axis=1)
    mc = (0.5 * (v - 1 - np.log(v))).mean()
    assert abs(mc / gaussian_fit_kl_floor(n) - 1) < 0.03


def test_gmm_score_is_stable_in_float32_far_away():
    m = GaussianMixture(8, components=4, std=0.05, radius=6.0, seed=1)
    x = np.full((3, 8), 1e3)
    for t in [1e-3, 1.0]:
        s32 = m.score(x.astype(np.float32), np.full(3, t))
        s64 = m.score(x, np.full(3, t))
        assert s32.dtype == np.float32 and np.isfinite(s32).all()
        np.testing.assert_allclose(s32, s64, rtol=1e-5)


def test_gmm_means_and_exact_samples():
    m = GaussianMixture(10, components=6, std=0.5, radius=6.0, seed=9)
    np.testing.assert_allclose(np.linalg.norm(m.means, axis=1), 6.0)
    x = m.exact_samples(3000, 1e-3, seed=1)
    acc = m.accuracy(x, 1e-3, seed=5)
    assert acc["weight_error"] < 0.05
    assert acc["sliced_wasserstein"] < 2 * acc["sliced_wasserstein_floor"] + 0.02
    # dropping half of the components is caught by both figures
    keep = m.posterior(x, np.full(len(x), 1e-3)).argmax(axis=1) < 3
    y = np.concatenate([x[keep], x[keep]])[: len(x)]
    worse = m.accuracy(y, 1e-3, seed=5)
    assert worse["weight_error"] > 0.3
    assert worse["sliced_wasserstein"] > 3 * acc["sliced_wasserstein_floor"]
