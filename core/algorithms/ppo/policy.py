"""PPO's actor-critic network (the learner's side; env-runners act with ``actor.PPOActor``).

Sampling always goes through an explicit ``torch.Generator``: the
``torch.distributions`` ``sample()`` methods draw from the global RNG, which
would make results depend on whatever else touched it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from gymnasium import spaces
from torch import nn
from torch.distributions import Categorical

from .config import PPOConfig

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def layer_init(layer: nn.Linear, gain: float) -> nn.Linear:
    """Orthogonal weights and zero biases: PPO's standard init (Engstrom et al., 2020)."""
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.constant_(layer.bias, 0.0)
    return layer


def mlp(in_dim: int, hidden_sizes: list[int], out_dim: int, activation: str, out_gain: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for size in hidden_sizes:
        layers += [layer_init(nn.Linear(in_dim, size), math.sqrt(2)), _ACTIVATIONS[activation]()]
        in_dim = size
    layers.append(layer_init(nn.Linear(in_dim, out_dim), out_gain))
    return nn.Sequential(*layers)


class ActorCritic(nn.Module):
    """Separate actor and critic MLPs over flattened observations.

    Discrete actions use a Categorical over logits. Box actions use a diagonal
    Gaussian whose log-std is a state-independent parameter (initialised to
    ``init_log_std``, default 0, i.e. std 1); actions are not squashed or clipped here, so the log-prob of
    the action sent equals the log-prob the learner recomputes. The env-runner
    clips to the Box bounds only when stepping the env.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        hidden_sizes: list[int],
        activation: str = "tanh",
        init_log_std: float = 0.0,
    ) -> None:
        super().__init__()
        if not isinstance(observation_space, spaces.Box):
            raise TypeError(f"PPO needs a Box observation space, got {observation_space}")
        obs_dim = int(np.prod(observation_space.shape))
        if isinstance(action_space, spaces.Discrete):
            self.discrete = True
            self.action_shape: tuple[int, ...] = ()
            policy_out = int(action_space.n)
        elif isinstance(action_space, spaces.Box):
            self.discrete = False
            self.action_shape = tuple(action_space.shape)
            policy_out = int(np.prod(self.action_shape))
            self.log_std = nn.Parameter(torch.full((policy_out,), float(init_log_std)))
        else:
            raise TypeError(f"PPO supports Discrete and Box action spaces, got {action_space}")
        self.critic = mlp(obs_dim, hidden_sizes, 1, activation, out_gain=1.0)
        # A tiny policy-head gain starts the policy near uniform / zero-mean.
        self.actor = mlp(obs_dim, hidden_sizes, policy_out, activation, out_gain=0.01)

    def get_value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs.flatten(1)).squeeze(-1)

    def get_action_and_value(
        self, obs: torch.Tensor, action: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(action, logprob, entropy, value)``; samples ``action`` if not given."""
        out = self.actor(obs.flatten(1))
        if self.discrete:
            dist = Categorical(logits=out, validate_args=False)
            if action is None:
                action = torch.multinomial(dist.probs, 1, generator=generator).squeeze(-1)
            logprob, entropy = dist.log_prob(action), dist.entropy()
        else:
            # Diagonal Gaussian log-prob and entropy in closed form from log_std: what
            # torch.distributions.Normal computes, in fewer ops (this is on the update's hot path).
            std = self.log_std.exp()
            if action is None:
                noise = torch.randn(out.shape, generator=generator, dtype=out.dtype)
                action = (out + std * noise).reshape(-1, *self.action_shape)
            flat_action = action.reshape(action.shape[0], -1)
            logprob = (-0.5 * ((flat_action - out) / std) ** 2 - self.log_std - _HALF_LOG_2PI).sum(-1)
            entropy = (0.5 + _HALF_LOG_2PI + self.log_std).sum().expand(len(out))
        return action, logprob, entropy, self.get_value(obs)


def build_actor_critic(
    config: PPOConfig, observation_space: spaces.Space, action_space: spaces.Space, seed: int
) -> ActorCritic:
    """Build the network with initial weights that depend on ``seed`` only, leaving the global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ActorCritic(observation_space, action_space, config.hidden_sizes, config.activation, config.init_log_std)


def weights_to_numpy(net: nn.Module) -> dict[str, np.ndarray]:
    """State dict as float32 C-contiguous copies (a copy, so later updates do not alias it)."""
    return {k: v.detach().cpu().numpy().astype(np.float32, order="C", copy=True) for k, v in net.state_dict().items()}
