"""Pauses: open a barrier, wait until every member stands at it, call it off if one never arrives.

The barrier's bookkeeping (who must report, who has) is ``barrier.py``; this is the controller's
side: ``PauseRequest`` -> ``PauseCommand`` to every member -> ``BarrierReached`` from each ->
``PauseReply`` to every waiting request, and ``ResumeRequest`` -> ``ResumeCommand``. The run is
never left half-paused: a barrier not complete in ``timing.pause_timeout_s`` releases everyone.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from dynamicrl.protocol.messages import (
    BarrierReached,
    ErrorCode,
    ErrorReply,
    Message,
    PauseCommand,
    PauseReply,
    PauseRequest,
    ResumeCommand,
    ResumeReply,
    ResumeRequest,
    RunState,
)
from dynamicrl.protocol.sockets import Routed

from .barrier import Barrier
from .defer import DEFER, Defer

if TYPE_CHECKING:
    from .app import Controller


class Pausing:
    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.barrier: Barrier | None = None
        self.waiters: list[str] = []  # request ids awaiting the pause's reply
        self.paused_at = 0.0

    def on_pause(self, routed: Routed[PauseRequest]) -> Message | Defer:
        controller = self.controller
        request_id = routed.received.envelope.id
        if controller.state is RunState.PAUSED:
            assert self.barrier is not None  # paused: the barrier is complete and held until resumed
            return PauseReply(already=True, positions=self.barrier.positions(), latency_s=0.0)
        if controller.state is RunState.PAUSING:
            self.waiters.append(request_id)
            return DEFER
        if controller.state is not RunState.RUNNING:
            return ErrorReply(code=ErrorCode.CONFLICT, message=f"cannot pause: the run is {controller.state.value}")
        members = controller.roster.active()
        self.barrier = Barrier({m.name for m in members}, controller.config.timing.pause_timeout_s)
        self.waiters = [request_id]
        for member in members:
            controller.send(member.route, PauseCommand(pause_id=self.barrier.pause_id))
        controller.set_state(RunState.PAUSING, f"pause requested by {routed.received.envelope.sender}")
        return DEFER

    def on_barrier_reached(self, routed: Routed[BarrierReached]) -> None:
        controller = self.controller
        message: BarrierReached = routed.received.message
        if controller.state is not RunState.PAUSING or self.barrier is None:
            return None
        self.barrier.report(message.pause_id, message.position)
        if self.barrier.complete:
            now = time.monotonic()
            self.paused_at = now
            controller.set_state(RunState.PAUSED, "every service stands at its barrier")
            self.answer_waiters(
                PauseReply(
                    already=False, positions=self.barrier.positions(), latency_s=round(now - self.barrier.started, 6)
                )
            )
        return None

    def call_off_if_expired(self, now: float) -> None:
        """Not everyone reached the barrier in time: release those who did; never half-paused."""
        if self.barrier is None or not self.barrier.expired(now):
            return
        reason = (
            f"pause timed out after {self.barrier.timeout_s:g} s: no barrier report from "
            f"{', '.join(self.barrier.missing())}; the run continues"
        )
        self.release(reason)
        self.answer_waiters(ErrorReply(code=ErrorCode.TIMEOUT, message=reason))

    def on_resume(self, routed: Routed[ResumeRequest]) -> Message:
        controller = self.controller
        if controller.state is RunState.RUNNING:
            return ResumeReply(already=True)
        if controller.state is not RunState.PAUSED:
            return ErrorReply(code=ErrorCode.CONFLICT, message=f"cannot resume: the run is {controller.state.value}")
        paused_s = time.monotonic() - self.paused_at
        self.release(f"resumed by {routed.received.envelope.sender} after {paused_s:.1f} s")
        return ResumeReply(already=False, paused_s=round(paused_s, 3))

    def release(self, reason: str) -> None:
        """Send every member on from the barrier; a checkpoint asked for meanwhile is begun (its next boundary)."""
        controller = self.controller
        assert self.barrier is not None  # pausing or paused: the barrier is open until released
        for member in controller.roster.active():
            controller.send(member.route, ResumeCommand(pause_id=self.barrier.pause_id))
        self.barrier = None
        controller.set_state(RunState.RUNNING, reason)
        controller.checkpointing.take_scheduled()

    def answer_waiters(self, reply: Message) -> None:
        """Answer every request waiting for the pause (it completed, was called off, or the run stops)."""
        for request_id in self.waiters:
            self.controller.answer(request_id, reply)
        self.waiters = []
