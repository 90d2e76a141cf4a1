"""Commands from clients (CLI, scripts) to the controller, and run-state events.

Clients use a REQ socket (Lazy Pirate: poll with a timeout, reopen, retry) on
the controller's ROUTER; a retried request carries the same envelope id, and the
controller answers a duplicate with the reply it already gave.
"""

from __future__ import annotations

from enum import Enum
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from .base import ErrorCode, LogicalTime, Message, Role


class RunState(str, Enum):
    STARTING = "starting"   # waiting for members to register and get ready
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Health(str, Enum):
    STARTING = "starting"   # registered, not ready yet
    OK = "ok"
    MISSING = "missing"     # heartbeats late; heals on the next one
    GONE = "gone"           # said goodbye or timed out for good


class ErrorReply(Message):
    """Any server -> requester, instead of the normal reply. The server keeps running."""

    TYPE: ClassVar[str] = "control.error"
    code: ErrorCode
    message: str


class StatusRequest(Message):
    """Client -> controller. Reply: StatusReply."""

    TYPE: ClassVar[str] = "control.status_request"


class ServiceStatus(BaseModel):
    """One member of the run, as the controller sees it (part of StatusReply)."""

    model_config = ConfigDict(extra="forbid")
    service: str
    role: Role
    rank: int
    pid: int
    health: Health
    last_seen_s: float = Field(description="seconds since the last message from it")


class StatusReply(Message):
    """Controller -> client: the run at a glance."""

    TYPE: ClassVar[str] = "control.status_reply"
    run_id: str
    run_dir: str
    state: RunState
    services: list[ServiceStatus]
    ltime: LogicalTime | None = None
    sps: float | None = None
    return_mean: float | None = None
    total_env_steps: int


class RunStateChanged(Message):
    """Controller -> bus (topic ``control.state``), on every change and as a 0.5 s beacon.

    The beacon lets a late subscriber learn the state without asking, and lets a
    service prove its subscription is live before it reports ready.
    """

    TYPE: ClassVar[str] = "control.state"
    state: RunState
    reason: str = ""
