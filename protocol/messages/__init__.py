"""Every message type on the wire, in one table.

``MESSAGE_TYPES`` maps the ``TYPE`` tag to its model; the codec accepts exactly
these. Adding a message means adding it here (and to docs/protocol.md).
"""

from .base import ARRAY_DTYPES, ErrorCode, LogicalTime, Message, NDArray, ParamValue, Position, Role
from .control import (
    ErrorReply, Health, HistoryReply, HistoryRequest, JournalEntry, MonitorReport, MonitorReportReply,
    MonitorStatus, ParamsReply, ParamsRequest,
    PatchEvent, PatchReply, PatchRequest, PatchStatus, PauseReply, PauseRequest, ResumeReply,
    ResumeRequest, RunState, RunStateChanged, ServiceStatus, StatusReply, StatusRequest, StopReply,
    StopRequest, Tunable,
    ValueChange,
)
from .checkpoint import CheckpointCommand, CheckpointDone, CheckpointPart, CheckpointReply, CheckpointRequest
from .data import PolicyRequest, PolicyWeights, Rollout
from .membership import (
    ApplyPatch, BarrierReached, Goodbye, Heartbeat, PatchApplied, PauseCommand, Ready, RegisterReply,
    RegisterRequest, ResumeCommand, RunStart, StopCommand, TrainingDone,
)
from .external import ExternalSample, stream_topic
from .metrics import EpisodeStats, TrainMetrics

MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        RegisterRequest, RegisterReply, Ready, RunStart, Heartbeat, Goodbye, StopCommand,
        TrainingDone, PauseCommand, BarrierReached, ResumeCommand, ApplyPatch, PatchApplied,
        ErrorReply, StatusRequest, StatusReply, RunStateChanged, MonitorReport, MonitorReportReply,
        PauseRequest, PauseReply, ResumeRequest, ResumeReply, ParamsRequest, ParamsReply,
        PatchRequest, PatchReply, PatchEvent, HistoryRequest, HistoryReply, StopRequest, StopReply,
        CheckpointRequest, CheckpointReply, CheckpointCommand, CheckpointPart, CheckpointDone,
        PolicyRequest, PolicyWeights, Rollout,
        TrainMetrics, EpisodeStats,
        ExternalSample,
    )
}

__all__ = [
    "StopReply", "StopRequest",
    "CheckpointCommand", "CheckpointDone", "CheckpointPart", "CheckpointReply", "CheckpointRequest",
    "ARRAY_DTYPES",
    "ApplyPatch",
    "BarrierReached",
    "EpisodeStats",
    "ExternalSample",
    "ErrorCode",
    "ErrorReply",
    "Goodbye",
    "Health",
    "Heartbeat",
    "HistoryReply",
    "HistoryRequest",
    "JournalEntry",
    "LogicalTime",
    "MESSAGE_TYPES",
    "Message",
    "MonitorReport",
    "MonitorReportReply",
    "MonitorStatus",
    "NDArray",
    "ParamValue",
    "ParamsReply",
    "ParamsRequest",
    "PatchApplied",
    "PatchEvent",
    "PatchReply",
    "PatchRequest",
    "PatchStatus",
    "PauseCommand",
    "PauseReply",
    "PauseRequest",
    "PolicyRequest",
    "PolicyWeights",
    "Position",
    "Ready",
    "RegisterReply",
    "RegisterRequest",
    "ResumeCommand",
    "ResumeReply",
    "ResumeRequest",
    "Role",
    "Rollout",
    "RunStart",
    "RunState",
    "RunStateChanged",
    "ServiceStatus",
    "StatusReply",
    "StatusRequest",
    "StopCommand",
    "TrainMetrics",
    "TrainingDone",
    "Tunable",
    "ValueChange",
    "stream_topic",
]
