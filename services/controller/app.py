"""The controller: the run's authority, and the host of the bus.

One poll loop, three sockets: the command ROUTER (members and clients), and
the bus XSUB/XPUB it forwards between. It admits members, starts the run
when every expected member is ready (so nobody's first messages are lost),
watches heartbeats, answers ``status``, and stops everyone when training is
done or it is told to stop.
"""

from __future__ import annotations

import logging
import secrets
import signal
import time
from collections import OrderedDict
from pathlib import Path

import zmq

from dynamicrl.config import Config, dump_yaml
from dynamicrl.protocol.codec import ProtocolError, Session, decode
from dynamicrl.protocol.messages import (
    ErrorCode, ErrorReply, Goodbye, Heartbeat, LogicalTime, Message, Ready, RegisterReply,
    RegisterRequest, Role, RunStart, RunState, RunStateChanged, StatusReply, StatusRequest,
    StopCommand, TrainingDone, TrainMetrics,
)
from dynamicrl.protocol.sockets import Publisher, Routed, bind, make_socket, recv_routed, send_routed
from dynamicrl.services.base import setup_logging
from dynamicrl.services.bus.proxy import BusProxy

from .members import Roster

log = logging.getLogger(__name__)

BEACON_S = 0.5
STOP_GRACE_S = 8.0
REPLY_CACHE = 256


def new_run_id(name: str) -> str:
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


class Controller:
    def __init__(self, config: Config, name: str = "controller") -> None:
        self.config = config
        self.name = name
        self.run_id = new_run_id(config.run.name)
        self.run_dir = Path(config.run.dir or Path(config.run.root) / self.run_id)
        self.ctx = zmq.Context()
        self.commands = make_socket(self.ctx, zmq.ROUTER)
        self.command_endpoint = bind(self.commands, config.addresses.controller)
        self.proxy = BusProxy(self.ctx, config.addresses.bus_in, config.addresses.bus_out)
        self.proxy.tap(TrainMetrics.TYPE)
        self.session = Session(name, self.run_id)
        self.bus = Publisher(self.ctx, self.proxy.in_endpoint, name, self.run_id)
        self.roster = Roster()
        self.state = RunState.STARTING
        self.started_at = time.monotonic()
        self.stop_deadline: float | None = None
        self.exit_code = 0
        self.last_metrics: TrainMetrics | None = None
        self.replies: OrderedDict[str, Message] = OrderedDict()
        self.handlers = {
            RegisterRequest: self.on_register,
            Ready: self.on_ready,
            Heartbeat: self.on_heartbeat,
            Goodbye: self.on_goodbye,
            TrainingDone: self.on_training_done,
            StatusRequest: self.on_status,
        }
        self._next_beacon = 0.0
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda s, _f: self.begin_stop(signal.Signals(s).name))

    # -- the loop -------------------------------------------------------------------
    def run(self) -> int:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(dump_yaml(self.config))
        log.info("run %s in %s; commands on %s, bus in %s out %s", self.run_id, self.run_dir,
                 self.command_endpoint, self.proxy.in_endpoint, self.proxy.out_endpoint)
        poller = zmq.Poller()
        poller.register(self.commands, zmq.POLLIN)
        self.proxy.register(poller)
        try:
            while self.state is not RunState.STOPPED:
                events = dict(poller.poll(100))
                for frames in self.proxy.pump(events):
                    self.tap(frames)
                if self.commands in events:
                    while self.commands.poll(0):
                        routed = recv_routed(self.commands, self.session)
                        if routed is not None:
                            self.handle(routed)
                self.tick()
        finally:
            self.close()
        return self.exit_code

    def handle(self, routed: Routed) -> None:
        envelope, message = routed.received.envelope, routed.received.message
        cached = self.replies.get(envelope.id)
        if cached is not None:  # a retried request: same answer, not a second action
            send_routed(self.commands, self.session, routed.route, cached, parent=envelope.id)
            return
        self.roster.seen(envelope.sender)
        handler = self.handlers.get(type(message))
        try:
            if handler is None:
                raise LookupError(f"the controller does not handle {message.TYPE}")
            reply = handler(routed)
        except LookupError as exc:
            reply = ErrorReply(code=ErrorCode.UNEXPECTED, message=str(exc))
        except Exception as exc:  # a failing handler must not take the run down
            log.exception("handler for %s failed", message.TYPE)
            reply = ErrorReply(code=ErrorCode.INTERNAL, message=f"{type(exc).__name__}: {exc}")
        if reply is not None:
            self.replies[envelope.id] = reply
            while len(self.replies) > REPLY_CACHE:
                self.replies.popitem(last=False)
            send_routed(self.commands, self.session, routed.route, reply, parent=envelope.id)

    def tap(self, frames: list) -> None:
        """Keep the latest train metrics passing through the bus (for status)."""
        if frames[0].bytes != TrainMetrics.TYPE.encode():
            return
        try:
            self.last_metrics = decode(frames).message
        except ProtocolError:
            pass  # subscribers log bad bus messages; the proxy just forwards them

    def tick(self) -> None:
        now = time.monotonic()
        if now >= self._next_beacon:
            self._next_beacon = now + BEACON_S
            self.publish_state()
        if self.state is RunState.STARTING:
            if self.can_start(now):
                self.start()
            elif now - self.started_at > self.config.timing.start_timeout_s:
                self.exit_code = 1
                self.begin_stop(f"start timeout: {self.waiting_for()}")
        elif self.state is RunState.RUNNING:
            dead = [m for m in self.roster.active() if m.role in (Role.LEARNER, Role.ENVRUNNER)
                    and now - m.last_seen > self.config.timing.dead_after_s]
            if dead:
                self.exit_code = 1
                self.begin_stop(", ".join(f"{m.name} silent for {now - m.last_seen:.0f} s" for m in dead)
                                + " (crashed or hung?)")
        elif self.state is RunState.STOPPING:
            # wait for goodbyes, then for local members' processes to exit, so a
            # supervisor (honcho) that reacts to our exit finds nothing to kill
            left = self.roster.active() or self.roster.local_pids_alive()
            if not left or now > (self.stop_deadline or now):
                left = [m.name for m in self.roster.active()]
                if left:
                    log.warning("stopped without a goodbye from %s", ", ".join(left))
                self.set_state(RunState.STOPPED, "all members left")

    # -- starting -------------------------------------------------------------------
    def can_start(self, now: float) -> bool:
        return not self.waiting_for(now)

    def waiting_for(self, now: float | None = None) -> str:
        """Why the run cannot start yet ('' when it can)."""
        now = time.monotonic() if now is None else now
        run = self.config.run
        runners = self.roster.active(Role.ENVRUNNER)
        if not self.roster.active(Role.LEARNER):
            return "a learner"
        if not runners:
            return "an env-runner"
        if run.envrunners == "auto":
            if now - (self.roster.first_envrunner_at or now) < run.join_window_s:
                return "more env-runners (join window open)"
        elif len(runners) < run.envrunners:
            return f"{run.envrunners - len(runners)} more env-runner(s)"
        if self.config.logger.required and not self.roster.active(Role.LOGGER):
            return "a logger"
        ranks = sorted(m.rank for m in runners)
        if ranks != list(range(len(runners))):
            return f"env-runner ranks to be 0..{len(runners) - 1} (have {ranks})"
        unready = [m.name for m in self.roster.active() if not m.ready]
        return f"{', '.join(unready)} to get ready" if unready else ""

    def start(self) -> None:
        members = [m.name for m in self.roster.active()]
        runners = len(self.roster.active(Role.ENVRUNNER))
        for member in self.roster.active():
            self.send(member.route, RunStart(envrunners=runners, members=members))
        self.set_state(RunState.RUNNING, f"{len(members)} members, {runners} env-runner(s)")

    # -- handlers -------------------------------------------------------------------
    def on_register(self, routed: Routed) -> Message:
        request: RegisterRequest = routed.received.message
        if self.state in (RunState.STOPPING, RunState.STOPPED):
            return ErrorReply(code=ErrorCode.REJECTED, message="the run is stopping")
        if (request.role is Role.ENVRUNNER and request.rank is not None
                and isinstance(self.config.run.envrunners, int)
                and request.rank >= self.config.run.envrunners):
            return ErrorReply(code=ErrorCode.REJECTED,
                              message=f"rank {request.rank} but run.envrunners={self.config.run.envrunners}")
        try:
            member = self.roster.admit(request, routed.route, started=self.state is not RunState.STARTING)
        except ValueError as exc:
            log.warning("refused %s: %s", request.service, exc)
            return ErrorReply(code=ErrorCode.REJECTED, message=str(exc))
        log.info("registered %s (%s, rank %d, pid %d)", member.name, member.role.value, member.rank, member.pid)
        return RegisterReply(run_id=self.run_id, run_dir=str(self.run_dir), rank=member.rank,
                             config=self.config.to_dict())

    def on_ready(self, routed: Routed) -> None:
        member = self.roster.seen(routed.received.message.service)
        if member is None:
            return None
        member.ready = True
        log.info("%s is ready", member.name)
        if self.state is RunState.RUNNING:  # late observer (e.g. a second logger)
            self.send(member.route, RunStart(envrunners=len(self.roster.active(Role.ENVRUNNER)),
                                             members=[m.name for m in self.roster.active()]))
        return None

    def on_heartbeat(self, routed: Routed) -> None:
        return None  # handle() already refreshed last_seen

    def on_goodbye(self, routed: Routed) -> None:
        message: Goodbye = routed.received.message
        member = self.roster.members.get(message.service)
        if member is not None:
            member.gone = True
            log.info("%s left: %s", member.name, message.reason or "no reason given")
            if self.state is RunState.RUNNING and member.role in (Role.LEARNER, Role.ENVRUNNER):
                self.exit_code = 1
                self.begin_stop(f"{member.name} left the run ({message.reason})")
        return None

    def on_training_done(self, routed: Routed) -> None:
        message: TrainingDone = routed.received.message
        log.info("training done at iteration %d, %d env steps", message.ltime.iteration, message.ltime.env_step)
        self.begin_stop("training done")
        return None

    def on_status(self, routed: Routed) -> Message:
        now = time.monotonic()
        metrics = self.last_metrics
        return StatusReply(
            run_id=self.run_id, run_dir=str(self.run_dir), state=self.state,
            services=[m.status(now, self.config.timing.missing_after_s)
                      for m in sorted(self.roster.members.values(), key=lambda m: (m.role.value, m.rank, m.name))],
            ltime=LogicalTime(iteration=metrics.iteration, env_step=metrics.env_steps) if metrics else None,
            sps=metrics.sps if metrics else None,
            return_mean=metrics.return_mean if metrics else None,
            total_env_steps=self.config.run.total_env_steps,
        )

    # -- stopping -------------------------------------------------------------------
    def begin_stop(self, reason: str) -> None:
        if self.state in (RunState.STOPPING, RunState.STOPPED):
            return
        log.info("stopping the run: %s", reason)
        self.stop_deadline = time.monotonic() + STOP_GRACE_S
        # workers first; the logger last so it can drain what the workers published
        order = sorted(self.roster.active(), key=lambda m: m.role is Role.LOGGER)
        for member in order:
            self.send(member.route, StopCommand(reason=reason))
        self.set_state(RunState.STOPPING, reason)

    # -- plumbing -------------------------------------------------------------------
    def set_state(self, state: RunState, reason: str) -> None:
        log.info("state %s -> %s (%s)", self.state.value, state.value, reason)
        self.state = state
        self.publish_state(reason)

    def publish_state(self, reason: str = "") -> None:
        self.bus.publish(RunStateChanged(state=self.state, reason=reason))

    def send(self, route: list[bytes], message: Message) -> None:
        send_routed(self.commands, self.session, route, message)

    def close(self) -> None:
        self.bus.close()
        self.proxy.close()
        self.commands.close()
        self.ctx.term()


def main(config: Config) -> int:
    setup_logging("controller")
    return Controller(config).run()
