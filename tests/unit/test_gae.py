"""GAE against hand-unrolled recursions on tiny rollouts."""

import numpy as np
import pytest

from dynamicrl.core.algorithms.ppo.gae import compute_gae

PARAMS = [(0.99, 0.95), (0.9, 1.0), (0.5, 0.0), (1.0, 0.5)]


def col(*xs):
    """A [T, 1] float32 column: one env."""
    return np.array(xs, dtype=np.float32)[:, None]


@pytest.mark.parametrize("gamma,lam", PARAMS)
def test_no_dones_bootstraps_from_last_value(gamma, lam):
    r, v = col(1.0, 2.0, 3.0), col(0.5, 1.0, 1.5)
    last_v = np.array([2.0], np.float32)
    zeros, no = col(0, 0, 0), np.zeros((3, 1), bool)
    adv, ret = compute_gae(r, v, no, zeros, last_v, np.array([False]), gamma, lam)

    d2 = 3.0 + gamma * 2.0 - 1.5
    d1 = 2.0 + gamma * 1.5 - 1.0
    d0 = 1.0 + gamma * 1.0 - 0.5
    a2 = d2
    a1 = d1 + gamma * lam * a2
    a0 = d0 + gamma * lam * a1
    np.testing.assert_allclose(adv[:, 0], [a0, a1, a2], rtol=1e-6)
    np.testing.assert_allclose(ret, adv + v, rtol=1e-6)
    assert adv.dtype == ret.dtype == np.float32


@pytest.mark.parametrize("gamma,lam", PARAMS)
def test_termination_in_the_middle_cuts_bootstrap(gamma, lam):
    # The episode terminates at t=1; t=2 is the first step of a new episode.
    r, v = col(1.0, 1.0, 1.0), col(0.3, 0.6, 0.9)
    dones = np.array([[False], [True], [False]])
    last_v = np.array([4.0], np.float32)
    adv, _ = compute_gae(r, v, dones, col(0, 0, 0), last_v, np.array([False]), gamma, lam)

    a2 = 1.0 + gamma * 4.0 - 0.9
    a1 = 1.0 - 0.6  # no bootstrap, no advantage carried over from the next episode
    a0 = (1.0 + gamma * 0.6 - 0.3) + gamma * lam * a1
    np.testing.assert_allclose(adv[:, 0], [a0, a1, a2], rtol=1e-6)


@pytest.mark.parametrize("gamma,lam", PARAMS)
def test_truncation_bootstraps_through_trunc_values(gamma, lam):
    # Truncated at t=0: the tail is valued by trunc_values, not by values[1] (a new episode).
    r, v = col(1.0, 2.0), col(0.5, 7.0)
    dones = np.array([[True], [False]])
    trunc = col(3.0, 0.0)
    last_v = np.array([1.0], np.float32)
    adv, _ = compute_gae(r, v, dones, trunc, last_v, np.array([False]), gamma, lam)

    a1 = 2.0 + gamma * 1.0 - 7.0
    a0 = 1.0 + gamma * 3.0 - 0.5
    np.testing.assert_allclose(adv[:, 0], [a0, a1], rtol=1e-6)


@pytest.mark.parametrize("gamma,lam", PARAMS)
def test_last_dones_stop_the_final_bootstrap(gamma, lam):
    # Two envs: env 0 ended at the last step (flagged by dones and last_dones), env 1 only by last_dones.
    r = np.array([[1.0, 1.0], [2.0, 2.0]], np.float32)
    v = np.array([[0.5, 0.5], [1.0, 1.0]], np.float32)
    dones = np.array([[False, False], [True, False]])
    last_v = np.array([9.0, 9.0], np.float32)
    adv, _ = compute_gae(r, v, dones, np.zeros_like(r), last_v, np.array([True, True]), gamma, lam)

    a1 = 2.0 - 1.0
    a0 = (1.0 + gamma * 1.0 - 0.5) + gamma * lam * a1
    np.testing.assert_allclose(adv, [[a0, a0], [a1, a1]], rtol=1e-6)


def test_envs_are_independent():
    rng = np.random.default_rng(0)
    t, n = 5, 3
    r, v = rng.normal(size=(t, n)).astype(np.float32), rng.normal(size=(t, n)).astype(np.float32)
    dones = rng.random((t, n)) < 0.3
    trunc = np.where(dones, rng.normal(size=(t, n)), 0).astype(np.float32)
    last_v, last_d = rng.normal(size=n).astype(np.float32), dones[-1]
    adv, _ = compute_gae(r, v, dones, trunc, last_v, last_d, 0.99, 0.95)
    for i in range(n):
        adv_i, _ = compute_gae(
            r[:, i : i + 1],
            v[:, i : i + 1],
            dones[:, i : i + 1],
            trunc[:, i : i + 1],
            last_v[i : i + 1],
            last_d[i : i + 1],
            0.99,
            0.95,
        )
        np.testing.assert_allclose(adv[:, i], adv_i[:, 0], rtol=1e-6)
