"""A second algorithm, plugged in through the ``plugins:`` config key only.

It acts uniformly at random and its "update" counts rollouts, which is enough
to prove that a new algorithm runs through every service without editing one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from dynamicrl.core.algorithms import AlgorithmSpec, register_algorithm
from dynamicrl.core.algorithms.base import Actor, Algorithm, Experience


class RandomConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Literal["random"] = "random"
    num_steps: int = Field(16, ge=1)


class RandomActor(Actor):
    def __init__(self, config, observation_space, action_space, seed):
        self.space = action_space
        self.space.seed(seed)
        self.updates_seen = -1

    def load_weights(self, weights):
        self.updates_seen = int(weights["updates"][0])

    def act(self, obs):
        actions = np.array([self.space.sample() for _ in range(len(obs))])
        zeros = np.zeros(len(obs), np.float32)
        return actions, zeros, zeros

    def value(self, obs):
        return np.zeros(len(obs), np.float32)


class CountingLearner(Algorithm):
    def __init__(self, config, observation_space, action_space, seed, num_iterations):
        self.updates = 0

    def update(self, experience: Experience, iteration: int, safe_point: Callable[[int], None] | None = None):
        experience.validate()
        self.updates += 1
        return {
            "reward_mean": float(experience.rewards.mean()),
            "batch": float(experience.rewards.size),
            "updates": float(self.updates),
        }

    def get_weights(self):
        return {"updates": np.array([self.updates], np.float32)}


register_algorithm(
    AlgorithmSpec(
        name="random",
        config_cls=RandomConfig,
        learner=f"{__name__}:CountingLearner",
        actor=f"{__name__}:RandomActor",
    )
)
