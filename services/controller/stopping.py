"""Stopping: how a run ends, and the orderly shutdown that follows.

Training done, a ``dynamicrl stop`` (after a checkpoint if asked and possible), a signal (after a
checkpoint if possible: Ctrl-C under honcho loses nothing), or a failure (see the callers of
``begin_stop``) all end the same way: ``StopCommand`` to every member
(the logger last), ``stopping``, then ``stopped`` once every member said goodbye and its process
on this host exited, or after ``STOP_GRACE_S``.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from dynamicrl.protocol.messages import (
    ErrorCode,
    ErrorReply,
    Message,
    Role,
    RunState,
    StopCommand,
    StopReply,
    StopRequest,
    TrainingDone,
)
from dynamicrl.protocol.sockets import Routed

from .defer import DEFER, Defer
from .members import refuse

if TYPE_CHECKING:
    from .app import Controller
    from .checkpointing import CheckpointInProgress

log = logging.getLogger(__name__)

STOP_GRACE_S = 4.0  # below honcho's 5 s before it kills


class Stopping:
    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.deadline: float | None = None  # when `stopping` gives up waiting for goodbyes
        self.signals: list[str] = []  # SIGTERM/SIGINT received, acted on by the loop (not in the handler)
        self.signalled = False

    def on_training_done(self, routed: Routed[TrainingDone]) -> None:
        """Only the learner decides that training is done."""
        message: TrainingDone = routed.received.message
        member = self.controller.roster.sender(routed)
        if member is None or member.role is not Role.LEARNER:
            refuse(routed, f"only the learner ends training, not {member.name if member else 'a non-member'}")
            return None
        self.begin_stop(f"training done at iteration {message.ltime.iteration}, {message.ltime.env_step} env steps")
        return None

    def on_stop_request(self, routed: Routed[StopRequest]) -> Message | Defer:
        controller = self.controller
        request: StopRequest = routed.received.message
        sender = routed.received.envelope.sender
        if controller.state in (RunState.STOPPING, RunState.STOPPED):
            return StopReply(message="already stopping")
        if not (request.checkpoint and self.can_checkpoint()):
            why = "" if not request.checkpoint else f" (no checkpoint: the run is {controller.state.value})"
            self.begin_stop(f"stop requested by {sender}")
            return StopReply(message="stopping" + why)
        # answered, and the stop begun, when the checkpoint (this one or one in progress) is done
        checkpoint = self.checkpoint_then_stop(f"stop requested by {sender}")
        if checkpoint is None:
            return StopReply(message="stopping (no checkpoint: the learner cannot be reached)")
        checkpoint.stop_waiters.append(routed.received.envelope.id)
        return DEFER

    def on_signals(self) -> None:
        """The first SIGTERM/SIGINT stops the run after a checkpoint at the next boundary, as
        `dynamicrl stop` does (the members wait for it, see ``Service._on_signal``); a second one,
        or a run that cannot checkpoint (starting, paused), stops it at once."""
        while self.signals:
            name = self.signals.pop(0)
            if self.controller.state in (RunState.STOPPING, RunState.STOPPED):
                continue
            if self.signalled or not self.can_checkpoint():
                self.begin_stop(name)
            else:
                log.info("%s: checkpoint at the next iteration boundary, then stop", name)
                self.checkpoint_then_stop(name)
            self.signalled = True

    def can_checkpoint(self) -> bool:
        """Running, or paused with a checkpoint scheduled (the stop resumes the run for it)."""
        controller = self.controller
        paused_for_one = controller.state is RunState.PAUSED and controller.checkpointing.scheduled
        return (controller.state is RunState.RUNNING or paused_for_one) and bool(controller.roster.active(Role.LEARNER))

    def checkpoint_then_stop(self, reason: str) -> CheckpointInProgress | None:
        """The checkpoint in progress, or a new one, after which the run stops (``finish_checkpoint``);
        None, and the stop begun now, when the learner cannot be reached."""
        checkpoint = self.controller.checkpointing.for_stop(reason)
        if checkpoint is None:
            self.begin_stop(f"{reason} (no checkpoint: the learner cannot be reached)")
            return None
        checkpoint.stop_reason = checkpoint.stop_reason or reason
        return checkpoint

    def begin_stop(self, reason: str) -> None:
        controller = self.controller
        if controller.state in (RunState.STOPPING, RunState.STOPPED):
            return
        if controller.state is RunState.STARTING:  # said once here; the members exit 0 without a word
            reason = f"stopped before the run started: {reason}"
        controller.pausing.answer_waiters(ErrorReply(code=ErrorCode.CONFLICT, message=f"the run is stopping: {reason}"))
        self.deadline = time.monotonic() + STOP_GRACE_S
        # workers first; the logger last so it can drain what the workers published
        order = sorted(controller.roster.active(), key=lambda m: m.role is Role.LOGGER)
        for member in order:
            controller.membership.send(member, StopCommand(reason=reason))
        controller.set_state(RunState.STOPPING, reason)

    def stop_when_gone(self, now: float) -> None:
        """From the tick while stopping: ``stopped`` once every member has left, or at the deadline."""
        controller = self.controller
        # wait for goodbyes, then for local members' processes to exit, so a
        # supervisor (honcho) that reacts to our exit finds nothing to kill
        left = controller.roster.active() or controller.roster.local_pids_alive()
        if not left or now > (self.deadline or now):
            silent = [m.name for m in controller.roster.active()]
            if silent:
                log.warning("stopped without a goodbye from %s", ", ".join(silent))
            controller.set_state(RunState.STOPPED, "all members left")
