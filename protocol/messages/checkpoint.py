"""Checkpoints: taken at an iteration boundary, written by the controller alone.

``dynamicrl checkpoint`` -> CheckpointRequest. The controller sends
CheckpointCommand to the learner, which at its next iteration boundary (after
an update, before it hands out the new weights) sends its CheckpointPart and
holds. The controller then asks every env-runner for its part at that same
boundary (they cannot pass it: the learner holds the weights they need),
writes all parts atomically, and sends CheckpointDone, releasing the learner.
A paused run stands between boundaries (mid-update, mid-rollout), so a request
then is scheduled: answered at once, taken at the first boundary after resume.
State travels as arrays plus JSON-like data: nothing is ever pickled.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, Field

from .base import LARGE, SMALL, LogicalTime, Message, NDArray


class CheckpointRequest(Message):
    """Client -> controller. Reply: CheckpointReply once written (``scheduled`` when paused or pausing), or
    ErrorReply: CONFLICT (starting or stopping), TIMEOUT (a member sent no state in checkpoint.timeout_s),
    INTERNAL (write failed, or an algorithm/env without checkpoint support). The run goes on in every case."""

    TYPE: ClassVar[str] = "control.checkpoint_request"
    MAX_PAYLOAD: ClassVar[int] = SMALL


class CheckpointReply(Message):
    """The checkpoint written, or (``scheduled``) the promise of one at the first boundary after resume."""

    TYPE: ClassVar[str] = "control.checkpoint_reply"
    scheduled: bool = Field(
        default=False, description="accepted while paused: taken at the first iteration boundary after resume"
    )
    # null when scheduled: nothing is written yet
    path: str | None = None
    ltime: LogicalTime | None = None
    bytes: int | None = Field(default=None, ge=0)
    seconds: float | None = Field(default=None, ge=0, description="request (or boundary) to files renamed into place")
    policy_sha256: str | None = None


class SavedCheckpoint(BaseModel):
    """A checkpoint on disk: in CheckpointSaved, and the last one in StatusReply."""

    path: str
    kind: str = Field(description="manual, stop, end or periodic (only periodic ones rotate)")
    ltime: LogicalTime
    bytes: int = Field(ge=0)
    kept: int = Field(ge=0, description="complete checkpoints in the run's checkpoints/ after this one was written")


class CheckpointSaved(Message):
    """Controller -> bus (topic ``control.checkpoint_saved``), once each checkpoint is written: for
    consoles and markers (the launcher's progress bar, TensorBoard), never the state itself."""

    TYPE: ClassVar[str] = "control.checkpoint_saved"
    checkpoint: SavedCheckpoint


class CheckpointCommand(Message):
    """Controller -> member: send your state at iteration boundary ``at_iteration``.

    To the learner ``at_iteration`` is None: its next boundary, which it reports.
    """

    TYPE: ClassVar[str] = "membership.checkpoint"
    MAX_PAYLOAD: ClassVar[int] = SMALL
    ckpt_id: str
    at_iteration: int | None = Field(default=None, ge=0)


class CheckpointPart(Message):
    """Member -> controller: its full state at the boundary (and controller -> member on resume,
    inside RunStart). ``arrays`` hold tensors and buffers; ``meta`` plain JSON-like data."""

    TYPE: ClassVar[str] = "membership.checkpoint_part"
    MAX_PAYLOAD: ClassVar[int] = LARGE
    ckpt_id: str
    service: str
    ltime: LogicalTime
    arrays: dict[str, NDArray]
    meta: dict[str, Any]


class CheckpointDone(Message):
    """Controller -> the learner holding the boundary: the checkpoint is on disk (or failed); go on."""

    TYPE: ClassVar[str] = "membership.checkpoint_done"
    MAX_PAYLOAD: ClassVar[int] = SMALL
    ckpt_id: str
    ok: bool
    message: str = ""
