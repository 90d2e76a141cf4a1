"""One PPO update on a synthetic rollout: metrics, learning, determinism."""

import math

import numpy as np
import pytest
import torch
from gymnasium import spaces

from dynamicrl.core.algorithms.base import Experience
from dynamicrl.core.algorithms.ppo.actor import PPOActor
from dynamicrl.core.algorithms.ppo.algorithm import PPOAlgorithm
from dynamicrl.core.algorithms.ppo.config import PPOConfig

OBS = spaces.Box(-np.inf, np.inf, (4,), np.float32)
METRICS = {"policy_loss", "value_loss", "entropy", "approx_kl", "clip_frac", "explained_variance", "lr", "grad_norm"}


def synthetic_rollout(action_space, num_steps=16, num_envs=3, seed=0):
    """Act with a fresh actor on random observations, so logprobs/values are consistent with a policy."""
    rng = np.random.default_rng(seed)
    actor = PPOActor(PPOConfig(hidden_sizes=[16]), OBS, action_space, seed)
    obs = rng.normal(size=(num_steps, num_envs, 4)).astype(np.float32)
    acted = [actor.act(o) for o in obs]
    dones = rng.random((num_steps, num_envs)) < 0.1
    truncated = dones & (rng.random((num_steps, num_envs)) < 0.5)
    last_obs = rng.normal(size=(num_envs, 4)).astype(np.float32)
    return Experience(
        obs=obs,
        actions=np.stack([a for a, _, _ in acted]),
        logprobs=np.stack([lp for _, lp, _ in acted]),
        values=np.stack([v for _, _, v in acted]),
        rewards=rng.normal(size=(num_steps, num_envs)).astype(np.float32),
        dones=dones,
        trunc_values=np.where(truncated, rng.normal(size=(num_steps, num_envs)), 0).astype(np.float32),
        last_obs=last_obs,
        last_dones=dones[-1].copy(),
    )


def make_algo(action_space, **overrides):
    config = PPOConfig(**{"hidden_sizes": [16], "update_epochs": 3, "num_minibatches": 4, **overrides})
    return PPOAlgorithm(config, OBS, action_space, seed=5, num_iterations=10)


@pytest.mark.parametrize("action_space", [spaces.Discrete(3), spaces.Box(-1, 1, (2,), np.float32)])
def test_update_returns_finite_metrics_and_changes_weights(action_space):
    algo = make_algo(action_space)
    before = algo.get_weights()
    metrics = algo.update(synthetic_rollout(action_space), iteration=0)

    assert set(metrics) >= METRICS
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values()), metrics
    assert metrics["lr"] == pytest.approx(algo.config.lr)
    after = algo.get_weights()
    assert any(not np.array_equal(before[k], after[k]) for k in before)


def test_update_is_deterministic_given_seed():
    space = spaces.Box(-1, 1, (2,), np.float32)
    rollout = synthetic_rollout(space)
    a, b = make_algo(space), make_algo(space)
    for iteration in range(2):
        ma, mb = a.update(rollout, iteration), b.update(rollout, iteration)
    assert ma == mb
    wa, wb = a.get_weights(), b.get_weights()
    assert list(wa) == list(wb)
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k])


def test_lr_anneals_linearly_from_iteration_zero():
    space = spaces.Discrete(3)
    algo = make_algo(space, lr=1e-3)
    assert algo.update(synthetic_rollout(space), iteration=5)["lr"] == pytest.approx(0.5e-3)
    assert algo.learning_rate(0, 48) == pytest.approx(1e-3)
    assert algo.learning_rate(10, 48) == 0.0


def test_lr_anneals_by_anneal_env_steps_and_a_patch_can_stop_it():
    """A horizon past the run's end (Tianshou's 1M steps of a 3M schedule) stops part-way down;
    anneal_lr=false (a live patch) holds lr from the next minibatch on."""
    space = spaces.Discrete(3)
    algo = make_algo(space, lr=1e-3, anneal_env_steps=48 * 30)  # 48 env steps per update, 10 planned
    assert algo.learning_rate(10, 48) == pytest.approx(1e-3 * 2 / 3)
    assert algo.update(synthetic_rollout(space), iteration=15)["lr"] == pytest.approx(0.5e-3)
    algo.config = algo.config.model_copy(update={"anneal_lr": False, "lr": 2e-4})
    assert algo.update(synthetic_rollout(space), iteration=15)["lr"] == pytest.approx(2e-4)


def test_target_kl_stops_epochs_early():
    space = spaces.Discrete(3)
    algo = make_algo(space, lr=0.05, anneal_lr=False, target_kl=1e-9)
    metrics = algo.update(synthetic_rollout(space), iteration=0)
    assert metrics["epochs"] == 1.0


def test_too_many_minibatches_is_a_clear_error():
    space = spaces.Discrete(3)
    algo = make_algo(space)
    algo.config = algo.config.model_copy(update={"num_minibatches": 1000})
    with pytest.raises(ValueError, match="num_minibatches"):
        algo.update(synthetic_rollout(space), iteration=0)


def lagged_rollout(space, shift):
    """A rollout whose acting policy gave every action ``shift`` less log-probability than the
    network ``make_algo`` builds: as if collected by an older policy (overlap mode's lag)."""
    rollout = synthetic_rollout(space)
    net = make_algo(space).net
    with torch.no_grad():
        _, logprob, _, _ = net.get_action_and_value(
            torch.tensor(rollout.obs).flatten(0, 1), torch.tensor(rollout.actions).flatten(0, 1)
        )
    rollout.logprobs = (logprob.numpy() - shift).reshape(rollout.logprobs.shape).astype(np.float32)
    rollout.policy_lag = 1
    return rollout


def test_a_lagged_rollout_is_clipped_against_the_policy_at_the_update_start():
    space = spaces.Box(-1, 1, (2,), np.float32)
    one_step = {"update_epochs": 1, "num_minibatches": 1}
    plain = make_algo(space, decoupled=False, **one_step).update(lagged_rollout(space, 0.5), iteration=0)
    decoupled = make_algo(space, **one_step).update(lagged_rollout(space, 0.5), iteration=0)
    # plain PPO starts at ratio e^0.5 for every sample: all clipped, the lag ate the trust region
    assert plain["clip_frac"] == 1.0 and plain["lag_kl"] == 0.0
    # decoupled: ratio 1 against the update's start, the lag reported (and weighted) instead
    assert decoupled["clip_frac"] == 0.0
    assert decoupled["lag_kl"] == pytest.approx(math.exp(0.5) - 1 - 0.5, rel=1e-4)


def test_without_a_lag_the_decoupled_objective_is_plain_ppo_bitwise():
    space = spaces.Box(-1, 1, (2,), np.float32)
    rollout = synthetic_rollout(space)  # policy_lag 0 (sync mode)
    a, b = make_algo(space), make_algo(space, decoupled=False)
    assert a.update(rollout, 0) == b.update(rollout, 0)
    wa, wb = a.get_weights(), b.get_weights()
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k])


def _same_update(x: tuple[dict, dict], y: tuple[dict, dict]) -> bool:
    """Two (metrics, weights) results of an update are bitwise equal."""
    return x[0] == y[0] and all(np.array_equal(x[1][k], y[1][k]) for k in x[1])


def test_a_lagged_rollout_takes_its_values_from_the_learners_critic():
    """With a lag the acting critic is an update behind: its values must not shape the advantages."""
    space = spaces.Box(-1, 1, (2,), np.float32)
    runs = {}
    for decoupled in (True, False):
        for offset in (0.0, 5.0):
            rollout = lagged_rollout(space, 0.5)
            rollout.values = rollout.values + np.float32(offset)  # what a stale critic might have said
            algo = make_algo(space, decoupled=decoupled)
            runs[decoupled, offset] = (algo.update(rollout, 0), algo.get_weights())
    assert _same_update(runs[True, 0.0], runs[True, 5.0])
    assert not _same_update(runs[False, 0.0], runs[False, 5.0])


def test_recompute_adv_changes_nothing_in_the_first_epoch_and_then_uses_the_trained_critic():
    space = spaces.Box(-1, 1, (2,), np.float32)
    rollout = synthetic_rollout(space)
    results = {}
    for epochs in (1, 3):
        for recompute in (False, True):
            algo = make_algo(space, update_epochs=epochs, recompute_adv=recompute)
            results[epochs, recompute] = (algo.update(rollout, 0), algo.get_weights())
    assert _same_update(results[1, False], results[1, True])
    assert not _same_update(results[3, False], results[3, True])
    metrics_off, metrics_on = results[3, False][0], results[3, True][0]
    assert all(math.isfinite(v) for v in metrics_on.values())
    # explained variance is the acting critic's, before the update, either way
    assert metrics_on["explained_variance"] == metrics_off["explained_variance"]
