"""Pauses: open a barrier, wait until every member stands at it, call it off if one never arrives.

The barrier's bookkeeping (who must report, who has) is ``barrier.py``; this is the controller's
side: ``PauseRequest`` -> ``PauseCommand`` to every member -> ``BarrierReached`` from each ->
``PauseReply`` to every waiting request, and ``ResumeRequest`` -> ``ResumeCommand``. The run is
never left half-paused: a barrier not complete in ``timing.pause_timeout_s`` releases everyone.

Previews: with a previewer in the run (and ``video.pause_previews``), the env-runners send copies
of their sub-envs' simulator states with their reports, and the complete barrier hands them to the
previewer (``RenderPreviews``) after the reply is sent: the pause never waits for the drawing, nor
for the previewer at all (it is not held).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from dynamicrl.protocol.messages import (
    BarrierReached,
    ErrorCode,
    ErrorReply,
    Message,
    PauseCommand,
    PauseReply,
    PauseRequest,
    RenderPreviews,
    ResumeCommand,
    ResumeReply,
    ResumeRequest,
    Role,
    RunState,
)
from dynamicrl.protocol.sockets import Routed

from .barrier import Barrier
from .defer import DEFER, Defer
from .members import quote, refuse

if TYPE_CHECKING:
    from .app import Controller
    from .members import Member


class Pausing:
    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.barrier: Barrier | None = None
        self.waiters: list[str] = []  # request ids awaiting the pause's reply
        self.paused_at = 0.0
        self.count: int | None = None  # the run's pauses so far (None: not counted yet)
        self.previews = 0  # scenes handed to the previewer at the latest pause

    def on_pause(self, routed: Routed[PauseRequest]) -> Message | Defer:
        controller = self.controller
        request_id = routed.received.envelope.id
        if controller.state is RunState.PAUSED:
            assert self.barrier is not None  # paused: the barrier is complete and held until resumed
            positions, pause = self.barrier.positions(), self.count or 0
            return PauseReply(already=True, positions=positions, latency_s=0.0, pause=pause, previews=self.previews)
        if controller.state is RunState.PAUSING:
            self.waiters.append(request_id)
            return DEFER
        if controller.state is not RunState.RUNNING:
            return ErrorReply(code=ErrorCode.CONFLICT, message=f"cannot pause: the run is {controller.state.value}")
        members = self.held()
        self.barrier = Barrier({m.name for m in members}, controller.config.timing.pause_timeout_s)
        self.waiters = [request_id]
        scenes = controller.config.video.pause_previews and bool(controller.roster.active(Role.PREVIEWER))
        for member in members:
            controller.membership.send(member, PauseCommand(pause_id=self.barrier.pause_id, scenes=scenes))
        controller.set_state(RunState.PAUSING, f"pause requested by {routed.received.envelope.sender}")
        return DEFER

    def on_barrier_reached(self, routed: Routed[BarrierReached]) -> None:
        """Counted only from a member the pause in progress waits for, about itself; a late report (a pause
        called off, or a second report while it stands) is ignored, anything else is refused."""
        controller = self.controller
        message: BarrierReached = routed.received.message
        member = controller.roster.sender(routed)
        if member is None:
            refuse(routed, "not from a member of the run")
        elif message.position.service != member.name:
            refuse(routed, f"position.service={quote(message.position.service)} but the sender is {member.name}")
        elif self.barrier is not None and message.pause_id == self.barrier.pause_id:
            if member.name not in self.barrier.expected:
                refuse(routed, f"{member.name} is not held by pause {self.barrier.pause_id}")
            elif controller.state is RunState.PAUSING:
                self.barrier.report(message.pause_id, message.position, message.scenes)
                self.complete_if_done()
        return None

    def complete_if_done(self) -> None:
        """Every member the barrier waits for has reported: paused, and every waiting request answered."""
        controller = self.controller
        assert self.barrier is not None  # pausing: the barrier is open
        if self.barrier.complete:
            now = time.monotonic()
            self.paused_at = now
            self.count = self.next_pause_number() if self.count is None else self.count + 1
            scenes, previewers = self.barrier.all_scenes(), controller.roster.active(Role.PREVIEWER)
            self.previews = len(scenes) if previewers else 0
            controller.set_state(RunState.PAUSED, "every service stands at its barrier")
            self.answer_waiters(
                PauseReply(
                    already=False,
                    positions=self.barrier.positions(),
                    latency_s=round(now - self.barrier.started, 6),
                    pause=self.count,
                    previews=self.previews,
                )
            )
            if self.previews:
                ltime = max((p.ltime for p in self.barrier.positions()), key=lambda t: (t.iteration, t.env_step))
                controller.membership.send(previewers[0], RenderPreviews(pause=self.count, ltime=ltime, scenes=scenes))

    def held(self) -> list[Member]:
        """The members a pause holds: all but the previewer, which advances nothing and may be mid-frame
        (or drawing the previews) at its low priority: a pause never waits for it; and but those that are
        gone, or as good as (``Member.dropped``: e.g. a logger that never got ready)."""
        controller = self.controller
        counted = controller.roster.counted(time.monotonic(), controller.config.timing.missing_after_s)
        return [m for m in counted if m.role is not Role.PREVIEWER]

    def next_pause_number(self) -> int:
        """1 in a new run; after a resume-run, one past the previews already in the run directory."""
        previews = Path(self.controller.run_dir) / "previews"
        numbers = [int(p.name.removeprefix("pause-")) for p in previews.glob("pause-*") if p.name[6:].isdigit()]
        return max(numbers, default=0) + 1

    def call_off_if_expired(self, now: float) -> None:
        """Members that are gone meanwhile (``Member.dropped``) are no longer waited for; if the others
        did not all reach the barrier in time, release those who did: never half-paused."""
        if self.barrier is None:
            return
        roster, missing_after_s = self.controller.roster, self.controller.config.timing.missing_after_s
        for name in self.barrier.missing():
            member = roster.members.get(name)
            if member is None or member.dropped(now, missing_after_s):
                self.barrier.forget(name)
        self.complete_if_done()
        if self.controller.state is not RunState.PAUSING or not self.barrier.expired(now):
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
        for member in controller.roster.active():  # a dropped member too: it may stand there after all
            if member.role is not Role.PREVIEWER:
                controller.membership.send(member, ResumeCommand(pause_id=self.barrier.pause_id))
        self.barrier = None
        controller.set_state(RunState.RUNNING, reason)
        controller.checkpointing.take_scheduled()

    def answer_waiters(self, reply: Message) -> None:
        """Answer every request waiting for the pause (it completed, was called off, or the run stops)."""
        for request_id in self.waiters:
            self.controller.answer(request_id, reply)
        self.waiters = []
