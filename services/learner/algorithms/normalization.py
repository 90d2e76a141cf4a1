"""Running mean/variance of observations and returns, owned by the learner.

Env-runners normalise with the statistics shipped with the weights (frozen for
a rollout) and send back the moments of what they saw; the learner merges
every env-runner's moments in rank order (Chan et al.'s parallel update), so
all env-runners use one set of statistics and the result does not depend on
message arrival order. numpy only: both sides import it.
"""

from __future__ import annotations

import numpy as np

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
        return {"count": np.array([self.count]), "mean": np.array(self.mean, np.float64), "var": np.array(self.var, np.float64)}

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
    keys = {k: arrays.get(f"{prefix}.{k}") for k in ("count", "mean", "var")}
    return None if any(v is None for v in keys.values()) else keys
