"""The data path between env-runners and the learner.

Env-runners connect a DEALER to the learner's ROUTER (data socket). Each sends
``PolicyRequest`` once, then a ``Rollout`` per iteration; the learner answers
each with ``PolicyWeights`` (the policy to act with next). In sync mode the
reply to rollout *k* is the policy after update *k*, so collection and training
alternate deterministically. Arrays travel as raw frames.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from .base import SMALL, Message, NDArray, ParamValue


class PolicyRequest(Message):
    """Env-runner -> learner: send me the current policy. Reply: PolicyWeights."""

    TYPE: ClassVar[str] = "data.policy_request"
    MAX_PAYLOAD: ClassVar[int] = SMALL
    rank: int = Field(ge=0)


class PolicyWeights(Message):
    """Learner -> env-runner: weights to act with; ``done`` means stop collecting."""

    TYPE: ClassVar[str] = "data.policy_weights"
    version: int = Field(ge=0, description="iteration the policy is for")
    weights: dict[str, NDArray]
    normalizer: dict[str, NDArray] = Field(
        default_factory=dict, description="running statistics to normalise with: obs.{count,mean,var}, ret.{...}"
    )
    done: bool = False


class Rollout(Message):
    """Env-runner -> learner: one iteration of experience, time-major [T, N, ...].

    ``dones[t]`` marks an episode that ended at step t (terminated or truncated);
    ``trunc_values[t]`` is the value of the final observation where it was a
    truncation (bootstraps time limits), else 0.
    """

    TYPE: ClassVar[str] = "data.rollout"
    rank: int = Field(ge=0)
    version: int = Field(ge=0, description="policy version that collected it")
    obs: NDArray
    actions: NDArray
    logprobs: NDArray
    values: NDArray
    rewards: NDArray
    dones: NDArray
    trunc_values: NDArray
    last_obs: NDArray
    last_dones: NDArray
    episode_returns: list[float]
    episode_lengths: list[int]
    collect_s: float = Field(ge=0, description="wall seconds spent collecting")
    hyperparameters: dict[str, ParamValue] = Field(
        default_factory=dict, description="the env-runner's tunables in force at the end of collection"
    )
    normalizer_count: float = Field(
        default=0.0, ge=0, description="sample count of the observation statistics it normalised with (0: none)"
    )
    moments: dict[str, NDArray] = Field(
        default_factory=dict,
        description="moments of the raw observations / discounted returns it saw, "
        "obs.{count,mean,var} and ret.{...}, for the learner's running statistics",
    )
