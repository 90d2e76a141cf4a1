"""The env-runner's side of observation and reward normalisation.

It normalises with the learner's statistics (frozen for a whole rollout, so
the policy's inputs are the ones the learner will train on) and records the
moments of the raw observations and discounted returns it saw, which go back
with the rollout for the learner to merge.
"""

from __future__ import annotations

import numpy as np

from dynamicrl.config import NormalizeConfig
from dynamicrl.services.learner.algorithms.normalization import RunningMeanStd, pack, unpack


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
