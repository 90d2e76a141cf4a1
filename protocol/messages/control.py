"""Commands from clients (CLI, scripts) to the controller, and run-state events.

Clients use a REQ socket (Lazy Pirate: poll with a timeout, reopen, retry) on
the controller's ROUTER; a retried request carries the same envelope id, and the
controller answers a duplicate with the reply it already gave.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from .base import LARGE, SMALL, ErrorCode, LogicalTime, Message, ParamValue, Position, Role
from .checkpoint import SavedCheckpoint


class RunState(str, Enum):
    STARTING = "starting"  # waiting for members to register and get ready
    RUNNING = "running"
    PAUSING = "pausing"  # asked every member to stop at its next safe point
    PAUSED = "paused"  # every member stands at its barrier
    STOPPING = "stopping"
    STOPPED = "stopped"


class Health(str, Enum):
    STARTING = "starting"  # registered, not ready yet
    OK = "ok"
    MISSING = "missing"  # heartbeats late; heals on the next one
    GONE = "gone"  # said goodbye


class ErrorReply(Message):
    """Any server -> requester, instead of the normal reply. The server keeps running."""

    TYPE: ClassVar[str] = "control.error"
    code: ErrorCode
    message: str
    problems: dict[str, str] = Field(
        default_factory=dict, description="a rejected patch: each hyperparameter named in it -> what is wrong"
    )


class StatusRequest(Message):
    """Client -> controller. Reply: StatusReply."""

    TYPE: ClassVar[str] = "control.status_request"
    MAX_PAYLOAD: ClassVar[int] = SMALL


class ServiceStatus(BaseModel):
    """One member of the run, as the controller sees it (part of StatusReply)."""

    model_config = ConfigDict(extra="forbid")
    service: str
    role: Role
    rank: int
    pid: int
    health: Health
    last_seen_s: float = Field(description="seconds since the last message from it")
    ltime: LogicalTime | None = Field(default=None, description="its logical time at its last heartbeat")
    missed: int = Field(default=0, ge=0, description="bus messages it lost (as of its last heartbeat)")
    cpu_percent: float | None = Field(
        default=None, ge=0, description="its CPU use at its last heartbeat (100: one core)"
    )
    rss_mb: float | None = Field(default=None, ge=0, description="its resident memory in MiB at its last heartbeat")


class MonitorStatus(BaseModel):
    """One external monitor's latest report, as the controller keeps it (part of StatusReply)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    topics: list[str]
    received: int = Field(ge=0)
    missed: int = Field(ge=0)
    missed_by_sender: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)
    rejected: int = Field(default=0, ge=0)
    closed: bool = Field(default=False, description="its last report was its final one")
    last_report_s: float = Field(description="seconds since its last report")


class SecurityStatus(BaseModel):
    """How the run's sockets guard it (part of StatusReply): what the controller refused so far."""

    model_config = ConfigDict(extra="forbid")
    curve: bool = Field(description="CURVE authentication is on (security.curve)")
    refused_handshakes: int = Field(
        default=0,
        ge=0,
        description="connections refused at the controller's sockets and (as their heartbeats last said) the "
        "learner's: no CURVE, or a key it does not know",
    )
    dropped_bus: int = Field(
        default=0,
        ge=0,
        description="bus frames dropped: sent upstream by a subscriber, a member's under another name, "
        "a client's outside external.*",
    )


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
    last_checkpoint: SavedCheckpoint | None = Field(default=None, description="the last checkpoint this run wrote")
    waiting_for: str = Field(
        default="", description="while starting: what the run still waits for, e.g. '1 more env-runner (...)'"
    )
    monitors: list[MonitorStatus] = Field(
        default_factory=list, description="external monitors that reported within timing.monitor_expiry_s"
    )
    security: SecurityStatus | None = Field(default=None, description="None from a controller before protocol 1.6")
    stalled_s: float | None = Field(
        default=None,
        ge=0,
        description="running, but no learner or env-runner has advanced its logical time for this long "
        "(beyond timing.stall_after_s, or 3x the longest gap seen in the run); None while it advances",
    )


class MonitorReport(Message):
    """Monitor (not a member) -> controller, command socket (REQ): what it received and lost on the
    bus so far, sent now and then. Reply: MonitorReportReply. ``status`` lists the latest report
    per ``name`` until none comes for ``timing.monitor_expiry_s``."""

    TYPE: ClassVar[str] = "control.monitor_report"
    MAX_PAYLOAD: ClassVar[int] = SMALL
    name: str = Field(min_length=1, max_length=128, description="one entry per name in status")
    topics: list[str] = Field(default_factory=list, description="topic prefixes it subscribes to")
    received: int = Field(ge=0, description="valid bus messages received")
    missed: int = Field(default=0, ge=0, description="bus messages known lost (sequence gaps), all senders")
    missed_by_sender: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)
    rejected: int = Field(
        default=0, ge=0, description="bus messages it refused (undecodable, invalid, other major version)"
    )
    final: bool = Field(default=False, description="it is closing: no further report will come")


class MonitorReportReply(Message):
    TYPE: ClassVar[str] = "control.monitor_report_reply"
    expiry_s: float = Field(description="the controller forgets a monitor silent this long")


class RunStateChanged(Message):
    """Controller -> bus (topic ``control.state``), on every change and as a 0.5 s beacon.

    The beacon lets a late subscriber learn the state without asking, and lets a
    service prove its subscription is live before it reports ready.
    """

    TYPE: ClassVar[str] = "control.state"
    state: RunState
    reason: str = ""


# -- pause / resume ---------------------------------------------------------------------
class PauseRequest(Message):
    """Client -> controller. Reply (once every member is at its barrier): PauseReply, or
    ErrorReply naming who did not report within ``timing.pause_timeout_s`` (the run then
    continues). Pausing a paused run is harmless: the reply says ``already``."""

    TYPE: ClassVar[str] = "control.pause_request"
    MAX_PAYLOAD: ClassVar[int] = SMALL


class PauseReply(Message):
    TYPE: ClassVar[str] = "control.pause_reply"
    already: bool = Field(description="the run was paused before this request")
    positions: list[Position]
    latency_s: float = Field(description="request to last barrier report, as the controller saw it")
    pause: int = Field(default=0, ge=0, description="the run's pause number (1, 2, ...; 0: none yet)")
    previews: int = Field(
        default=0, ge=0, description="scenes sent to the previewer for this pause (0: no previews will come)"
    )


class ResumeRequest(Message):
    """Client -> controller. Reply: ResumeReply (``already`` when the run was not paused)."""

    TYPE: ClassVar[str] = "control.resume_request"
    MAX_PAYLOAD: ClassVar[int] = SMALL


class ResumeReply(Message):
    TYPE: ClassVar[str] = "control.resume_reply"
    already: bool
    paused_s: float = Field(default=0.0, description="how long the run stood paused")


# -- hyperparameters ---------------------------------------------------------------------
class Tunable(BaseModel):
    """One live-tunable hyperparameter (a row of ``dynamicrl params``)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    owner: Role
    type: str
    apply: str = Field(description="next_minibatch | next_iteration | next_env_step")
    description: str
    value: ParamValue
    minimum: float | None = None
    exclusive_minimum: bool = False
    maximum: float | None = None
    exclusive_maximum: bool = False


class ParamsRequest(Message):
    """Client -> controller. Reply: ParamsReply."""

    TYPE: ClassVar[str] = "control.params_request"
    MAX_PAYLOAD: ClassVar[int] = SMALL


class ParamsReply(Message):
    TYPE: ClassVar[str] = "control.params_reply"
    params: list[Tunable]


class PatchStatus(str, Enum):
    APPLIED = "applied"  # every owner applied it; ``applied`` says when
    PENDING = "pending"  # accepted; not every owner has reached its apply point yet
    SCHEDULED = "scheduled"  # accepted; applies at ``at_iteration``
    ON_RESUME = "on_resume"  # accepted while paused; applies when the run resumes


class PatchRequest(Message):
    """Client -> controller: change hyperparameters, all or nothing.

    ``changes`` maps public names (``ppo.lr``) to values. The whole patch is
    validated first; any problem -> ErrorReply(REJECTED) listing each, and nothing
    changes. Otherwise each owner applies it at its declared apply point (at the
    earliest once ``at_iteration`` iterations are complete) and the reply is
    PatchReply, sent when applied if ``wait`` (up to ``timing.patch_wait_s``).
    """

    TYPE: ClassVar[str] = "control.patch_request"
    MAX_PAYLOAD: ClassVar[int] = SMALL
    changes: dict[str, ParamValue]
    at_iteration: int | None = Field(default=None, ge=0)
    author: str = Field(default="cli", max_length=128)
    wait: bool = True


class ValueChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    old: ParamValue
    new: ParamValue


class JournalEntry(BaseModel):
    """One application of a patch by one service: a line of ``patches.jsonl``."""

    model_config = ConfigDict(extra="forbid")
    patch_id: str
    author: str
    service: str
    changes: dict[str, ValueChange]
    ltime: LogicalTime
    minibatch: int | None = None
    time: float = Field(description="wall clock when applied (informative)")


class PatchReply(Message):
    TYPE: ClassVar[str] = "control.patch_reply"
    patch_id: str
    status: PatchStatus
    applied: list[JournalEntry] = Field(default_factory=list)


class PatchEvent(Message):
    """Controller -> bus (topic ``control.patch``) for every journal entry it writes."""

    TYPE: ClassVar[str] = "control.patch"
    entry: JournalEntry


class StopRequest(Message):
    """Client (or a member that got SIGTERM/SIGINT) -> controller: stop the run cleanly. With
    ``checkpoint`` it first checkpoints at the next iteration boundary. Reply: StopReply once the
    stop has begun."""

    TYPE: ClassVar[str] = "control.stop_request"
    MAX_PAYLOAD: ClassVar[int] = SMALL
    checkpoint: bool = True


class StopReply(Message):
    TYPE: ClassVar[str] = "control.stop_reply"
    checkpoint: str | None = Field(default=None, description="the checkpoint taken before stopping, if any")
    message: str = ""


class HistoryRequest(Message):
    """Client -> controller. Reply: HistoryReply with the run's patch journal."""

    TYPE: ClassVar[str] = "control.history_request"
    MAX_PAYLOAD: ClassVar[int] = SMALL


class HistoryReply(Message):
    TYPE: ClassVar[str] = "control.history_reply"
    MAX_PAYLOAD: ClassVar[int] = LARGE
    entries: list[JournalEntry]
