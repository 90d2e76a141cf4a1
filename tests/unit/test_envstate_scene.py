"""A pause preview draws the present scene from a copy: ``envstate.scene`` then ``show`` in another env.

Real rendering (MuJoCo offscreen through EGL or OSMesa, classic control through pygame), small
frames: the env that was stepped and the fresh env given its scene draw the same picture, and the
stepped env's state is untouched by the copy.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from dynamicrl.core import envstate
from dynamicrl.core.settings import EnvConfig
from dynamicrl.core.video import frame, make_render_env

ENVS: dict[str, dict[str, object]] = {"CartPole-v1": {}, "Hopper-v5": {}}


def stepped(env: gym.Env, steps: int) -> None:
    env.reset(seed=3)
    env.action_space.seed(3)
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            break


@pytest.mark.parametrize("env_id", sorted(ENVS))
def test_the_copy_draws_the_present_scene(env_id):
    config = EnvConfig(id=env_id)
    source, other = (make_render_env(config, (64, 48)) for _ in range(2))
    try:
        stepped(source, 7)
        other.reset(seed=99)  # another scene, until shown the source's
        before = frame(source)
        kind, state = envstate.scene(source)
        assert not np.array_equal(frame(other), before)
        envstate.show(other, kind, state)
        assert np.array_equal(frame(other), before)
        assert np.array_equal(envstate.scene(source)[1], state), "reading the scene changed the source"
        state[:] = 0.0
        assert not np.array_equal(envstate.scene(source)[1], state), "the scene is not a copy"
    finally:
        source.close()
        other.close()


def test_a_scene_of_another_env_is_refused():
    hopper, pendulum = make_render_env(EnvConfig(id="Hopper-v5"), (64, 48)), gym.make("InvertedPendulum-v5")
    try:
        hopper.reset(seed=0)
        pendulum.reset(seed=0)
        kind, state = envstate.scene(pendulum)
        with pytest.raises(ValueError, match="does not fit this model"):
            envstate.show(hopper, kind, state)
    finally:
        hopper.close()
        pendulum.close()


def test_an_env_without_a_known_state_says_so():
    env = gym.make("FrozenLake-v1")
    env.reset(seed=0)
    with pytest.raises(envstate.UnsupportedEnv, match="FrozenLake-v1: no known simulator state"):
        envstate.scene(env)
