"""Every message type on the wire, in one table.

``MESSAGE_TYPES`` maps the ``TYPE`` tag to its model; the codec accepts exactly
these. Adding a message means adding it here (and to docs/protocol.md).
"""

from .base import ARRAY_DTYPES, ErrorCode, LogicalTime, Message, NDArray, Role
from .control import (
    ErrorReply, Health, RunState, RunStateChanged, ServiceStatus, StatusReply, StatusRequest,
)
from .data import PolicyRequest, PolicyWeights, Rollout
from .membership import (
    Goodbye, Heartbeat, Ready, RegisterReply, RegisterRequest, RunStart, StopCommand, TrainingDone,
)
from .metrics import EpisodeStats, TrainMetrics

MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        RegisterRequest, RegisterReply, Ready, RunStart, Heartbeat, Goodbye, StopCommand,
        TrainingDone,
        ErrorReply, StatusRequest, StatusReply, RunStateChanged,
        PolicyRequest, PolicyWeights, Rollout,
        TrainMetrics, EpisodeStats,
    )
}

__all__ = [
    "ARRAY_DTYPES", "MESSAGE_TYPES", "EpisodeStats", "ErrorCode", "ErrorReply", "Goodbye",
    "Health", "Heartbeat", "LogicalTime", "Message", "NDArray", "PolicyRequest",
    "PolicyWeights", "Ready", "RegisterReply", "RegisterRequest", "Role", "Rollout", "RunStart",
    "RunState", "RunStateChanged", "ServiceStatus", "StatusReply", "StatusRequest",
    "StopCommand", "TrainMetrics", "TrainingDone",
]
