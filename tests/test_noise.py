import numpy as np

from hpc_picard import noise


def test_noise_is_a_function_of_its_indices():
    whole = noise.gaussian(7, noise.STREAM_INCREMENT, 2, 5, np.arange(10), 33)
    part = noise.gaussian(7, noise.STREAM_INCREMENT, 2, 5, np.arange(4, 10), 33)
    np.testing.assert_array_equal(whole[4:], part)
    reordered = noise.gaussian(7, noise.STREAM_INCREMENT, 2, 5, [9, 0], 33)
    np.testing.assert_array_equal(reordered, whole[[9, 0]])


def test_different_keys_differ_and_look_normal():
    base = noise.gaussian(7, 1, 2, 5, [0], 20000)[0]
    for other in [noise.gaussian(8, 1, 2, 5, [0], 20000)[0], noise.gaussian(7, 2, 2, 5, [0], 20000)[0],
                  noise.gaussian(7, 1, 3, 5, [0], 20000)[0], noise.gaussian(7, 1, 2, 6, [0], 20000)[0],
                  noise.gaussian(7, 1, 2, 5, [1], 20000)[0]]:
        assert abs(np.corrcoef(base, other)[0, 1]) < 0.05
    assert abs(base.mean()) < 0.05 and abs(base.std() - 1) < 0.05


def test_slices_stack():
    s = noise.gaussian_slices(1, 1, 0, [2, 3], [5, 6], 8)
    np.testing.assert_array_equal(s[1], noise.gaussian(1, 1, 0, 3, [5, 6], 8))
