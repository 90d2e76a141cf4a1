"""Metrics published on the bus for the logger, the controller and any monitor."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from .base import LogicalTime, Message, ParamValue


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


class VideoSaved(Message):
    """Previewer -> bus (topic ``metrics.video``), once per clip written: where it is and what it shows.

    Never the frames: a subscriber reads the files (``path``, and ``gif``, a small animated copy).
    """

    TYPE: ClassVar[str] = "metrics.video"
    path: str = Field(min_length=1, description="the MP4 (H.264), runs/<id>/videos/iter-<iteration>.mp4")
    gif: str | None = Field(default=None, description="a small animated GIF of the same episode, if written")
    iteration: int = Field(ge=0, description="the iteration of the policy filmed (the version the learner served)")
    env_step: int = Field(ge=0, description="env steps trained when that policy was made")
    episode_return: float
    length: int = Field(ge=0, description="env steps in the episode")
    frames: int = Field(ge=1, description="frames in the MP4 (length + 1: the reset frame too)")
    width: int = Field(ge=1)
    height: int = Field(ge=1)
    seed: int = Field(description="the episode's reset seed")


class PreviewsSaved(Message):
    """Previewer -> bus (topic ``metrics.previews``), once per pause it drew: one PNG per sub-env scene,
    ``runs/<id>/previews/pause-<pause>/<service>-<index>.png``; or none and ``error`` saying why."""

    TYPE: ClassVar[str] = "metrics.previews"
    pause: int = Field(ge=1, description="the pause number, as in PauseReply")
    ltime: LogicalTime = Field(description="where the run stood at that pause")
    paths: list[str] = Field(description="the PNGs, by service then sub-env index")
    width: int = Field(ge=0)
    height: int = Field(ge=0)
    seconds: float = Field(ge=0, description="rendering and writing them took")
    error: str | None = Field(default=None, description="why there are no previews (an env that cannot render)")


class EpisodeStats(Message):
    """Env-runner -> bus (topic ``metrics.episode``), once per rollout that finished episodes."""

    TYPE: ClassVar[str] = "metrics.episode"
    rank: int = Field(ge=0)
    env_steps: int = Field(ge=0, description="this env-runner's env steps so far")
    returns: list[float]
    lengths: list[int]


class ProcessSample(BaseModel):
    """One process's CPU and memory (a row of SystemMetrics)."""

    model_config = ConfigDict(extra="forbid")
    service: str
    cpu_percent: float = Field(ge=0, description="CPU use since its previous sample (100: one core)")
    rss_mb: float = Field(ge=0, description="resident memory in MiB")


class SystemMetrics(Message):
    """Controller -> bus (topic ``metrics.sys``), every ``timing.heartbeat_s``: the latest sample of
    every live member (from its heartbeat) and of the controller itself, so ``status`` and the logger
    read the same numbers."""

    TYPE: ClassVar[str] = "metrics.sys"
    ltime: LogicalTime | None = Field(default=None, description="the latest metrics.train (null before the first)")
    services: list[ProcessSample]
