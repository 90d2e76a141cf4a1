"""In-process PPO on a gymnasium vector env: a sanity check and tuning loop with no bus.

Runs the same ``PPOActor`` / ``PPOAlgorithm`` / ``Experience`` path the services
use, so a hyperparameter set found here transfers. Prints one line per
iteration and stops once the mean return of the last 20 episodes reaches
``--target`` (or at ``--max-steps`` / ``--max-seconds``).

    python bench/ppo_inprocess.py --env CartPole-v1 --seed 1 --num-envs 8 \
        --set lr=1e-3 --set num_steps=64 --set update_epochs=10
"""

from __future__ import annotations

import argparse
import json
import time
from collections import deque

import gymnasium as gym
import numpy as np
import torch

from dynamicrl.core.algorithms.base import Experience
from dynamicrl.core.algorithms.ppo.actor import PPOActor
from dynamicrl.core.algorithms.ppo.algorithm import PPOAlgorithm
from dynamicrl.core.algorithms.ppo.config import PPOConfig
from dynamicrl.core.envs import space_shape


def collect(
    envs: gym.vector.VectorEnv,
    actor: PPOActor,
    obs: np.ndarray,
    num_steps: int,
    episode_returns: np.ndarray,
    finished: deque,
) -> tuple[Experience, np.ndarray]:
    """Step ``num_steps`` times; return the rollout and the observation to continue from."""
    n = envs.num_envs
    act_space = envs.single_action_space
    discrete = isinstance(act_space, gym.spaces.Discrete)
    r = Experience(
        obs=np.zeros((num_steps, *obs.shape), np.float32),
        actions=np.zeros((num_steps, n, *space_shape(act_space)), np.int64 if discrete else np.float32),
        logprobs=np.zeros((num_steps, n), np.float32),
        values=np.zeros((num_steps, n), np.float32),
        rewards=np.zeros((num_steps, n), np.float32),
        dones=np.zeros((num_steps, n), bool),
        trunc_values=np.zeros((num_steps, n), np.float32),
        last_obs=obs,
        last_dones=np.zeros(n, bool),
    )
    for t in range(num_steps):
        r.obs[t] = obs
        r.actions[t], r.logprobs[t], r.values[t] = actor.act(obs)
        if discrete:
            env_actions = r.actions[t]
        elif isinstance(act_space, gym.spaces.Box):
            env_actions = np.clip(r.actions[t], act_space.low, act_space.high)
        else:
            raise TypeError(f"{act_space}: only Discrete and Box action spaces have a rule here")
        obs, rewards, terminated, truncated, infos = envs.step(env_actions)
        r.rewards[t] = rewards
        r.dones[t] = terminated | truncated
        # Same-step autoreset: `obs` is already the next episode's; bootstrap time limits from the final obs.
        bootstrap = truncated & ~terminated
        if bootstrap.any():
            final_obs = np.stack(infos["final_obs"][bootstrap])
            r.trunc_values[t, bootstrap] = actor.value(final_obs)
        episode_returns += rewards
        for i in np.flatnonzero(r.dones[t]):
            finished.append(float(episode_returns[i]))
            episode_returns[i] = 0.0
    r.last_obs, r.last_dones = obs.astype(np.float32), r.dones[-1].copy()
    return r, obs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--max-steps", type=int, default=150_000)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--target", type=float, default=475.0, help="stop when the last-20 mean return reaches this")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="PPOConfig override, value parsed as JSON (e.g. lr=1e-3, target_kl=null)",
    )
    parser.add_argument("--quiet", action="store_true", help="print only the final line")
    args = parser.parse_args()

    torch.set_num_threads(1)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value)
    config = PPOConfig(**overrides)

    envs = gym.vector.SyncVectorEnv(
        [lambda: gym.make(args.env) for _ in range(args.num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    steps_per_iteration = config.num_steps * args.num_envs
    num_iterations = args.max_steps // steps_per_iteration
    algo = PPOAlgorithm(config, envs.single_observation_space, envs.single_action_space, args.seed, num_iterations)
    actor = PPOActor(config, envs.single_observation_space, envs.single_action_space, args.seed)
    actor.load_weights(algo.get_weights())

    obs, _ = envs.reset(seed=args.seed)
    episode_returns = np.zeros(args.num_envs)
    finished: deque[float] = deque(maxlen=20)
    start = time.perf_counter()
    mean_return, reached = float("nan"), False
    for iteration in range(num_iterations):
        rollout, obs = collect(envs, actor, obs, config.num_steps, episode_returns, finished)
        metrics = algo.update(rollout, iteration)
        actor.load_weights(algo.get_weights())
        env_steps, elapsed = (iteration + 1) * steps_per_iteration, time.perf_counter() - start
        mean_return = float(np.mean(finished)) if finished else float("nan")
        reached = len(finished) == finished.maxlen and mean_return >= args.target
        if not args.quiet:
            print(
                f"iter {iteration:4d}  env_steps {env_steps:7d}  return20 {mean_return:7.1f}  "
                f"time {elapsed:6.1f}s  kl {metrics['approx_kl']:.4f}  ev {metrics['explained_variance']:.2f}"
            )
        if reached or elapsed > args.max_seconds:
            break
    status = "reached" if reached else "NOT reached"
    print(
        f"RESULT seed={args.seed} {status} target={args.target} env_steps={env_steps} "
        f"seconds={elapsed:.1f} return20={mean_return:.1f}"
    )
    envs.close()


if __name__ == "__main__":
    main()
