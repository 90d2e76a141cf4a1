"""An env that cannot be recorded: CartPole's dynamics and spaces, no render mode at all.

Imported through the ``plugins:`` config key, like a user's own env registered in their module.
"""

import gymnasium as gym
from gymnasium.envs.classic_control.cartpole import CartPoleEnv


class NoRenderCartPole(CartPoleEnv):
    metadata = {"render_modes": [], "render_fps": 50}  # noqa: RUF012  (gymnasium's own form)


gym.register("NoRenderCartPole-v0", entry_point="no_render_env:NoRenderCartPole", max_episode_steps=500)
