"""Running mean/variance of observations and returns, owned by the learner.

Env-runners normalise with the statistics shipped with the weights (frozen for
a rollout) and send back the moments of what they saw; the learner merges
every env-runner's moments in rank order (Chan et al.'s parallel update), so
all env-runners use one set of statistics and the result does not depend on
message arrival order. The env-runner's side is ``Normalizer``: it normalises
with the learner's statistics, frozen for a whole rollout (so the policy's
inputs are the ones the learner will train on), and records the moments of the
raw observations and discounted returns it saw, which go back with the rollout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from dynamicrl.core.settings import NormalizeConfig

EPS = 1e-8


class RunningMeanStd:
    def __init__(self, shape: tuple[int, ...] = ()) -> None:
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        self.count = 0.0

    def update(self, batch: np.ndarray) -> None:
        """Add a batch of samples ``[n, *shape]``."""
        batch = np.asarray(batch, np.float64).reshape(-1, *self.mean.shape)
        self.merge(batch.shape[0], batch.mean(axis=0), batch.var(axis=0))

    def merge(self, count: float, mean: np.ndarray, var: np.ndarray) -> None:
        """Fold in another set of moments: equals the moments of the concatenated samples."""
        if count <= 0:
            return
        total = self.count + count
        delta = mean - self.mean
        m2 = self.var * self.count + var * count + delta**2 * self.count * count / total
        self.mean = self.mean + delta * count / total
        self.var = m2 / total
        self.count = total

    def moments(self) -> dict[str, np.ndarray]:
        return {
            "count": np.array([self.count]),
            "mean": np.array(self.mean, np.float64),
            "var": np.array(self.var, np.float64),
        }

    def load(self, moments: dict[str, np.ndarray]) -> None:
        self.count = float(moments["count"][0])
        self.mean = np.array(moments["mean"], np.float64).reshape(self.mean.shape)
        self.var = np.array(moments["var"], np.float64).reshape(self.var.shape)

    def normalize(self, x: np.ndarray, clip: float) -> np.ndarray:
        return np.clip((x - self.mean) / np.sqrt(self.var + EPS), -clip, clip).astype(np.float32)

    def scale(self, x: np.ndarray, clip: float) -> np.ndarray:
        """Divide by the std only (rewards: keep their sign and zero)."""
        return np.clip(x / np.sqrt(self.var + EPS), -clip, clip).astype(np.float32)


def pack(prefix: str, stats: RunningMeanStd) -> dict[str, np.ndarray]:
    return {f"{prefix}.{k}": v for k, v in stats.moments().items()}


def unpack(prefix: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    names = ("count", "mean", "var")
    keys = {k: v for k in names if (v := arrays.get(f"{prefix}.{k}")) is not None}
    return None if len(keys) < len(names) else keys


class Normalizer:
    def __init__(self, config: NormalizeConfig, obs_shape: tuple[int, ...], num_envs: int, gamma: float) -> None:
        self.config, self.gamma = config, gamma
        self.obs, self.ret = RunningMeanStd(obs_shape), RunningMeanStd(())
        self.seen_obs, self.seen_ret = RunningMeanStd(obs_shape), RunningMeanStd(())
        self.returns = np.zeros(num_envs, np.float64)

    def load(self, statistics: dict[str, np.ndarray]) -> None:
        if "ret.gamma" in statistics:  # the learner's discount: a live ppo.gamma patch reaches us here
            self.gamma = float(statistics["ret.gamma"][0])
        for prefix, stats in (("obs", self.obs), ("ret", self.ret)):
            moments = unpack(prefix, statistics)
            if moments is not None:
                stats.load(moments)

    def observe(self, raw: np.ndarray) -> np.ndarray:
        """The policy's input for observations it acts on (counted in the statistics)."""
        if not self.config.obs:
            return raw.astype(np.float32, copy=False)
        self.seen_obs.update(raw)
        return self.obs.normalize(raw, self.config.clip_obs)

    def peek(self, raw: np.ndarray) -> np.ndarray:
        """The policy's input for observations it only evaluates (final / last observations)."""
        if not self.config.obs:
            return raw.astype(np.float32, copy=False)
        return self.obs.normalize(raw, self.config.clip_obs)

    def reward(self, raw: np.ndarray, dones: np.ndarray) -> np.ndarray:
        if not self.config.reward:
            return raw.astype(np.float32, copy=False)
        self.returns = self.returns * self.gamma + raw
        self.seen_ret.update(self.returns)
        scaled = self.ret.scale(raw, self.config.clip_reward)
        self.returns[dones] = 0.0
        return scaled

    def take_moments(self) -> dict[str, np.ndarray]:
        """What this rollout saw, for the learner; starts a fresh tally."""
        moments = {}
        if self.config.obs:
            moments.update(pack("obs", self.seen_obs))
        if self.config.reward:
            moments.update(pack("ret", self.seen_ret))
        self.seen_obs = RunningMeanStd(self.seen_obs.mean.shape)
        self.seen_ret = RunningMeanStd(())
        return moments
