"""The header every message carries (Jupyter-style): who, which, when, in reply to what."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from .messages import LogicalTime


class Envelope(BaseModel):
    """Routing and ordering data, separate from the message body.

    ``seq`` counts the sender's messages of one topic on one socket (a gap means loss);
    ``id`` is unique per message and is the request id a reply names in
    ``parent``; ``ltime`` is the run's logical time where the sender knows it. Strict: a peer
    that sends ``seq`` as ``"1"`` or ``true`` is refused, not coerced.
    """

    model_config = ConfigDict(extra="forbid", strict=True)
    v: str = Field(description="protocol version, major.minor")
    type: str
    sender: str = Field(max_length=128)
    seq: int = Field(ge=0)
    run_id: str | None = None
    ts: float = Field(description="sender's wall clock, seconds since the epoch (informative only)")
    id: str = Field(min_length=1, max_length=64)
    parent: str | None = None
    ltime: LogicalTime | None = None
