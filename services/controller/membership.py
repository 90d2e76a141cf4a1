"""Membership: admitting members, starting the run when all are ready, watching who is alive.

The roster itself (who, which rank, how healthy) is in ``members.py``; this is the controller's
side of the handshake: ``register`` -> ``ready`` -> ``RunStart`` once every expected member is
ready (so nobody's first messages are lost), heartbeats, goodbyes, and the silence that means
a member crashed or hung.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from dynamicrl.protocol.messages import (
    CheckpointPart,
    ErrorCode,
    ErrorReply,
    Goodbye,
    Heartbeat,
    Message,
    Ready,
    RegisterReply,
    RegisterRequest,
    Role,
    RunStart,
    RunState,
)
from dynamicrl.protocol.security import Peer
from dynamicrl.protocol.sockets import Routed

from .members import Member, cut, quote, refuse

if TYPE_CHECKING:
    from .app import Controller

log = logging.getLogger(__name__)

WAITING_NOTE_S = 10.0


class Membership:
    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.started_at = time.monotonic()
        self.waiting_noted_at = self.started_at  # a still-waiting line every WAITING_NOTE_S

    def on_register(self, routed: Routed[RegisterRequest]) -> Message:
        controller = self.controller
        request: RegisterRequest = routed.received.message
        if controller.state in (RunState.STOPPING, RunState.STOPPED):
            return ErrorReply(code=ErrorCode.REJECTED, message="the run is stopping")
        if (
            request.role is Role.ENVRUNNER
            and request.rank is not None
            and isinstance(controller.config.run.envrunners, int)
            and request.rank >= controller.config.run.envrunners
        ):
            return ErrorReply(
                code=ErrorCode.REJECTED,
                message=f"rank {request.rank} but run.envrunners={controller.config.run.envrunners}",
            )
        peer = routed.peer
        if peer is not None and peer != Peer(request.role.value, request.service):
            log.warning("refused %s: its key is %s's", quote(request.service), quote(f"{peer.role}/{peer.name}"))
            return ErrorReply(
                code=ErrorCode.REJECTED,
                message=f"{request.role.value} {quote(request.service)} must register with its own key, "
                f"not {peer.role}/{peer.name}'s",
            )
        try:
            member = controller.roster.admit(request, routed.route, started=controller.state is not RunState.STARTING)
        except ValueError as exc:
            log.warning("refused %s: %s", request.service, exc)
            return ErrorReply(code=ErrorCode.REJECTED, message=str(exc))
        log.debug("registered %s (%s, rank %d, pid %d)", member.name, member.role.value, member.rank, member.pid)
        return RegisterReply(
            run_id=controller.run_id,
            run_dir=str(controller.run_dir),
            rank=member.rank,
            config=controller.config.to_dict(),
            resumed_from=controller.resumed_from,
        )

    def send(self, member: Member, message: Message) -> bool:
        """Send to a member; a failed send marks it unreachable (``Member.dropped``) until it speaks again."""
        sent = self.controller.send(member.route, message)
        if not sent and not member.unreachable:
            member.unreachable = True
            log.warning("%s cannot be reached (its connection is gone or its queue is full)", member.name)
        return sent

    def speaker(self, routed: Routed, named: str) -> Member | None:
        """The member that sent this message, if it is the one ``service`` names; else refused (None)."""
        member = self.controller.roster.sender(routed)
        if member is None:
            refuse(routed, "not from a member of the run")
        elif member.name != named:
            refuse(routed, f"service={quote(named)} but the sender is {member.name}")
            return None
        return member

    def on_ready(self, routed: Routed[Ready]) -> None:
        controller = self.controller
        member = self.speaker(routed, routed.received.message.service)
        if member is None:
            return None
        member.ready = True
        log.debug("%s is ready", member.name)
        if controller.state is RunState.RUNNING:  # late observer (e.g. a second logger)
            self.send(
                member,
                RunStart(
                    envrunners=len(controller.roster.active(Role.ENVRUNNER)),
                    members=[m.name for m in controller.roster.active()],
                ),
            )
        return None

    def on_heartbeat(self, routed: Routed[Heartbeat]) -> None:
        beat: Heartbeat = routed.received.message
        member = self.speaker(routed, beat.service)
        if member is not None:
            member.ltime, member.missed = beat.ltime, beat.missed
            member.cpu_percent, member.rss_mb = beat.cpu_percent, beat.rss_mb
            member.refused_handshakes = beat.refused_handshakes
            if member.role in (Role.LEARNER, Role.ENVRUNNER):
                self.controller.progress.heard(member.name, beat.ltime, time.monotonic())
        return None

    def on_goodbye(self, routed: Routed[Goodbye]) -> None:
        controller = self.controller
        message: Goodbye = routed.received.message
        member = self.speaker(routed, message.service)
        if member is not None:
            member.gone = True
            # a member leaving a stopping run is the stop going as planned: worth a line only otherwise
            level = logging.DEBUG if controller.state in (RunState.STOPPING, RunState.STOPPED) else logging.INFO
            log.log(level, "%s left: %s", member.name, cut(message.reason) if message.reason else "no reason given")
            if controller.pausing.barrier is not None:
                controller.pausing.barrier.forget(member.name)
            if message.finished:  # its goodbye may overtake the learner's TrainingDone
                controller.stopping.begin_stop("training done")
            elif controller.state in (RunState.RUNNING, RunState.PAUSING, RunState.PAUSED) and member.role in (
                Role.LEARNER,
                Role.ENVRUNNER,
            ):
                controller.exit_code = 1
                controller.stopping.begin_stop(f"{member.name} left the run ({cut(message.reason)})")
        return None

    # -- starting (from the poll loop's tick, while the run is starting) ------------------------
    def start_when_ready(self, now: float) -> None:
        """Start the run once nothing is missing; stop it if that takes longer than the start timeout."""
        controller = self.controller
        waiting = self.waiting_for(now)
        if not waiting:
            self.start()
        elif now - self.started_at > controller.config.timing.start_timeout_s:
            controller.exit_code = 1
            controller.stopping.begin_stop(f"start timeout: {waiting}")
        elif now - self.waiting_noted_at >= WAITING_NOTE_S:  # say why nothing happens, e.g. a missing -c envrunner=2
            self.waiting_noted_at = now
            runs = controller.config.run.envrunners
            hint = (
                f" (with honcho: `honcho start -c envrunner={runs}`; `dynamicrl run` starts them all)"
                if "more env-runner" in waiting and runs != "auto"
                else ""
            )
            log.info(
                "waiting for %s%s; the run gives up %.0f s after the controller started",
                waiting,
                hint,
                controller.config.timing.start_timeout_s,
            )

    def waiting_for(self, now: float | None = None) -> str:
        """Why the run cannot start yet ('' when it can)."""
        now = time.monotonic() if now is None else now
        config, roster = self.controller.config, self.controller.roster
        run = config.run
        runners = roster.active(Role.ENVRUNNER)
        if not roster.active(Role.LEARNER):
            return "a learner"
        if not runners:
            return "an env-runner"
        if run.envrunners == "auto":
            if now - (roster.first_envrunner_at or now) < run.join_window_s:
                return "more env-runners (join window open)"
        elif len(runners) < run.envrunners:
            return f"{run.envrunners - len(runners)} more env-runner(s) (run.envrunners={run.envrunners})"
        if config.logger.required and not roster.active(Role.LOGGER):
            return "a logger"
        ranks = sorted(m.rank for m in runners)
        if ranks != list(range(len(runners))):
            return f"env-runner ranks to be 0..{len(runners) - 1} (have {ranks})"
        unready = [m.name for m in roster.active() if not m.ready]
        return f"{', '.join(unready)} to get ready" if unready else ""

    def refuse_start(self, reason: str) -> None:
        self.controller.exit_code = 1
        self.controller.stopping.begin_stop(reason)

    def start(self) -> None:
        """RunStart to every member, with its replayed patches and, on resume, its saved state."""
        controller = self.controller
        patching = controller.patching
        members = [m.name for m in controller.roster.active()]
        runners = len(controller.roster.active(Role.ENVRUNNER))
        unknown = sorted(set(patching.replay) - set(members))
        if unknown:
            return self.refuse_start(
                f"patches={controller.config.patches} names services not in this run: {', '.join(unknown)}"
            )
        patching.expect_replay()
        missing = sorted(set(controller.restore) - set(members))
        if missing:
            return self.refuse_start(
                f"cannot resume: the checkpoint has state for {', '.join(missing)}, "
                f"not in this run (start as many env-runners as the checkpoint has)"
            )
        for member in controller.roster.active():
            part = controller.restore.get(member.name)
            restore = None
            if part is not None:
                assert controller.resumed is not None  # where restore comes from
                restore = CheckpointPart(
                    ckpt_id=controller.resumed.path.name,  # the checkpoint's directory, for members' messages
                    service=part.service,
                    ltime=controller.resumed.ltime,
                    arrays=part.arrays,
                    meta=part.meta,
                )
            self.send(
                member,
                RunStart(
                    envrunners=runners, members=members, restore=restore, patches=patching.replay.get(member.name, [])
                ),
            )
        controller.set_state(RunState.RUNNING, f"{len(members)} members, {runners} env-runner(s)")

    # -- liveness (from the tick, while running, pausing or paused) -------------------------------
    def stop_if_dead(self, now: float) -> None:
        """A learner or env-runner silent for ``timing.dead_after_s`` crashed or hung: the run cannot go on."""
        controller = self.controller
        dead = [
            m
            for m in controller.roster.active()
            if m.role in (Role.LEARNER, Role.ENVRUNNER) and now - m.last_seen > controller.config.timing.dead_after_s
        ]
        if dead:
            controller.exit_code = 1
            controller.stopping.begin_stop(
                ", ".join(f"{m.name} silent for {now - m.last_seen:.0f} s" for m in dead) + " (crashed or hung?)"
            )
