"""ControlClient: talk to a running controller from Python (the CLI is built on it)."""

from __future__ import annotations

import os
from typing import overload

import zmq

from dynamicrl.core.settings import Config
from dynamicrl.protocol import security
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
    """The controller answered with an error; the message says why. Do not retry blindly.

    ``reply`` is the controller's ErrorReply: its ``code``, ``message`` and, for a rejected patch,
    ``problems`` by hyperparameter name."""

    def __init__(self, reply: ErrorReply) -> None:
        super().__init__(f"{reply.code.value}: {reply.message}")
        self.reply = reply


class ControlClient:
    def __init__(
        self, endpoint: str, *, timeout_s: float = 2.0, retries: int = 1, ctx: zmq.Context | None = None
    ) -> None:
        """``ctx`` says whose keys to use (:func:`dynamicrl.protocol.security.context`); default: this
        user's, as a client."""
        self._own_ctx = ctx is None
        self.ctx = security.context() if ctx is None else ctx
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
            raise ControlError(reply)
        return reply

    def status(self) -> StatusReply:
        return self.call(StatusRequest())

    def close(self) -> None:
        self.requester.close()
        if self._own_ctx:
            self.ctx.term()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


def reply_within_s(config: Config, request: Message) -> float:
    """How much longer than ``timing.request_timeout_s`` the controller may take to answer ``request``:
    a pause waits for every barrier, a waited-for patch for its apply points, a checkpoint or a
    stop for the files to be written."""
    if isinstance(request, PauseRequest):
        return config.timing.pause_timeout_s
    if isinstance(request, PatchRequest):
        return config.timing.patch_wait_s if request.wait else 0.0
    if isinstance(request, (CheckpointRequest, StopRequest)):
        return config.checkpoint.timeout_s
    return 0.0


def call(config: Config, request: Message, timeout_s: float | None = None) -> Message:
    """One request to the run's controller, given as long as ``reply_within_s`` says.

    A request that may take long is preceded by a quick status call, so that a controller that is
    not there is found out in ``timeout_s`` (default ``timing.request_timeout_s``), not after the
    long wait. Raises RequestTimeout (nobody answered) or ControlError (refused)."""
    endpoint = config.addresses.controller
    base_s = timeout_s or config.timing.request_timeout_s
    extra_s = reply_within_s(config, request)
    ctx = security.context_for(config.security)
    try:
        if extra_s:
            with ControlClient(endpoint, timeout_s=base_s, ctx=ctx) as probe:
                probe.call(StatusRequest())
        with ControlClient(endpoint, timeout_s=base_s + extra_s, ctx=ctx) as client:
            return client.call(request)
    finally:
        ctx.term()


__all__ = ["ControlClient", "ControlError", "RequestTimeout", "call", "reply_within_s"]
