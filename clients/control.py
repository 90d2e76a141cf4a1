"""ControlClient: talk to a running controller from Python (the CLI is built on it)."""

from __future__ import annotations

import os

import zmq

from dynamicrl.protocol.messages import ErrorReply, Message, StatusReply, StatusRequest
from dynamicrl.protocol.sockets import Requester, RequestTimeout


class ControlError(RuntimeError):
    """The controller answered with an error; the message says why. Do not retry blindly."""


class ControlClient:
    def __init__(self, endpoint: str, *, timeout_s: float = 2.0, retries: int = 1) -> None:
        self.ctx = zmq.Context()
        self.requester = Requester(self.ctx, endpoint, f"client.{os.getpid()}", timeout_s=timeout_s, retries=retries)

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

    def __enter__(self) -> "ControlClient":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


__all__ = ["ControlClient", "ControlError", "RequestTimeout"]
