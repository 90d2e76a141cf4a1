"""Metrics published on the bus for the logger, the controller and any monitor."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from .base import Message, ParamValue


class TrainMetrics(Message):
    """Learner -> bus (topic ``metrics.train``), once per iteration.

    ``values`` holds the algorithm's scalars (losses, KL, clip fraction, lr...)
    so a new algorithm needs no protocol change.
    """

    TYPE: ClassVar[str] = "metrics.train"
    iteration: int = Field(ge=0)
    env_steps: int = Field(ge=0)
    sps: float
    return_mean: float | None = None
    length_mean: float | None = None
    episodes: int = Field(ge=0, description="episodes finished this iteration")
    values: dict[str, float]
    hyperparameters: dict[str, ParamValue] = Field(
        default_factory=dict, description="every tunable's value in force at the end of the iteration"
    )


class EpisodeStats(Message):
    """Env-runner -> bus (topic ``metrics.episode``), once per rollout that finished episodes."""

    TYPE: ClassVar[str] = "metrics.episode"
    rank: int = Field(ge=0)
    env_steps: int = Field(ge=0, description="this env-runner's env steps so far")
    returns: list[float]
    lengths: list[int]
