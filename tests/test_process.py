import numpy as np

from hpc_picard import process


def test_step_coefficients_match_formulas():
    e = np.array([1e-9, 1e-4, 0.1, 1.3])
    a, c, b = process.step_coefficients(e, "sde")
    np.testing.assert_allclose(a, np.exp(e), rtol=1e-15)
    np.testing.assert_allclose(c, 2 * (np.exp(e) - 1), rtol=1e-6)   # naive loses digits at 1e-9
    np.testing.assert_allclose(b, np.sqrt(np.exp(2 * e) - 1), rtol=1e-6)
    # expm1 keeps full relative precision for tiny steps, where exp(e) - 1 does not
    assert abs(c[0] / (2 * e[0]) - 1) < 1e-8
    a2, c2, b2 = process.step_coefficients(e, "ode")
    np.testing.assert_allclose(c2, c / 2, rtol=1e-15)
    assert (b2 == 0).all()


def test_steps_on_standard_normal_target():
    """For p_t = N(0, I) the score is -x. The PF-ODE drift vanishes and its step is the
    identity exactly; the SDE step freezes the score, so one step's variance is
    (2 - e^e)^2 + e^{2e} - 1 = 1 + 2 e^2 + O(e^3): local error second order."""
    a, c, _ = process.step_coefficients(0.37, "ode")
    assert np.isclose(a - c, 1.0, rtol=1e-12)
    for e in [1e-2, 1e-3]:
        a, c, b = process.step_coefficients(e, "sde")
        var = (a - c) ** 2 + b**2
        assert abs((var - 1) / (2 * e**2) - 1) < 5 * e


def test_clock_conversions():
    t = np.array([1e-3, 0.5, 4.0])
    np.testing.assert_allclose(process.time_from_signal_level(process.signal_level(t)), t, rtol=1e-12)
    np.testing.assert_allclose(process.signal_level(t) + process.noise_variance(t), 1.0, rtol=1e-14)
    eps = np.array([[0.3, -1.2]])
    np.testing.assert_allclose(process.score_from_epsilon(eps, 0.5),
                               -eps / np.sqrt(1 - np.exp(-1.0)), rtol=1e-14)
