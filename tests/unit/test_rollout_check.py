"""core/rollout_check.py: each check refuses what would crash or poison an update, naming the field."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from gymnasium import spaces

from dynamicrl.core.rollout_check import RolloutSpec, rollout_problem
from dynamicrl.protocol.messages import Rollout

T, N = 5, 3
CARTPOLE = RolloutSpec(T, N, spaces.Box(-np.inf, np.inf, (4,), np.float32), spaces.Discrete(2))
BOX_ACTIONS = RolloutSpec(T, N, spaces.Box(-np.inf, np.inf, (4,), np.float32), spaces.Box(-1, 1, (2,), np.float32))


def rollout(spec: RolloutSpec = CARTPOLE, **changes) -> Rollout:
    """A valid rollout for ``spec`` (as the env-runner collects it), with ``changes``."""
    rng = np.random.default_rng(0)
    discrete = isinstance(spec.action_space, spaces.Discrete)
    fields: dict[str, Any] = dict(
        rank=0,
        version=0,
        obs=rng.standard_normal((T, N, 4)).astype(np.float32),
        actions=rng.integers(0, 2, (T, N)) if discrete else rng.standard_normal((T, N, 2)).astype(np.float32),
        logprobs=np.full((T, N), -0.7, np.float32),
        values=np.zeros((T, N), np.float32),
        rewards=np.ones((T, N), np.float32),
        dones=np.zeros((T, N), bool),
        trunc_values=np.zeros((T, N), np.float32),
        last_obs=np.zeros((N, 4), np.float32),
        last_dones=np.zeros(N, bool),
        episode_returns=[12.0],
        episode_lengths=[12],
        collect_s=0.1,
        moments={
            "obs.count": np.array([15.0]),
            "obs.mean": np.zeros(4),
            "obs.var": np.ones(4),
            "ret.count": np.array([15.0]),
            "ret.mean": np.zeros(()),
            "ret.var": np.ones(()),
        },
    )
    fields.update(changes)
    return Rollout(**fields)


def with_value(name: str, index: tuple[int, ...], value: float) -> np.ndarray:
    array = getattr(rollout(), name).copy()
    array[index] = value
    return array


def test_a_rollout_as_the_envrunner_collects_it_passes():
    assert rollout_problem(rollout(), CARTPOLE) == ""
    assert rollout_problem(rollout(BOX_ACTIONS), BOX_ACTIONS) == ""
    assert rollout_problem(rollout(moments={}), CARTPOLE) == ""  # normalisation off


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"obs": np.zeros((T, N, 3), np.float32)}, "obs has shape (5, 3, 3), expected (5, 3, 4)"),
        ({"obs": np.zeros((T, N, 4), np.float64)}, "obs has dtype float64, expected float32"),
        ({"rewards": np.ones((T, N + 1), np.float32)}, "rewards has shape (5, 4), expected (5, 3)"),
        ({"dones": np.zeros((T, N), np.int64)}, "dones has dtype int64, expected bool"),
        ({"last_obs": np.zeros((N, 4, 1), np.float32)}, "last_obs has shape (3, 4, 1), expected (3, 4)"),
        ({"last_dones": np.zeros(N + 1, bool)}, "last_dones has shape (4,), expected (3,)"),
        ({"values": np.zeros((T - 1, N), np.float32)}, "values has shape (4, 3), expected (5, 3)"),
    ],
)
def test_dtype_and_shape_of_every_array(changes, expected):
    assert rollout_problem(rollout(**changes), CARTPOLE) == expected


@pytest.mark.parametrize("name", ["obs", "logprobs", "values", "rewards", "trunc_values", "last_obs"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused_where_they_are(name, value):
    index = (1, 2) if name not in ("obs", "last_obs") else ((1, 2, 3) if name == "obs" else (2, 3))
    found = rollout_problem(rollout(**{name: with_value(name, index, value)}), CARTPOLE)
    assert found == f"{name}[{', '.join(map(str, index))}] is {np.float32(value)}"


def test_the_first_bad_value_is_named():
    rewards = with_value("rewards", (3, 1), np.nan)
    rewards[4, 0] = np.inf
    assert rollout_problem(rollout(rewards=rewards), CARTPOLE) == "rewards[3, 1] is nan"


@pytest.mark.parametrize(("action", "shown"), [(7, "7"), (2, "2"), (-1, "-1")])
def test_discrete_actions_outside_the_space(action, shown):
    actions = rollout().actions.copy()
    actions[0, 2] = action
    expected = f"actions[0, 2] is {shown}, outside 0..1 (Discrete(2))"
    assert rollout_problem(rollout(actions=actions), CARTPOLE) == expected


def test_action_dtypes_follow_the_space():
    floats = rollout().actions.astype(np.float32)
    assert rollout_problem(rollout(actions=floats), CARTPOLE) == "actions has dtype float32, expected int64"
    box = rollout(BOX_ACTIONS).actions
    assert rollout_problem(rollout(BOX_ACTIONS, actions=box[..., :1]), BOX_ACTIONS).startswith("actions has shape")
    box = box.copy()
    box[2, 0, 1] = np.nan
    assert rollout_problem(rollout(BOX_ACTIONS, actions=box), BOX_ACTIONS) == "actions[2, 0, 1] is nan"


def test_episode_statistics():
    assert rollout_problem(rollout(episode_lengths=[]), CARTPOLE) == (
        "episode_returns has 1 entries but episode_lengths 0"
    )
    assert rollout_problem(rollout(episode_returns=[float("nan")]), CARTPOLE) == "episode_returns[0] is nan"
    assert rollout_problem(rollout(episode_lengths=[0]), CARTPOLE) == "episode_lengths[0] is 0, expected at least 1"


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("obs.mean", np.zeros(3), "moments['obs.mean'] has shape (3,), expected (4,)"),
        ("ret.var", np.ones(2), "moments['ret.var'] has shape (2,), expected ()"),
        ("obs.count", np.array(15.0), "moments['obs.count'] has shape (), expected (1,)"),
        ("obs.var", np.array([1.0, 1.0, -1.0, 1.0]), "moments['obs.var'][2] is -1.0, expected >= 0"),
        ("ret.count", np.array([np.nan]), "moments['ret.count'][0] is nan"),
        ("obs.mean", np.zeros(4, np.int64), "moments['obs.mean'] has dtype int64, expected float"),
    ],
)
def test_normalisation_moments(key, value, expected):
    moments = {**rollout().moments, key: value}
    assert rollout_problem(rollout(moments=moments), CARTPOLE) == expected


def test_unknown_moments_are_refused():
    found = rollout_problem(rollout(moments={"obs.skew": np.zeros(4)}), CARTPOLE)
    assert found.startswith("moments['obs.skew'] is not one of obs.count, obs.mean")
