"""Stopping: how a run ends, and the orderly shutdown that follows.

Training done, a ``dynamicrl stop`` (after a checkpoint if asked and possible), a signal, or a
failure (see the callers of ``begin_stop``) all end the same way: ``StopCommand`` to every member
(the logger last), ``stopping``, then ``stopped`` once every member said goodbye and its process
on this host exited, or after ``STOP_GRACE_S``.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from dynamicrl.protocol.messages import (
    ErrorCode, ErrorReply, Message, Role, RunState, StopCommand, StopReply, StopRequest, TrainingDone,
)
from dynamicrl.protocol.sockets import Routed

from .defer import DEFER

if TYPE_CHECKING:
    from .app import Controller

log = logging.getLogger(__name__)

STOP_GRACE_S = 4.0  # below honcho's 5 s before it kills


class Stopping:
    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.deadline: float | None = None  # when `stopping` gives up waiting for goodbyes

    def on_training_done(self, routed: Routed) -> None:
        message: TrainingDone = routed.received.message
        log.info("training done at iteration %d, %d env steps", message.ltime.iteration, message.ltime.env_step)
        self.begin_stop("training done")
        return None

    def on_stop_request(self, routed: Routed) -> Message | object:
        controller = self.controller
        request: StopRequest = routed.received.message
        sender = routed.received.envelope.sender
        if controller.state in (RunState.STOPPING, RunState.STOPPED):
            return StopReply(message="already stopping")
        can_checkpoint = (request.checkpoint and controller.state is RunState.RUNNING
                          and controller.roster.active(Role.LEARNER))
        if not can_checkpoint:
            self.begin_stop(f"stop requested by {sender}")
            why = "" if not request.checkpoint else f" (no checkpoint: the run is {controller.state.value})"
            return StopReply(message="stopping" + why)
        # answered, and the stop begun, when the checkpoint (this one or one in progress) is done
        checkpoint = controller.checkpointing.checkpoint or controller.checkpointing.ask_learner()
        checkpoint.stop_waiters.append(routed.received.envelope.id)
        return DEFER

    def begin_stop(self, reason: str) -> None:
        controller = self.controller
        if controller.state in (RunState.STOPPING, RunState.STOPPED):
            return
        log.info("stopping the run: %s", reason)
        controller.pausing.answer_waiters(ErrorReply(code=ErrorCode.CONFLICT, message=f"the run is stopping: {reason}"))
        self.deadline = time.monotonic() + STOP_GRACE_S
        # workers first; the logger last so it can drain what the workers published
        order = sorted(controller.roster.active(), key=lambda m: m.role is Role.LOGGER)
        for member in order:
            controller.send(member.route, StopCommand(reason=reason))
        controller.set_state(RunState.STOPPING, reason)

    def stop_when_gone(self, now: float) -> None:
        """From the tick while stopping: ``stopped`` once every member has left, or at the deadline."""
        controller = self.controller
        # wait for goodbyes, then for local members' processes to exit, so a
        # supervisor (honcho) that reacts to our exit finds nothing to kill
        left = controller.roster.active() or controller.roster.local_pids_alive()
        if not left or now > (self.deadline or now):
            left = [m.name for m in controller.roster.active()]
            if left:
                log.warning("stopped without a goodbye from %s", ", ".join(left))
            controller.set_state(RunState.STOPPED, "all members left")
