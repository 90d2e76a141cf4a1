"""Play one episode with a policy's deterministic (or sampled) action, optionally filming it.

Shared by ``dynamicrl evaluate`` (a policy rebuilt from a checkpoint) and the previewer service
(a policy served by the learner): both act through the algorithm's own actor and normalise with the
learner's statistics, frozen (``peek`` never updates them), so a clip shows what evaluation measures.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from dynamicrl.core.settings import Config

if TYPE_CHECKING:
    import gymnasium as gym

    from dynamicrl.core.normalization import Normalizer
    from dynamicrl.core.video import Recorder

Act = Callable[[np.ndarray], np.ndarray]


def make_actor(config: Config, env: gym.Env, weights: dict[str, np.ndarray], seed: int) -> Any:
    """The algorithm's actor for ``env``'s spaces, loaded with ``weights``."""
    from dynamicrl.core.algorithms import get_algorithm, load_class

    actor = load_class(get_algorithm(config.algo.name).actor)(
        config.algo, env.observation_space, env.action_space, seed=seed
    )
    actor.load_weights(weights)
    return actor


def make_normalizer(config: Config, env: gym.Env, statistics: dict[str, np.ndarray]) -> Normalizer:
    """The env-runners' normaliser, loaded with the learner's statistics (``obs.*``, ``ret.*``)."""
    from dynamicrl.core.envs import space_shape
    from dynamicrl.core.normalization import Normalizer

    normalizer = Normalizer(
        config.normalize, space_shape(env.observation_space), 1, getattr(config.algo, "gamma", 0.99)
    )
    normalizer.load(statistics)
    return normalizer


def policy(actor: Any, deterministic: bool) -> Act:
    """The action for a batch of normalised observations: the most likely one, or a sample."""
    return actor.mode if deterministic else (lambda obs: actor.act(obs)[0])


def play_episode(
    env: gym.Env,
    act: Act,
    normalizer: Normalizer,
    seed: int,
    recorder: Recorder | None = None,
    episode: int = 0,
    each_step: Callable[[], None] | None = None,
    max_steps: int | None = None,
) -> tuple[float, int]:
    """(return, length) of one episode reset with ``seed``, ``max_steps`` long at most; ``recorder``
    films it as ``episode``.

    The first frame is captured before any step, so an env that cannot draw fails before it plays.
    ``each_step`` is called after every step (the previewer answers its controller there).
    """
    from dynamicrl.core.envs import clip_to_space

    obs, _ = env.reset(seed=seed)
    total, steps, done = 0.0, 0, False
    if recorder:
        recorder.capture(episode)
    while not done:
        action = act(normalizer.peek(obs[None]))[0]
        obs, reward, terminated, truncated, _ = env.step(clip_to_space(action, env.action_space))
        total, steps = total + float(reward), steps + 1
        done = terminated or truncated or steps == max_steps
        if recorder:
            recorder.capture(episode)
        if each_step:
            each_step()
    return total, steps
