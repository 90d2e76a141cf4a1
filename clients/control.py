"""ControlClient: talk to a running controller from Python (the CLI is built on it)."""

from __future__ import annotations

import os
from typing import overload

import zmq

from dynamicrl.protocol.messages import (
    CheckpointReply,
    CheckpointRequest,
    ErrorReply,
    HistoryReply,
    HistoryRequest,
    Message,
    ParamsReply,
    ParamsRequest,
    PatchReply,
    PatchRequest,
    PauseReply,
    PauseRequest,
    ResumeReply,
    ResumeRequest,
    StatusReply,
    StatusRequest,
    StopReply,
    StopRequest,
)
from dynamicrl.protocol.sockets import Requester, RequestTimeout


class ControlError(RuntimeError):
    """The controller answered with an error; the message says why. Do not retry blindly."""


class ControlClient:
    def __init__(self, endpoint: str, *, timeout_s: float = 2.0, retries: int = 1) -> None:
        self.ctx = zmq.Context()
        self.requester = Requester(self.ctx, endpoint, f"client.{os.getpid()}", timeout_s=timeout_s, retries=retries)

    # the reply each request gets from the controller (an ErrorReply is raised as ControlError)
    @overload
    def call(self, request: StatusRequest) -> StatusReply: ...
    @overload
    def call(self, request: PauseRequest) -> PauseReply: ...
    @overload
    def call(self, request: ResumeRequest) -> ResumeReply: ...
    @overload
    def call(self, request: ParamsRequest) -> ParamsReply: ...
    @overload
    def call(self, request: PatchRequest) -> PatchReply: ...
    @overload
    def call(self, request: HistoryRequest) -> HistoryReply: ...
    @overload
    def call(self, request: CheckpointRequest) -> CheckpointReply: ...
    @overload
    def call(self, request: StopRequest) -> StopReply: ...
    @overload
    def call(self, request: Message) -> Message: ...
    def call(self, request: Message) -> Message:
        """Send and wait; raises RequestTimeout (no controller) or ControlError (refused)."""
        reply = self.requester.request(request)
        if isinstance(reply, ErrorReply):
            raise ControlError(f"{reply.code.value}: {reply.message}")
        return reply

    def status(self) -> StatusReply:
        return self.call(StatusRequest())

    def close(self) -> None:
        self.requester.close()
        self.ctx.term()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


__all__ = ["ControlClient", "ControlError", "RequestTimeout"]
