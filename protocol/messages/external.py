"""Streams from outside the run (BCI, physiological sensors...) published on the bus.

An :class:`ExternalSample` is one timestamped chunk of a multichannel stream.
Unlike every other message its bus topic is not its ``TYPE`` but
``external.<stream>``, so a subscriber can take one stream by prefix
(``external.mock-bci``) or all of them (``external.``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, ClassVar

from pydantic import Field, field_validator, model_validator

from .base import Message, NDArray

if TYPE_CHECKING:
    from numpy import ndarray

#: A stream name: what follows ``external.`` in the topic (no spaces, no further dots needed).
STREAM_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$"


class ExternalSample(Message):
    """Provider -> bus (topic ``external.<stream>``): a chunk of ``n`` samples of one stream.

    ``timestamps`` (float64 ``[n]``, seconds, the provider's clock: LSL time or
    ``time.time()``) and ``samples`` (float32 ``[n, len(channels)]``). ``derived``
    holds scalars the provider computed over its recent window (e.g.
    ``"engagement"``). ``chunk`` numbers the provider's chunks from 0.
    """

    TYPE: ClassVar[str] = "external.sample"
    TOPIC_PREFIX: ClassVar[str] = "external."
    stream: str = Field(pattern=STREAM_NAME, description="stream name; the topic is external.<stream>")
    channels: list[str] = Field(min_length=1, max_length=1024)
    rate: float = Field(ge=0, description="nominal sampling rate in Hz (0: irregular)")
    chunk: int = Field(default=0, ge=0, description="the provider's own chunk counter")
    timestamps: NDArray = Field(description="float64 [n]: time of each sample in seconds")
    samples: NDArray = Field(description="float32 [n, channels]")
    derived: dict[str, float] = Field(default_factory=dict, description="scalars derived from the stream")

    def topic(self) -> str:
        return f"{self.TOPIC_PREFIX}{self.stream}"

    @field_validator("timestamps", "samples")
    @classmethod
    def _dtype_and_rank(cls, value: ndarray, info) -> ndarray:
        dtype, ndim, shape = _ARRAYS[info.field_name]
        if value.dtype != dtype or value.ndim != ndim:
            raise ValueError(f"{info.field_name} must be {dtype} {shape}, got {value.dtype} {list(value.shape)}")
        return value

    @model_validator(mode="after")
    def _shapes(self) -> ExternalSample:
        n, width = self.samples.shape
        if self.timestamps.shape[0] != n:
            raise ValueError(f"{self.timestamps.shape[0]} timestamps for {n} samples")
        if width != len(self.channels):
            raise ValueError(f"samples have {width} columns for {len(self.channels)} channels")
        return self


#: field: (dtype, rank, shape as the error names it)
_ARRAYS = {"timestamps": ("float64", 1, "[n]"), "samples": ("float32", 2, "[n, channels]")}


def stream_topic(stream: str) -> str:
    """The bus topic of ``stream`` (``external.<stream>``)."""
    if not re.match(STREAM_NAME, stream):
        raise ValueError(f"{stream!r} is not a valid stream name ({STREAM_NAME})")
    return ExternalSample.TOPIC_PREFIX + stream
