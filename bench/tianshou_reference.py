"""Tianshou's MuJoCo PPO, rerun here on the v5 envs: the reference measured like-for-like.

Tianshou's published PPO figures (docs/results.md) were made on gym 0.17 / MuJoCo 2.0 v3 envs;
ours run on Gymnasium v5 / MuJoCo 3. This script trains Tianshou's own PPO with the defaults of
its `examples/mujoco/mujoco_ppo.py` (64x64 tanh, 8 envs x 2048-step collects, 10 repeats of
minibatch 64, lr 3e-4 decayed over 100 epochs x 30,000 steps, return scaling, no advantage
normalisation, advantages recomputed every repeat, no value clipping, vf 0.25, log-std -0.5,
orthogonal init with the last actor layer x0.01, observation normalisation) on the same machine
and env version, and tests it by Tianshou's protocol: 10 stochastic episodes after every epoch of
15 collects (30,720 env steps). `learning_curves.py` tests our runs on the same grid.

    pip install -e ".[bench]"     # brings tianshou==2.0.1
    python bench/tianshou_reference.py --config configs/env/mujoco_ant.yaml --seeds 1 2

The env (id and `env.kwargs`) is the DynamicRL config's, so both train on the same observations.

Writes <env>-seed<N>.csv (env_steps, test_return, test_return_std, train_window) and a JSON
summary per seed; `--report` prints the seeds' figures as docs/results.md counts them.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

EPOCH_STEPS = 30_000  # Tianshou's step_per_epoch; 15 collects of 2048 = 30,720 steps
COLLECT_STEPS = 2048
SCHEDULE_EPOCHS = 100  # the lr decays to 0 over 100 epochs (3M steps); we stop at 1M
TRAIN_ENVS, TEST_EPISODES = 8, 10
RETURN_WINDOW = 20  # the final window: mean of the last 20 training episodes, as ours
BUDGET = 1_000_000


class EpisodeReturns(gym.Wrapper):
    """Records each finished training episode's raw return (the vector env runs in-process)."""

    def __init__(self, env: gym.Env, sink: list[float]):
        super().__init__(env)
        self.sink, self.total = sink, 0.0

    def reset(self, **kwargs):
        self.total = 0.0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.total += float(reward)
        if terminated or truncated:
            self.sink.append(self.total)
        return obs, reward, terminated, truncated, info


def train(env_id: str, kwargs: dict, seed: int, out: Path) -> dict:
    import torch
    from tianshou.algorithm import PPO
    from tianshou.algorithm.modelfree.reinforce import ProbabilisticActorPolicy
    from tianshou.algorithm.optim import AdamOptimizerFactory, LRSchedulerFactoryLinear
    from tianshou.data import Collector, VectorReplayBuffer
    from tianshou.env import DummyVectorEnv, VectorEnvNormObs
    from tianshou.trainer import OnPolicyTrainerParams
    from tianshou.utils.net.common import ActorCritic, Net
    from tianshou.utils.net.continuous import ContinuousActorProbabilistic, ContinuousCritic
    from torch import nn
    from torch.distributions import Independent, Normal

    torch.set_num_threads(1)
    np.random.seed(seed)
    torch.manual_seed(seed)
    returns: list[float] = []
    train_envs = VectorEnvNormObs(
        DummyVectorEnv([lambda: EpisodeReturns(gym.make(env_id, **kwargs), returns) for _ in range(TRAIN_ENVS)])
    )
    test_envs = VectorEnvNormObs(
        DummyVectorEnv([lambda: gym.make(env_id, **kwargs) for _ in range(TEST_EPISODES)]), update_obs_rms=False
    )
    test_envs.set_obs_rms(train_envs.get_obs_rms())  # the same object: tests see the current stats
    train_envs.seed(seed)
    test_envs.seed(seed)
    space = train_envs.action_space[0]
    obs_dim, act_shape = train_envs.observation_space[0].shape, space.shape

    actor = ContinuousActorProbabilistic(
        preprocess_net=Net(state_shape=obs_dim, hidden_sizes=[64, 64], activation=nn.Tanh),
        action_shape=act_shape,
        unbounded=True,
    )
    critic = ContinuousCritic(preprocess_net=Net(state_shape=obs_dim, hidden_sizes=[64, 64], activation=nn.Tanh))
    torch.nn.init.constant_(actor.sigma_param, -0.5)
    for m in ActorCritic(actor, critic).modules():
        if isinstance(m, nn.Linear):
            torch.nn.init.orthogonal_(m.weight, gain=np.sqrt(2))
            torch.nn.init.zeros_(m.bias)
    for m in actor.mu.modules():
        if isinstance(m, nn.Linear):
            m.weight.data.mul_(0.01)

    optim = AdamOptimizerFactory(lr=3e-4).with_lr_scheduler_factory(
        LRSchedulerFactoryLinear(
            max_epochs=SCHEDULE_EPOCHS, epoch_num_steps=EPOCH_STEPS, collection_step_num_env_steps=COLLECT_STEPS
        )
    )
    policy = ProbabilisticActorPolicy(
        actor=actor,
        dist_fn=lambda loc_scale: Independent(Normal(*loc_scale), 1),
        action_space=space,
        action_scaling=True,
        action_bound_method="clip",
    )
    algorithm = PPO(
        policy=policy,
        critic=critic,
        optim=optim,
        gamma=0.99,
        gae_lambda=0.95,
        max_grad_norm=0.5,
        vf_coef=0.25,
        ent_coef=0.0,
        return_scaling=True,
        eps_clip=0.2,
        value_clip=False,
        dual_clip=None,
        advantage_normalization=False,
        recompute_advantage=True,
    )
    train_collector = Collector(algorithm, train_envs, VectorReplayBuffer(4096, TRAIN_ENVS), exploration_noise=True)
    test_collector = Collector(algorithm, test_envs)
    epochs = -(-BUDGET // (-(-EPOCH_STEPS // COLLECT_STEPS) * COLLECT_STEPS))  # 33: the first past 1M
    trainer = algorithm.create_trainer(
        OnPolicyTrainerParams(
            training_collector=train_collector,
            test_collector=test_collector,
            max_epochs=epochs,
            epoch_num_steps=EPOCH_STEPS,
            update_step_num_repetitions=10,
            test_step_num_episodes=TEST_EPISODES,
            batch_size=64,
            collection_step_num_env_steps=COLLECT_STEPS,
            test_in_training=False,
            show_progress=False,
            verbose=False,
        )
    )

    out.mkdir(parents=True, exist_ok=True)
    stem = f"{env_id.split('-')[0].lower()}-seed{seed}"
    rows, start = [], time.monotonic()
    trainer.reset()
    for _ in range(epochs):
        stats = trainer.execute_epoch()
        test = stats.test_collect_stat
        window = float(np.mean(returns[-RETURN_WINDOW:])) if returns else float("nan")
        rows.append(
            {
                "env_steps": stats.info_stat.train_step,
                "test_return": round(float(test.returns_stat.mean), 2),
                "test_return_std": round(float(test.returns_stat.std), 2),
                "train_window": round(window, 2),
            }
        )
        print(f"{stem} {rows[-1]} {time.monotonic() - start:.0f}s", flush=True)
    with (out / f"{stem}.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    within = [r for r in rows if r["env_steps"] <= BUDGET]
    best = max(within, key=lambda r: r["test_return"])
    summary = {
        "env_id": env_id,
        "env_kwargs": kwargs,
        "seed": seed,
        "tianshou": __import__("tianshou").__version__,
        "env_steps": rows[-1]["env_steps"],
        "final_window": within[-1]["train_window"],
        "best_test": best["test_return"],
        "best_test_at": best["env_steps"],
        "wall_s": round(time.monotonic() - start, 1),
    }
    (out / f"{stem}.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def summarize(out: Path, env_id: str) -> dict | None:
    """The seeds' figures, counted as docs/results.md counts ours over the test points up to 1M steps:
    the best test (the highest point of the seeds' mean test curve, with the seeds' std there), the mean
    test curve itself and the final window. None when ``out`` holds no run of ``env_id``."""
    stem = env_id.split("-")[0].lower()
    curves = {}
    for path in sorted(out.glob(f"{stem}-seed*.csv"), key=lambda p: int(p.stem.rsplit("seed", 1)[1])):
        with path.open() as f:
            curves[int(path.stem.rsplit("seed", 1)[1])] = [
                r for r in csv.DictReader(f) if int(r["env_steps"]) <= BUDGET
            ]
    if not curves:
        return None
    n = min(len(c) for c in curves.values())
    steps = [int(r["env_steps"]) for r in next(iter(curves.values()))[:n]]
    tests = np.array([[float(r["test_return"]) for r in c[:n]] for c in curves.values()])
    mean = tests.mean(axis=0)
    i = int(mean.argmax())
    finals = [float(c[n - 1]["train_window"]) for c in curves.values()]
    return {
        "seeds": list(curves),
        "best_test": float(mean[i]),
        "best_test_std": float(tests[:, i].std()),
        "best_test_at": steps[i],
        "curve": list(zip(steps, mean.tolist())),
        "final_window": float(np.mean(finals)),
        "final_windows": finals,
        "seed_best_tests": tests.max(axis=1).tolist(),
    }


def report(out: Path, env_id: str) -> None:
    figures = summarize(out, env_id)
    if figures is None:
        raise SystemExit(f"no {env_id} runs in {out}")
    print(f"{env_id}: {len(figures['seeds'])} seeds ({', '.join(map(str, figures['seeds']))})")
    print(
        f"  best test (max of the seeds' mean test curve): {figures['best_test']:.1f} "
        f"+- {figures['best_test_std']:.1f} at {figures['best_test_at']:,}"
    )
    print(
        f"  final window (last {RETURN_WINDOW} training episodes at the last test point <= 1M): "
        f"{figures['final_window']:.1f} ({', '.join(f'{x:.0f}' for x in figures['final_windows'])})"
    )
    print(f"  each seed's own best test: {', '.join(f'{x:.0f}' for x in figures['seed_best_tests'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--config",
        default="configs/env/mujoco_halfcheetah.yaml",
        help="a DynamicRL config: its env.id and env.kwargs are trained on",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[1], help="trained one after another")
    parser.add_argument("--out", type=Path, default=Path("bench/results/tianshou"), help="CSV/JSON directory")
    parser.add_argument("--report", action="store_true", help="only summarise the seeds already in --out")
    args = parser.parse_args()
    from dynamicrl.core.settings import load_config

    env = load_config(args.config).env
    if not args.report:
        for seed in args.seeds:
            print(json.dumps(train(env.id, env.kwargs, seed, args.out)), flush=True)
    report(args.out, env.id)


if __name__ == "__main__":
    main()
