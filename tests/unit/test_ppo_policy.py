"""ActorCritic distributions, Actor determinism, and learner -> actor weight transfer."""

import math

import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch.distributions import Categorical, Normal

from dynamicrl.core.algorithms.ppo.actor import PPOActor
from dynamicrl.core.algorithms.ppo.algorithm import PPOAlgorithm
from dynamicrl.core.algorithms.ppo.config import PPOConfig
from dynamicrl.core.algorithms.ppo.policy import ActorCritic

OBS = spaces.Box(-1.0, 1.0, (3,), np.float32)
BOX = spaces.Box(-1.0, 1.0, (2,), np.float32)
DISCRETE = spaces.Discrete(4)


def obs_batch(n=5, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 3)).astype(np.float32)


def test_gaussian_logprob_and_entropy_match_closed_form():
    net = ActorCritic(OBS, BOX, [8])
    with torch.no_grad():
        net.log_std.copy_(torch.tensor([-0.5, 0.3]))
    obs = torch.tensor(obs_batch())
    action, logprob, entropy, _ = net.get_action_and_value(obs, generator=torch.Generator().manual_seed(0))
    assert action.shape == (5, 2)

    mean, log_std = net.actor(obs).detach(), net.log_std.detach()
    std = log_std.exp()
    expected_lp = (-0.5 * ((action - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    expected_ent = (0.5 + 0.5 * math.log(2 * math.pi) + log_std).sum().expand(5)
    torch.testing.assert_close(logprob, expected_lp)
    torch.testing.assert_close(entropy, expected_ent)
    torch.testing.assert_close(logprob, Normal(mean, std).log_prob(action).sum(-1))


def test_gaussian_log_std_starts_at_zero():
    assert torch.equal(ActorCritic(OBS, BOX, [8]).log_std, torch.zeros(2))


def test_categorical_logprob_and_entropy_match_closed_form():
    net = ActorCritic(OBS, DISCRETE, [8])
    obs = torch.tensor(obs_batch())
    action, logprob, entropy, value = net.get_action_and_value(obs, generator=torch.Generator().manual_seed(0))
    assert action.shape == (5,) and action.dtype == torch.int64 and value.shape == (5,)

    log_p = torch.log_softmax(net.actor(obs).detach(), -1)
    torch.testing.assert_close(logprob, log_p.gather(1, action[:, None]).squeeze(1))
    torch.testing.assert_close(entropy, -(log_p.exp() * log_p).sum(-1))
    torch.testing.assert_close(logprob, Categorical(logits=log_p).log_prob(action))


def test_categorical_sampling_follows_the_probabilities():
    net = ActorCritic(OBS, DISCRETE, [8])
    with torch.no_grad():  # make the policy head output fixed logits
        net.actor[-1].weight.zero_()
        net.actor[-1].bias.copy_(torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4])))
    obs = torch.zeros(20000, 3)
    action, *_ = net.get_action_and_value(obs, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(action, minlength=4).float() / len(action)
    torch.testing.assert_close(freq, torch.tensor([0.1, 0.2, 0.3, 0.4]), atol=0.02, rtol=0)


@pytest.mark.parametrize("action_space", [DISCRETE, BOX])
def test_actor_is_deterministic_given_seed(action_space):
    config = PPOConfig(hidden_sizes=[8])
    obs = obs_batch()

    def rollout_actions(seed):
        actor = PPOActor(config, OBS, action_space, seed)
        torch.manual_seed(1234 + seed)  # the global RNG must not matter
        return [actor.act(obs)[0] for _ in range(3)]

    a, b, c = rollout_actions(7), rollout_actions(7), rollout_actions(8)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, z) for x, z in zip(a, c))
    assert a[0].dtype == (np.int64 if action_space is DISCRETE else np.float32)


@pytest.mark.parametrize("action_space", [DISCRETE, BOX])
def test_actor_with_learner_weights_matches_learner(action_space):
    config = PPOConfig(hidden_sizes=[16, 16])
    algo = PPOAlgorithm(config, OBS, action_space, seed=3, num_iterations=10)
    actor = PPOActor(config, OBS, action_space, seed=99)  # different init, overwritten below
    weights = algo.get_weights()
    for w in weights.values():
        w.flags.writeable = False  # as when decoded from a message buffer
        assert w.dtype == np.float32 and w.flags.c_contiguous
    actor.load_weights(weights)

    obs = obs_batch(7)
    actions, logprobs, values = actor.act(obs)
    with torch.no_grad():
        action_t = torch.tensor(actions)
        _, lp, _, v = algo.net.get_action_and_value(torch.tensor(obs), action_t)
    # numpy (actor) and torch (learner), both float32: equal to rounding
    np.testing.assert_allclose(values, v.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(actor.value(obs), values)
    np.testing.assert_allclose(logprobs, lp.numpy(), rtol=1e-5, atol=1e-5)
    assert logprobs.dtype == values.dtype == np.float32 and values.shape == (7,)


@pytest.mark.parametrize("action_space", [DISCRETE, BOX])
def test_actor_mode_is_the_learners_most_likely_action(action_space):
    algo = PPOAlgorithm(PPOConfig(hidden_sizes=[16]), OBS, action_space, seed=4, num_iterations=1)
    actor = PPOActor(algo.config, OBS, action_space, seed=0)
    actor.load_weights(algo.get_weights())
    obs = obs_batch(6)
    with torch.no_grad():
        out = algo.net.actor(torch.tensor(obs)).numpy()
    state = actor.rng_state()
    if action_space is DISCRETE:
        np.testing.assert_array_equal(actor.mode(obs), out.argmax(axis=1))
    else:
        np.testing.assert_allclose(actor.mode(obs), out, rtol=1e-5, atol=1e-7)
        assert actor.mode(obs).shape == (6, 2)
    np.testing.assert_array_equal(actor.rng_state(), state)  # acting by the mode draws no random numbers


def test_get_weights_returns_copies_in_stable_order():
    algo = PPOAlgorithm(PPOConfig(hidden_sizes=[8]), OBS, BOX, seed=0, num_iterations=1)
    w1 = algo.get_weights()
    with torch.no_grad():
        for p in algo.net.parameters():
            p.add_(1.0)
    w2 = algo.get_weights()
    assert list(w1) == list(w2)
    assert all(not np.array_equal(w1[k], w2[k]) for k in w1)


def test_numpy_actor_samples_the_learners_distributions():
    """Frequencies of the categorical and moments of the Gaussian, with weights from the learner."""
    algo = PPOAlgorithm(PPOConfig(hidden_sizes=[8]), OBS, DISCRETE, seed=0, num_iterations=1)
    with torch.no_grad():
        algo.net.actor[-1].weight.zero_()
        algo.net.actor[-1].bias.copy_(torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4])))
    actor = PPOActor(PPOConfig(hidden_sizes=[8]), OBS, DISCRETE, seed=0)
    actor.load_weights(algo.get_weights())
    actions, logprobs, _ = actor.act(np.zeros((40000, 3), np.float32))
    np.testing.assert_allclose(np.bincount(actions, minlength=4) / len(actions), [0.1, 0.2, 0.3, 0.4], atol=0.01)
    np.testing.assert_allclose(logprobs, np.log([0.1, 0.2, 0.3, 0.4])[actions], rtol=1e-5)

    config = PPOConfig(hidden_sizes=[8], init_log_std=-0.5)
    algo = PPOAlgorithm(config, OBS, BOX, seed=0, num_iterations=1)
    actor = PPOActor(config, OBS, BOX, seed=0)
    actor.load_weights(algo.get_weights())
    obs = np.zeros((40000, 3), np.float32)
    actions, _, _ = actor.act(obs)
    with torch.no_grad():
        mean = algo.net.actor(torch.tensor(obs[:1]))[0].numpy()
    np.testing.assert_allclose(actions.mean(0), mean, atol=0.02)
    np.testing.assert_allclose(actions.std(0), [math.exp(-0.5)] * 2, rtol=0.02)


def test_numpy_actor_generator_state_round_trips_and_a_foreign_one_is_refused():
    actor = PPOActor(PPOConfig(hidden_sizes=[8]), OBS, BOX, seed=5)
    state = actor.rng_state()
    assert state.dtype == np.uint8
    first = actor.act(obs_batch())[0]
    actor.load_rng_state(state)
    np.testing.assert_array_equal(actor.act(obs_batch())[0], first)
    with pytest.raises(ValueError, match=r"rng\.actor is not a PCG64 generator state"):
        actor.load_rng_state(np.arange(5056, dtype=np.uint8) % 7)  # e.g. a torch.Generator state


def test_ppo_actor_does_not_import_torch():
    """Env-runners act with it: torch would cost every one of them seconds of start-up and memory."""
    import subprocess
    import sys

    code = (
        "import sys; from dynamicrl.core.algorithms import get_algorithm, load_class; "
        "load_class(get_algorithm('ppo').actor); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
