"""Gymnasium vector environments as the env-runner steps them.

``SAME_STEP`` autoreset: when an episode ends, ``step`` already returns the
first observation of the next one and the final observation sits in
``infos["final_obs"]``, which is what bootstrapping a time limit needs.
"""

from __future__ import annotations

from functools import partial

import gymnasium as gym
import numpy as np

from dynamicrl.core.settings import EnvConfig


def make_env(config: EnvConfig) -> gym.Env:
    try:
        return gym.make(config.id, **config.kwargs)
    except gym.error.Error as exc:
        raise ValueError(f"env.id={config.id!r}: {exc}") from None


def make_vector_env(config: EnvConfig) -> gym.vector.SyncVectorEnv:
    return gym.vector.SyncVectorEnv(
        [partial(make_env, config) for _ in range(config.num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )


def space_shape(space: gym.Space) -> tuple[int, ...]:
    """``space.shape``; a TypeError for a space without one (Dict, Tuple, Graph...): no array to hold it."""
    if space.shape is None:
        raise TypeError(f"{space} has no shape: observations and actions must be arrays")
    return space.shape


def env_seed(base_seed: int, rank: int) -> int:
    """Distinct, reproducible seeds per env-runner (sub-env i gets seed + i)."""
    return base_seed + 1000 * (rank + 1)


def clip_to_space(actions: np.ndarray, space: gym.Space) -> np.ndarray:
    """What the env is given: a Gaussian policy's actions clipped to a Box's bounds, others as they are.

    The rollout keeps the unclipped actions: their log-probs are the ones the policy computed.
    """
    if isinstance(space, gym.spaces.Box):
        return np.clip(actions, space.low, space.high)
    return actions
