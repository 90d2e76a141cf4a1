"""Is a rollout fit to train on? Every array an env-runner sends, checked before the learner uses it.

A rollout comes from another process, maybe a buggy custom env, maybe not one of ours at all. An
action outside a Discrete space crashes the update (an index out of bounds), moments of the wrong
shape fail to broadcast, and one NaN or inf poisons the weights for the rest of the run. The
learner knows what every field must be (its env's spaces and the rollout length and width of its
config), so it checks all of it first and refuses the rollout naming the first field at fault.

The expectations are the env-runner's collection format (``services/envrunner/app.py:collect``),
which is the same for every algorithm: float32 observations and estimates, bool ``dones``, int64
actions for a Discrete space and float32 for a Box.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from gymnasium import spaces

    from dynamicrl.protocol.messages import Rollout

#: the moments a rollout may carry (``core/normalization.py:pack``), by statistic
MOMENT_PREFIXES = ("obs", "ret")
MOMENT_NAMES = ("count", "mean", "var")


@dataclass(frozen=True)
class RolloutSpec:
    """What one env-runner's rollout must look like in this run."""

    num_steps: int
    num_envs: int
    observation_space: spaces.Space
    action_space: spaces.Space

    @property
    def obs_shape(self) -> tuple[int, ...]:
        shape = self.observation_space.shape
        assert shape is not None  # the learner refuses to start for a space without one
        return tuple(shape)


def rollout_problem(rollout: Rollout, spec: RolloutSpec) -> str:
    """The first reason ``rollout`` cannot be trained on, naming the field ('' if it can)."""
    for check in (_arrays, _actions, _episodes, _moments):
        found = check(rollout, spec)
        if found:
            return found
    return ""


def _arrays(rollout: Rollout, spec: RolloutSpec) -> str:
    t, n, obs = spec.num_steps, spec.num_envs, spec.obs_shape
    expected = {
        "obs": (np.float32, (t, n, *obs)),
        "logprobs": (np.float32, (t, n)),
        "values": (np.float32, (t, n)),
        "rewards": (np.float32, (t, n)),
        "dones": (np.bool_, (t, n)),
        "trunc_values": (np.float32, (t, n)),
        "last_obs": (np.float32, (n, *obs)),
        "last_dones": (np.bool_, (n,)),
    }
    for name, (dtype, shape) in expected.items():
        found = array_problem(name, getattr(rollout, name), dtype, shape)
        if found:
            return found
    return ""


def _actions(rollout: Rollout, spec: RolloutSpec) -> str:
    from gymnasium import spaces  # not at import: the learner imports this module before registering

    t, n, space, actions = spec.num_steps, spec.num_envs, spec.action_space, rollout.actions
    if isinstance(space, spaces.Discrete):
        found = array_problem("actions", actions, np.int64, (t, n))
        if found:
            return found
        outside = (actions < 0) | (actions >= space.n)  # PPO's Categorical indexes 0..n-1
        if outside.any():
            at = _index(outside)
            return f"actions{_text(at)} is {actions[at]}, outside 0..{int(space.n) - 1} ({space})"
        return ""
    shape = (t, n, *(space.shape or ()))
    if isinstance(space, spaces.Box):
        return array_problem("actions", actions, np.float32, shape)
    return "" if actions.shape == shape else f"actions has shape {actions.shape}, expected {shape}"


def _episodes(rollout: Rollout, spec: RolloutSpec) -> str:
    returns, lengths = rollout.episode_returns, rollout.episode_lengths
    if len(returns) != len(lengths):
        return f"episode_returns has {len(returns)} entries but episode_lengths {len(lengths)}"
    for i, value in enumerate(returns):
        if not np.isfinite(value):
            return f"episode_returns[{i}] is {value}"
    for i, length in enumerate(lengths):
        if length < 1:
            return f"episode_lengths[{i}] is {length}, expected at least 1"
    return ""


def _moments(rollout: Rollout, spec: RolloutSpec) -> str:
    shapes = {"obs": spec.obs_shape, "ret": ()}
    for key, value in rollout.moments.items():
        prefix, _, name = key.partition(".")
        if prefix not in MOMENT_PREFIXES or name not in MOMENT_NAMES:
            allowed = ", ".join(f"{p}.{m}" for p in MOMENT_PREFIXES for m in MOMENT_NAMES)
            return f"moments[{key!r}] is not one of {allowed}"
        shape = (1,) if name == "count" else shapes[prefix]
        found = array_problem(f"moments[{key!r}]", value, np.floating, shape)
        if found:
            return found
        if name != "mean" and (value < 0).any():
            at = _index(value < 0)
            return f"moments[{key!r}]{_text(at)} is {value[at]}, expected >= 0"
    return ""


def array_problem(name: str, array: np.ndarray, dtype: type, shape: tuple[int, ...]) -> str:
    """Why ``array`` is not a finite ``dtype`` array of ``shape`` ('' if it is)."""
    if not np.issubdtype(array.dtype, dtype):
        return f"{name} has dtype {array.dtype}, expected {np.dtype(dtype) if dtype is not np.floating else 'float'}"
    if array.shape != shape:
        return f"{name} has shape {array.shape}, expected {shape}"
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array)
        if bad.any():
            at = _index(bad)
            return f"{name}{_text(at)} is {array[at]}"
    return ""


def _index(mask: np.ndarray) -> tuple[int, ...]:
    """The first True position of ``mask``, as an index tuple (``rewards[3, 1]``)."""
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(mask)), mask.shape))


def _text(index: tuple[int, ...]) -> str:
    return "[" + ", ".join(map(str, index)) + "]"
