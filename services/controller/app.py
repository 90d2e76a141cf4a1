"""The controller: the run's authority, and the host of the bus.

One poll loop, three sockets: the command ROUTER (members and clients), and
the bus XSUB/XPUB it forwards between. It admits members, starts the run
when every expected member is ready (so nobody's first messages are lost),
watches heartbeats, holds pause barriers, validates and journals patches,
answers ``status``/``params``/``history``, and stops everyone when training is
done or it is told to stop.

Wiring (who sends what to whom):

  client  --Status/Pause/Resume/Params/Patch/History/Checkpoint/StopRequest-->  controller  (REQ -> ROUTER)
  monitor  --MonitorReport-->  controller  (REQ -> ROUTER; what it lost on the bus, for status)
  member  --Register/Ready/Heartbeat/BarrierReached/PatchApplied/CheckpointPart/TrainingDone/Goodbye-->  controller
  controller  --RunStart/PauseCommand/ResumeCommand/ApplyPatch/CheckpointCommand/CheckpointDone/StopCommand-->
              member  (ROUTER -> DEALER)
  controller  --control.state, control.patch-->  bus

This file is the service loop: construction, the poll loop and its timers (``tick``), the
dispatch table, and sending and answering (retried and deferred requests included). The
handlers live in one module per concern, each a small class holding a reference to the
controller: ``membership.py`` (register, ready, heartbeats, goodbyes, RunStart, dead members),
``pausing.py``, ``patching.py``, ``checkpointing.py`` (also reading a checkpoint back on
resume), ``stopping.py`` and ``reports.py`` (status, params, history, monitor reports). The
data they keep is in ``members.py``, ``barrier.py``, ``patches.py``, ``checkpoints.py`` (the
files), ``monitors.py`` and ``progress.py`` (whether a running run advances).
"""

from __future__ import annotations

import logging
import secrets
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import zmq

from dynamicrl.core import checkpoints
from dynamicrl.core.process_stats import release_free_memory
from dynamicrl.core.settings import Config, dump_yaml
from dynamicrl.protocol import security
from dynamicrl.protocol.codec import ProtocolError, Session, decode
from dynamicrl.protocol.messages import (
    BarrierReached,
    CheckpointPart,
    CheckpointRequest,
    ErrorCode,
    ErrorReply,
    Goodbye,
    Heartbeat,
    HistoryRequest,
    LogicalTime,
    Message,
    MonitorReport,
    ParamsRequest,
    PatchApplied,
    PatchRequest,
    PauseRequest,
    Ready,
    RegisterRequest,
    ResumeRequest,
    RunState,
    RunStateChanged,
    SavedCheckpoint,
    StatusRequest,
    StopRequest,
    TrainingDone,
    TrainMetrics,
)
from dynamicrl.protocol.sockets import Publisher, Routed, bind, make_socket, recv_routed, send_routed
from dynamicrl.services.base import StartupError, setup_logging
from dynamicrl.services.controller.bus import BusProxy

from .checkpointing import Checkpointing, Resume, load_resume
from .defer import DEFER, Defer
from .members import Roster
from .membership import Membership
from .monitors import Monitors
from .patching import Patching
from .pausing import Pausing
from .progress import Progress
from .replies import IdReused, Kept, Pending, Replies
from .reports import Reports
from .stopping import Stopping

log = logging.getLogger(__name__)

BEACON_S = 0.5
TRIM_S = 5.0


def new_run_id(name: str) -> str:
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


class Controller:
    def __init__(self, config: Config, name: str = "controller") -> None:
        self.config = config
        self.resumed: Resume | None = None  # the checkpoint it resumes from: each member's state, for its RunStart
        self.last_checkpoint: SavedCheckpoint | None = None  # for status
        journal_entries = None
        if config.resume:  # config, run id and run dir come from the checkpoint (read and verified once)
            self.resumed = load_resume(Path(config.resume), config)
            self.config, self.run_id, self.run_dir = self.resumed.config, self.resumed.run_id, self.resumed.run_dir
            journal_entries = self.resumed.journal_entries
        else:
            self.run_id = new_run_id(config.run.name)
            self.run_dir = Path(config.run.dir or Path(config.run.root) / self.run_id)
        self.ctx = security.context_for(config.security, "controller", name)
        self.security = cast(security.Security, self.ctx.security)  # its keys, and what they refused
        self.commands = make_socket(self.ctx, zmq.ROUTER)
        self.command_endpoint = bind(self.commands, config.addresses.controller)
        self.proxy = BusProxy(self.ctx, config.addresses.bus_in, config.addresses.bus_out)
        self.proxy.tap(TrainMetrics.TYPE)
        self.session = Session(name, self.run_id)
        self.bus = Publisher(self.ctx, self.proxy.in_endpoint, name, self.run_id)
        self.roster = Roster()
        self.monitors = Monitors(config.timing.monitor_expiry_s)
        self.state = RunState.STARTING
        self.exit_code = 0
        self.last_metrics: TrainMetrics | None = None
        self.replies = Replies()  # for retries: each request is acted on once
        self.membership = Membership(self)
        self.pausing = Pausing(self)
        self.patching = Patching(self, journal_entries)
        self.checkpointing = Checkpointing(self)
        self.stopping = Stopping(self)
        self.reports = Reports(self)
        self.progress = Progress(self.config.timing.stall_after_s)
        self.handlers: dict[type[Message], Callable[[Routed[Any]], Message | Defer | None]] = {
            RegisterRequest: self.membership.on_register,
            Ready: self.membership.on_ready,
            Heartbeat: self.membership.on_heartbeat,
            Goodbye: self.membership.on_goodbye,
            PauseRequest: self.pausing.on_pause,
            BarrierReached: self.pausing.on_barrier_reached,
            ResumeRequest: self.pausing.on_resume,
            PatchRequest: self.patching.on_patch,
            PatchApplied: self.patching.on_patch_applied,
            CheckpointRequest: self.checkpointing.on_checkpoint,
            CheckpointPart: self.checkpointing.on_checkpoint_part,
            TrainingDone: self.stopping.on_training_done,
            StopRequest: self.stopping.on_stop_request,
            StatusRequest: self.reports.on_status,
            ParamsRequest: self.reports.on_params,
            HistoryRequest: self.reports.on_history,
            MonitorReport: self.reports.on_monitor_report,
        }
        self._next_beacon = 0.0
        self._next_sys = 0.0
        self._next_trim = 0.0
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda s, _f: self.stopping.signals.append(signal.Signals(s).name))

    # -- the loop -------------------------------------------------------------------
    @property
    def restore(self) -> dict[str, checkpoints.Part]:
        """On resume: each member's saved state, by service (empty for a fresh run)."""
        return self.resumed.parts if self.resumed is not None else {}

    @property
    def resumed_from(self) -> LogicalTime | None:
        return self.resumed.ltime if self.resumed is not None else None

    def run(self) -> int:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(dump_yaml(self.config))
        log.info(
            "run %s in %s; commands on %s, bus in %s out %s",
            self.run_id,
            self.run_dir,
            self.command_endpoint,
            self.proxy.in_endpoint,
            self.proxy.out_endpoint,
        )
        if not self.security.curve:
            log.warning(
                "security.curve is off: any process on this machine, of any user, can connect to this run and "
                "control it (for debugging only)"
            )
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
            self.proxy.drain()  # forward the final control.state (stopped) before the sockets close
        finally:
            self.close()
        return self.exit_code

    def handle(self, routed: Routed) -> None:
        envelope, message = routed.received.envelope, routed.received.message
        try:
            known = self.replies.known(envelope.id, message)
        except IdReused as exc:
            send_routed(
                self.commands,
                self.session,
                routed.route,
                ErrorReply(code=ErrorCode.BAD_MESSAGE, message=str(exc)),
                parent=envelope.id,
            )
            return
        if isinstance(known, Kept):  # a retried request: same answer, not a second action
            send_routed(self.commands, self.session, routed.route, known.reply, parent=envelope.id)
            return
        if isinstance(known, Pending):  # retried while we still work on it: answer both
            known.routes.append(routed.route)
            return
        self.roster.seen(routed)  # by its connection, not the name it claims
        handler = self.handlers.get(type(message))
        if handler is None:  # answered, not kept: nothing was done, and a retry gets the same answer anyway
            refusal = ErrorReply(code=ErrorCode.UNEXPECTED, message=f"the controller does not handle {message.TYPE}")
            send_routed(self.commands, self.session, routed.route, refusal, parent=envelope.id)
            return
        try:
            reply = handler(routed)
        except LookupError as exc:
            reply = ErrorReply(code=ErrorCode.UNEXPECTED, message=str(exc))
        except Exception as exc:  # a failing handler must not take the run down
            log.exception("handler for %s failed", message.TYPE)
            reply = ErrorReply(code=ErrorCode.INTERNAL, message=f"{type(exc).__name__}: {exc}")
        if reply is not None:
            self.replies.begin(envelope.id, message, routed.route)
        if reply is not None and reply is not DEFER:
            self.answer(envelope.id, reply)

    def answer(self, request_id: str, reply: Message) -> None:
        """Send the reply to a request (to every route that asked) and remember it for retries."""
        for route in self.replies.answered(request_id, reply):
            send_routed(self.commands, self.session, route, reply, parent=request_id)

    def tap(self, frames: list) -> None:
        """Keep the latest train metrics passing through the bus (for status)."""
        if frames[0].bytes != TrainMetrics.TYPE.encode():
            return
        try:
            self.last_metrics = cast(TrainMetrics, decode(frames).message)  # decode checked the topic
        except ProtocolError:
            pass  # subscribers log bad bus messages; the proxy just forwards them

    def tick(self) -> None:
        """The timers, in this order: beacon, system metrics, monitors, start, pause call-off, checkpoint and patch
        timeouts, a stall, then dead members (while the run goes) or the end of the stop (while it stops)."""
        now = time.monotonic()
        if now >= self._next_beacon:
            self._next_beacon = now + BEACON_S
            self.publish_state()
        if now >= self._next_trim:  # what a burst of big frames left behind goes back to the system
            self._next_trim = now + TRIM_S
            release_free_memory()
        if now >= self._next_sys:  # the CPU and memory samples, as often as the heartbeats bring them
            self._next_sys = now + self.config.timing.heartbeat_s
            self.bus.publish(self.reports.system_metrics(self.session.sender))
        self.monitors.expire(now)
        if self.state is RunState.STARTING:
            self.membership.start_when_ready(now)
        if self.state is RunState.PAUSING:
            self.pausing.call_off_if_expired(now)
        self.stopping.on_signals()
        self.checkpointing.abandon_if_overdue(now)
        self.patching.answer_overdue(now)
        if self.state is RunState.RUNNING:
            self.progress.warn_if_stalled(now)
        if self.state in (RunState.RUNNING, RunState.PAUSING, RunState.PAUSED):
            self.membership.stop_if_dead(now)
        elif self.state is RunState.STOPPING:
            self.stopping.stop_when_gone(now)

    # -- plumbing -------------------------------------------------------------------
    def set_state(self, state: RunState, reason: str) -> None:
        log.info("state %s -> %s (%s)", self.state.value, state.value, reason)
        self.state = state
        if state is RunState.RUNNING:
            self.progress.running(time.monotonic())
        else:
            self.progress.halted()
        self.publish_state(reason)

    def publish_state(self, reason: str = "") -> None:
        self.bus.publish(RunStateChanged(state=self.state, reason=reason))

    def send(self, route: list[bytes], message: Message) -> bool:
        """False when the member is gone (its connection closed) or its queue is full."""
        return send_routed(self.commands, self.session, route, message)

    def close(self) -> None:
        self.bus.close()
        self.proxy.close()
        self.commands.close()
        self.ctx.term()


def main(config: Config) -> int:
    setup_logging("controller")
    try:
        controller = Controller(config)
    except ValueError as exc:  # e.g. an unreadable patches= journal
        raise StartupError(f"controller: {exc}") from None
    return controller.run()
