"""Running statistics: merging moments equals the statistics of the concatenated data."""

import numpy as np
import pytest

from dynamicrl.core.normalization import RunningMeanStd, pack, unpack


@pytest.mark.parametrize("shape", [(), (3,), (2, 4)])
def test_merge_of_batches_equals_concatenation(shape):
    rng = np.random.default_rng(0)
    a = rng.normal(2.0, 3.0, size=(17, *shape))
    b = rng.normal(-1.0, 0.5, size=(40, *shape))
    merged = RunningMeanStd(shape)
    merged.update(a)
    other = RunningMeanStd(shape)
    other.update(b)
    merged.merge(other.count, other.mean, other.var)
    both = np.concatenate([a, b])
    assert merged.count == len(both)
    np.testing.assert_allclose(merged.mean, both.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(merged.var, both.var(axis=0), rtol=1e-12)


def test_pack_unpack_round_trip_and_normalize():
    stats = RunningMeanStd((2,))
    stats.update(np.array([[0.0, 10.0], [2.0, 30.0]]))
    restored = RunningMeanStd((2,))
    restored.load(unpack("obs", pack("obs", stats)))
    np.testing.assert_array_equal(restored.mean, stats.mean)
    out = restored.normalize(np.array([[1.0, 20.0], [100.0, -100.0]]), clip=5.0)
    np.testing.assert_allclose(out[0], [0.0, 0.0], atol=1e-6)
    assert out.dtype == np.float32 and out[1, 0] == 5.0 and out[1, 1] == -5.0
    assert unpack("ret", pack("obs", stats)) is None


def test_scalar_moments_are_arrays():
    stats = RunningMeanStd(())
    stats.update(np.array([1.0, 2.0, 3.0]))
    assert all(isinstance(v, np.ndarray) for v in stats.moments().values())


def test_the_envrunner_discounts_returns_with_the_learners_gamma():
    """A live ppo.gamma patch changes the learner's config; the weights carry it to the env-runners."""
    from dynamicrl.core.normalization import Normalizer
    from dynamicrl.core.settings import NormalizeConfig

    norm = Normalizer(NormalizeConfig(obs=False, reward=True), (3,), num_envs=1, gamma=0.99)
    norm.load({"ret.gamma": np.array([0.5])})
    for _ in range(3):
        norm.reward(np.array([1.0]), np.array([False]))
    np.testing.assert_allclose(norm.returns, [1 + 0.5 + 0.25])
    norm.load({})  # statistics without a gamma (a third-party learner): keep the last one
    assert norm.gamma == 0.5
