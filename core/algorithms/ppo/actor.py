"""PPO's env-runner side in numpy: the forward pass of ``policy.ActorCritic``, nothing else.

Why numpy and not torch: an env-runner acts on a handful of observations per step, where
torch's per-call overhead dominates (Ant-v5, 8 envs: about 210 us per step through torch,
40 us here), and an env-runner that never imports torch starts faster and smaller. The
learner recomputes log-probs and values with torch in float32; both sides compute in float32,
so they agree to rounding (tested).

Sampling uses the actor's own PCG64 generator seeded from ``seed``, never a global RNG.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable

import numpy as np
from gymnasium import spaces

from dynamicrl.core.envs import space_shape

from ..base import Actor
from .config import PPOConfig

_HALF_LOG_2PI = np.float32(0.5 * math.log(2 * math.pi))
_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0, out=x),
}

Layers = list[tuple[np.ndarray, np.ndarray]]  # (weight transposed to [in, out], bias [out]) per layer


class PPOActor(Actor):
    """Acts in an env-runner: numpy in, numpy out, weights from ``PPOAlgorithm.get_weights``."""

    def __init__(
        self, config: PPOConfig, observation_space: spaces.Space, action_space: spaces.Space, seed: int
    ) -> None:
        self.activation = _ACTIVATIONS[config.activation]
        self.discrete = isinstance(action_space, spaces.Discrete)
        self.action_shape = () if self.discrete else tuple(space_shape(action_space))
        out = int(action_space.n) if isinstance(action_space, spaces.Discrete) else int(np.prod(self.action_shape))
        sizes = [int(np.prod(space_shape(observation_space))), *config.hidden_sizes]
        # zero weights until the learner's arrive (an env-runner always loads them before acting)
        self.actor = _zeros(sizes, out)
        self.critic = _zeros(sizes, 1)
        self.log_std = np.full(out, config.init_log_std, np.float32)
        self.rng = np.random.Generator(np.random.PCG64(seed))

    def load_weights(self, weights: dict[str, np.ndarray]) -> None:
        self.actor = _layers(weights, "actor")
        self.critic = _layers(weights, "critic")
        if not self.discrete:
            self.log_std = np.array(weights["log_std"], np.float32)

    def act(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = _flat(obs)
        out = self._forward(self.actor, x)
        n = len(x)
        if self.discrete:
            shifted = out - out.max(axis=1, keepdims=True)
            log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
            cdf = np.cumsum(np.exp(log_p), axis=1)
            u = self.rng.random(n, dtype=np.float32)[:, None]
            action = np.minimum((u >= cdf).sum(axis=1), out.shape[1] - 1).astype(np.int64)
            logprob = log_p[np.arange(n), action]
        else:
            eps = self.rng.standard_normal(out.shape, dtype=np.float32)
            action = (out + np.exp(self.log_std) * eps).reshape(n, *self.action_shape)
            logprob = -(0.5 * eps * eps + self.log_std + _HALF_LOG_2PI).sum(axis=1)
        return action, logprob.astype(np.float32), self.value(x)

    def mode(self, obs: np.ndarray) -> np.ndarray:
        """The Gaussian's mean, or the most probable of a categorical's actions."""
        x = _flat(obs)
        out = self._forward(self.actor, x)
        if self.discrete:
            return out.argmax(axis=1).astype(np.int64)
        return out.reshape(len(x), *self.action_shape)

    def value(self, obs: np.ndarray) -> np.ndarray:
        return self._forward(self.critic, _flat(obs))[:, 0]

    def _forward(self, layers: Layers, x: np.ndarray) -> np.ndarray:
        for weight, bias in layers[:-1]:
            x = self.activation(x @ weight + bias)
        weight, bias = layers[-1]
        return x @ weight + bias

    def rng_state(self) -> np.ndarray:
        # PCG64's state holds 128-bit integers: JSON text keeps them exact
        return np.frombuffer(json.dumps(self.rng.bit_generator.state).encode(), np.uint8).copy()

    def load_rng_state(self, state: np.ndarray) -> None:
        try:
            decoded = json.loads(np.asarray(state, np.uint8).tobytes())
            self.rng.bit_generator.state = decoded
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(
                f"rng.actor is not a PCG64 generator state ({exc}); was the checkpoint written by an older version?"
            ) from None


def _flat(obs: np.ndarray) -> np.ndarray:
    obs = np.asarray(obs, np.float32)
    return obs.reshape(len(obs), -1)


def _layers(weights: dict[str, np.ndarray], prefix: str) -> Layers:
    """``{prefix}.{i}.weight/bias`` of an ``nn.Sequential`` (activations sit between), in order."""
    indices = sorted(int(k.split(".")[1]) for k in weights if k.startswith(prefix + ".") and k.endswith(".weight"))
    if not indices:
        raise ValueError(f"the weights have no {prefix}.*.weight")
    return [
        (
            np.ascontiguousarray(np.asarray(weights[f"{prefix}.{i}.weight"], np.float32).T),
            np.array(weights[f"{prefix}.{i}.bias"], np.float32),
        )
        for i in indices
    ]


def _zeros(sizes: list[int], out: int) -> Layers:
    dims = [*sizes, out]
    return [(np.zeros((a, b), np.float32), np.zeros(b, np.float32)) for a, b in itertools.pairwise(dims)]
