"""A buggy custom env: CartPole whose rewards turn NaN once it has taken ``NAN_AT`` steps.

Imported through the ``plugins:`` config key, like a user's own env registered in their module. A
wrapper (not a subclass) keeps CartPole itself underneath, so checkpoints can capture its state.
"""

import os

import gymnasium as gym
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

#: steps of one sub-env (over every episode) before its first NaN reward; $NAN_REWARD_AT "fixes" the env
NAN_AT = int(os.environ.get("NAN_REWARD_AT", "100"))


class NanAfter(gym.Wrapper):
    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.steps = 0

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        return obs, float("nan") if self.steps >= NAN_AT else reward, terminated, truncated, info


def make(**kwargs) -> gym.Env:
    return NanAfter(CartPoleEnv(**kwargs))


gym.register("NanRewardCartPole-v0", entry_point=make, max_episode_steps=500)
