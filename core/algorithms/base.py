"""The two interfaces an algorithm implements, and the rollout between them.

An algorithm is split in two because the halves live in different processes:
the ``Actor`` runs inside every env-runner (acts, estimates values) and the
``Algorithm`` runs in the learner (turns rollouts into new weights). Only
numpy crosses the boundary, so this module imports neither torch nor any
transport code.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np


@dataclass
class Experience:
    """One iteration of experience from all env-runners, time-major: what an update learns from.

    The learner builds it from the env-runners' ``Rollout`` messages (``concatenate``);
    the arrays keep the message's field names.

    ``N`` is every env of every env-runner, concatenated in rank order, and
    ``T`` the rollout length. ``obs[t]`` is the observation the action at
    ``t`` was chosen from. ``dones[t]`` is True when the episode ended *at*
    step ``t`` (termination or truncation), so ``obs[t + 1]`` (or
    ``last_obs``) already belongs to the next episode. Time limits are
    bootstrapped through ``trunc_values``: the value of the final (pre-reset)
    observation of a truncated step, 0 elsewhere, which the learner adds to
    the reward as ``rewards + gamma * trunc_values``.
    """

    obs: np.ndarray  # [T, N, *obs_shape] float32
    actions: np.ndarray  # [T, N, *act_shape] int64 (Discrete, act_shape=()) or float32 (Box)
    logprobs: np.ndarray  # [T, N] float32, under the policy that acted
    values: np.ndarray  # [T, N] float32, under the policy that acted
    rewards: np.ndarray  # [T, N] float32
    dones: np.ndarray  # [T, N] bool
    trunc_values: np.ndarray  # [T, N] float32
    last_obs: np.ndarray  # [N, *obs_shape] float32, the observation after the last step
    last_dones: np.ndarray  # [N] bool, whether last_obs starts a new episode (== dones[-1])
    policy_lag: int = 0  # updates between the policy that acted and the weights about to be updated

    @classmethod
    def concatenate(cls, rollouts: Sequence[Any]) -> Experience:
        """Experience from rollouts (objects with these array fields) side by side on the env axis:
        axis 1 of the time-major arrays, axis 0 of ``last_*``."""

        def cat(name: str) -> np.ndarray:
            arrays = [getattr(r, name) for r in rollouts]
            return arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0 if name.startswith("last_") else 1)

        arrays: dict[str, Any] = {f.name: cat(f.name) for f in fields(cls) if f.name != "policy_lag"}
        return cls(**arrays)

    @property
    def num_steps(self) -> int:
        return self.rewards.shape[0]

    @property
    def num_envs(self) -> int:
        return self.rewards.shape[1]

    def validate(self) -> None:
        """Raise ValueError on inconsistent shapes, so a bad message fails loudly, not in GAE."""
        t, n = self.rewards.shape
        for field in ("logprobs", "values", "dones", "trunc_values"):
            if getattr(self, field).shape != (t, n):
                raise ValueError(f"rollout.{field} has shape {getattr(self, field).shape}, expected {(t, n)}")
        for field in ("obs", "actions"):
            if getattr(self, field).shape[:2] != (t, n):
                raise ValueError(f"rollout.{field} has shape {getattr(self, field).shape}, expected ({t}, {n}, ...)")
        if self.last_obs.shape != self.obs.shape[1:]:
            raise ValueError(f"rollout.last_obs has shape {self.last_obs.shape}, expected {self.obs.shape[1:]}")
        if self.last_dones.shape != (n,):
            raise ValueError(f"rollout.last_dones has shape {self.last_dones.shape}, expected {(n,)}")


class StateMismatch(ValueError):
    """Saved state that does not fit the model this algorithm built from the run's config: the message
    names the array (or field) and says what was expected. Raised by ``load_state`` before it changes
    anything."""


def check_arrays(arrays: Mapping[str, np.ndarray], expected: Mapping[str, tuple[int, ...]], prefix: str) -> None:
    """The arrays named ``prefix*`` are exactly ``expected`` (name -> shape): StateMismatch naming the
    first one missing, unexpected or of another shape."""
    for name, shape in expected.items():
        if name not in arrays:
            raise StateMismatch(f"array {name} is missing; the model has one of shape {shape}")
        actual = getattr(arrays[name], "shape", None)
        if actual != shape:
            raise StateMismatch(f"array {name} has shape {actual}; the model the run's config builds has {shape}")
    extra = sorted(k for k in arrays if k.startswith(prefix) and k not in expected)
    if extra:
        raise StateMismatch(f"array {extra[0]:.80} is not part of the model the run's config builds")


class Algorithm(ABC):
    """Learner side: owns the network and optimiser, consumes rollouts.

    ``num_iterations`` is the planned number of updates, so schedules (such as
    learning-rate annealing) know where they are; it comes from the run's config, not
    from ``load_state``, as a resumed run may plan more; the learner sets the attribute
    ``num_iterations`` anew when a live ``run.total_env_steps`` patch moves the end.
    Construction must be a function of ``seed`` only, so two learners with the same
    seed and the same rollouts produce the same weights.
    """

    config: Any  # the algorithm's config section; a patch replaces it
    num_iterations: int

    @abstractmethod
    def __init__(
        self, config: Any, observation_space: Any, action_space: Any, seed: int, num_iterations: int
    ) -> None: ...

    @abstractmethod
    def update(
        self, experience: Experience, iteration: int, safe_point: Callable[[int], None] | None = None
    ) -> dict[str, float]:
        """Learn from one iteration's experience; ``iteration`` counts from 0.

        Call ``safe_point(k)`` before gradient step ``k`` (k counts from 0), where
        the state is consistent: the learner answers the controller there
        (heartbeats, pauses, next-minibatch patches), so a long update never looks
        like a hang and a pause lands within one gradient step. Read patchable
        settings from ``self.config`` after each call: a patch replaces it.

        Returns scalar metrics by name; each becomes a column of metrics.csv and a
        TensorBoard scalar.
        """

    @abstractmethod
    def get_weights(self) -> dict[str, np.ndarray]:
        """Weights the Actor needs, as float32 C-contiguous copies in a stable key order."""

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Everything needed to continue bitwise (weights, optimiser, RNG): arrays + JSON-like data.

        Arrays named ``policy.*`` are the network's parameters (hashed as policy_sha256).
        """
        raise NotImplementedError(f"{type(self).__name__} does not support checkpoints")

    def load_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Continue from ``state()``'s output. Check it all first (``check_arrays``) and raise
        StateMismatch, naming the array, for state that does not fit the model: nothing is loaded then."""
        raise NotImplementedError(f"{type(self).__name__} does not support checkpoints")


class Actor(ABC):
    """Env-runner side: maps observations to actions with the latest weights.

    Sampling uses the actor's own generator seeded from ``seed``, so an
    env-runner's trajectory is reproducible whatever else uses the global RNG.
    """

    @abstractmethod
    def __init__(self, config: Any, observation_space: Any, action_space: Any, seed: int) -> None: ...

    @abstractmethod
    def load_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Replace the weights with ones from ``Algorithm.get_weights``."""

    @abstractmethod
    def act(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Batch of observations [n, *obs_shape] -> (actions, logprobs [n], values [n])."""

    @abstractmethod
    def value(self, obs: np.ndarray) -> np.ndarray:
        """Value estimates [n] float32, e.g. for the final observation of a truncated episode."""

    def mode(self, obs: np.ndarray) -> np.ndarray:
        """The most likely actions for a batch of observations: what evaluation and deployment act with."""
        raise NotImplementedError(f"{type(self).__name__} has no deterministic action; evaluate it stochastically")

    def rng_state(self) -> np.ndarray:
        """The sampling generator's state (weights come from the learner, so this is all an actor owns)."""
        raise NotImplementedError(f"{type(self).__name__} does not support checkpoints")

    def load_rng_state(self, state: np.ndarray) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not support checkpoints")
