"""The controller: the run's authority, and the host of the bus.

One poll loop, three sockets: the command ROUTER (members and clients), and
the bus XSUB/XPUB it forwards between. It admits members, starts the run
when every expected member is ready (so nobody's first messages are lost),
watches heartbeats, holds pause barriers, validates and journals patches,
answers ``status``/``params``/``history``, and stops everyone when training is
done or it is told to stop.

Wiring (who sends what to whom):

  client  --Status/Pause/Resume/Params/Patch/HistoryRequest-->  controller  (REQ -> ROUTER)
  monitor  --MonitorReport-->  controller  (REQ -> ROUTER; what it lost on the bus, for status)
  member  --Register/Ready/Heartbeat/BarrierReached/PatchApplied/TrainingDone/Goodbye-->  controller
  controller  --RunStart/PauseCommand/ResumeCommand/ApplyPatch/StopCommand-->  member  (ROUTER -> DEALER)
  controller  --control.state, control.patch-->  bus
"""

from __future__ import annotations

import logging
import secrets
import signal
import time
from collections import OrderedDict
from pathlib import Path

import zmq

from dynamicrl import tunables
from dynamicrl.config import Config, config_from_dict, dump_yaml
from dynamicrl.protocol.codec import ProtocolError, Session, decode
from dynamicrl.protocol.messages import (
    CheckpointCommand, CheckpointDone, CheckpointPart, CheckpointReply, CheckpointRequest, StopReply, StopRequest,
    ApplyPatch, BarrierReached, ErrorCode, ErrorReply, Goodbye, Health, Heartbeat, HistoryReply,
    HistoryRequest, LogicalTime, Message, MonitorReport, MonitorReportReply, ParamsReply, ParamsRequest,
    PatchApplied, PatchEvent,
    PatchReply, PatchRequest, PatchStatus, PauseCommand, PauseReply, PauseRequest, Ready,
    RegisterReply, RegisterRequest, ResumeCommand, ResumeReply, ResumeRequest, Role, RunStart,
    RunState, RunStateChanged, StatusReply, StatusRequest, StopCommand, TrainingDone, TrainMetrics,
)
from dynamicrl.protocol.sockets import Publisher, Routed, bind, make_socket, recv_routed, send_routed
from dynamicrl.services.base import StartupError, setup_logging
from dynamicrl.services.bus.proxy import BusProxy

from .barrier import Barrier
from .members import Roster
from .monitors import Monitors
from . import checkpoints
from .patches import CheckpointInProgress, Journal, PendingPatch, load_replay, new_patch_id

log = logging.getLogger(__name__)

BEACON_S = 0.5
STOP_GRACE_S = 4.0  # below honcho's 5 s before it kills
REPLY_CACHE = 256
DEFER = object()  # a handler's "I will answer later" (pause, patch)


def new_run_id(name: str) -> str:
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


class Controller:
    def __init__(self, config: Config, name: str = "controller") -> None:
        self.config = config
        self.name = name
        self.run_id = new_run_id(config.run.name)
        self.run_dir = Path(config.run.dir or Path(config.run.root) / self.run_id)
        self.restore: dict[str, checkpoints.Part] = {}
        self.resumed_from: LogicalTime | None = None
        # on resume, config, run id and run dir come from the checkpoint (read and verified once)
        journal_entries = self.load_resume(Path(config.resume)) if config.resume else None
        self.ctx = zmq.Context()
        self.commands = make_socket(self.ctx, zmq.ROUTER)
        self.command_endpoint = bind(self.commands, config.addresses.controller)
        self.proxy = BusProxy(self.ctx, config.addresses.bus_in, config.addresses.bus_out)
        self.proxy.tap(TrainMetrics.TYPE)
        self.session = Session(name, self.run_id)
        self.bus = Publisher(self.ctx, self.proxy.in_endpoint, name, self.run_id)
        self.roster = Roster()
        self.monitors = Monitors(config.timing.monitor_expiry_s)
        self.state = RunState.STARTING
        self.started_at = time.monotonic()
        self.stop_deadline: float | None = None
        self.exit_code = 0
        self.last_metrics: TrainMetrics | None = None
        self.replies: OrderedDict[str, Message] = OrderedDict()
        self.deferred: dict[str, list[list[bytes]]] = {}  # request id -> routes awaiting its reply
        self.barrier: Barrier | None = None
        self.pause_waiters: list[str] = []
        self.paused_at = 0.0
        self.patches: dict[str, PendingPatch] = {}
        self.checkpoint: CheckpointInProgress | None = None
        self.journal = Journal(self.run_dir / "patches.jsonl", keep=journal_entries)
        self.replay = load_replay(self.config.patches) if self.config.patches and not config.resume else {}
        self.handlers = {
            RegisterRequest: self.on_register,
            Ready: self.on_ready,
            Heartbeat: self.on_heartbeat,
            Goodbye: self.on_goodbye,
            TrainingDone: self.on_training_done,
            StatusRequest: self.on_status,
            PauseRequest: self.on_pause,
            ResumeRequest: self.on_resume,
            BarrierReached: self.on_barrier_reached,
            ParamsRequest: self.on_params,
            PatchRequest: self.on_patch,
            PatchApplied: self.on_patch_applied,
            HistoryRequest: self.on_history,
            CheckpointRequest: self.on_checkpoint,
            StopRequest: self.on_stop_request,
            CheckpointPart: self.on_checkpoint_part,
            MonitorReport: self.on_monitor_report,
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
            self.proxy.drain()  # forward the final control.state (stopped) before the sockets close
        finally:
            self.close()
        return self.exit_code

    def handle(self, routed: Routed) -> None:
        envelope, message = routed.received.envelope, routed.received.message
        cached = self.replies.get(envelope.id)
        if cached is not None:  # a retried request: same answer, not a second action
            send_routed(self.commands, self.session, routed.route, cached, parent=envelope.id)
            return
        if envelope.id in self.deferred:  # retried while we still work on it: answer both
            self.deferred[envelope.id].append(routed.route)
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
        if reply is DEFER:
            self.deferred[envelope.id] = [routed.route]
        elif reply is not None:
            self.deferred[envelope.id] = [routed.route]
            self.answer(envelope.id, reply)

    def answer(self, request_id: str, reply: Message) -> None:
        """Send the reply to a request (to every route that asked) and remember it for retries."""
        self.replies[request_id] = reply
        while len(self.replies) > REPLY_CACHE:
            self.replies.popitem(last=False)
        for route in self.deferred.pop(request_id, []):
            send_routed(self.commands, self.session, route, reply, parent=request_id)

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
        self.monitors.expire(now)
        if self.state is RunState.STARTING:
            if self.can_start(now):
                self.start()
            elif now - self.started_at > self.config.timing.start_timeout_s:
                self.exit_code = 1
                self.begin_stop(f"start timeout: {self.waiting_for()}")
        if self.state is RunState.PAUSING and self.barrier is not None and self.barrier.expired(now):
            self.call_off_pause()
        if self.checkpoint is not None and now - self.checkpoint.started > self.config.checkpoint.timeout_s:
            self.finish_checkpoint(error=f"not complete after {self.config.checkpoint.timeout_s:g} s; "
                                         f"no state from {', '.join(self.checkpoint.missing(self.roster)) or '?'}")
        for pending in [p for p in self.patches.values() if p.waiters and now > p.deadline]:
            self.answer_patch(pending, PatchStatus.PENDING)
        if self.state in (RunState.RUNNING, RunState.PAUSING, RunState.PAUSED):
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
        unknown = sorted(set(self.replay) - set(members))
        if unknown:
            self.exit_code = 1
            self.begin_stop(f"patches={self.config.patches} names services not in this run: {', '.join(unknown)}")
            return
        for service, scheduled in self.replay.items():
            for patch in scheduled:
                pending = self.patches.setdefault(patch.patch_id, PendingPatch(patch.patch_id, patch.author, {}))
                pending.owed.setdefault(service, set()).update(patch.changes)
        missing = sorted(set(self.restore) - set(members))
        if missing:
            self.exit_code = 1
            self.begin_stop(f"cannot resume: the checkpoint has state for {', '.join(missing)}, "
                            f"not in this run (start as many env-runners as the checkpoint has)")
            return
        for member in self.roster.active():
            part = self.restore.get(member.name)
            restore = None if part is None else CheckpointPart(
                ckpt_id="resume", service=part.service, ltime=self.resumed_from, arrays=part.arrays, meta=part.meta)
            self.send(member.route, RunStart(envrunners=runners, members=members, restore=restore,
                                             patches=self.replay.get(member.name, [])))
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
                             config=self.config.to_dict(), resumed_from=self.resumed_from)

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
        member = self.roster.members.get(routed.received.message.service)
        if member is not None:
            member.ltime = routed.received.message.ltime
            member.missed = routed.received.message.missed
        return None

    def on_goodbye(self, routed: Routed) -> None:
        message: Goodbye = routed.received.message
        member = self.roster.members.get(message.service)
        if member is not None:
            member.gone = True
            log.info("%s left: %s", member.name, message.reason or "no reason given")
            if self.barrier is not None:
                self.barrier.forget(member.name)
            if message.finished:  # its goodbye may overtake the learner's TrainingDone
                self.begin_stop("training done")
            elif (self.state in (RunState.RUNNING, RunState.PAUSING, RunState.PAUSED)
                    and member.role in (Role.LEARNER, Role.ENVRUNNER)):
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
            monitors=self.monitors.statuses(now),
        )

    def on_monitor_report(self, routed: Routed) -> Message:
        try:
            self.monitors.record(routed.received.message, time.monotonic())
        except ValueError as exc:
            return ErrorReply(code=ErrorCode.REJECTED, message=str(exc))
        return MonitorReportReply(expiry_s=self.monitors.expiry_s)

    # -- pause / resume ---------------------------------------------------------------
    def on_pause(self, routed: Routed) -> Message | object:
        request_id = routed.received.envelope.id
        if self.state is RunState.PAUSED:
            return PauseReply(already=True, positions=self.barrier.positions(), latency_s=0.0)
        if self.state is RunState.PAUSING:
            self.pause_waiters.append(request_id)
            return DEFER
        if self.state is not RunState.RUNNING:
            return ErrorReply(code=ErrorCode.CONFLICT, message=f"cannot pause: the run is {self.state.value}")
        members = self.roster.active()
        self.barrier = Barrier({m.name for m in members}, self.config.timing.pause_timeout_s)
        self.pause_waiters = [request_id]
        for member in members:
            self.send(member.route, PauseCommand(pause_id=self.barrier.pause_id))
        self.set_state(RunState.PAUSING, f"pause requested by {routed.received.envelope.sender}")
        return DEFER

    def on_barrier_reached(self, routed: Routed) -> None:
        message: BarrierReached = routed.received.message
        if self.state is not RunState.PAUSING or self.barrier is None:
            return None
        self.barrier.report(message.pause_id, message.position)
        if self.barrier.complete:
            now = time.monotonic()
            self.barrier.completed = self.paused_at = now
            self.set_state(RunState.PAUSED, "every service stands at its barrier")
            reply = PauseReply(already=False, positions=self.barrier.positions(),
                               latency_s=round(now - self.barrier.started, 6))
            for request_id in self.pause_waiters:
                self.answer(request_id, reply)
            self.pause_waiters = []
        return None

    def call_off_pause(self) -> None:
        """Not everyone reached the barrier in time: release those who did; never half-paused."""
        missing = self.barrier.missing()
        for member in self.roster.active():
            self.send(member.route, ResumeCommand(pause_id=self.barrier.pause_id))
        reason = (f"pause timed out after {self.barrier.timeout_s:g} s: no barrier report from "
                  f"{', '.join(missing)}; the run continues")
        self.barrier = None
        self.set_state(RunState.RUNNING, reason)
        for request_id in self.pause_waiters:
            self.answer(request_id, ErrorReply(code=ErrorCode.TIMEOUT, message=reason))
        self.pause_waiters = []

    def on_resume(self, routed: Routed) -> Message:
        if self.state is RunState.RUNNING:
            return ResumeReply(already=True)
        if self.state is not RunState.PAUSED:
            return ErrorReply(code=ErrorCode.CONFLICT,
                              message=f"cannot resume: the run is {self.state.value}")
        for member in self.roster.active():
            self.send(member.route, ResumeCommand(pause_id=self.barrier.pause_id))
        paused_s = time.monotonic() - self.paused_at
        self.barrier = None
        self.set_state(RunState.RUNNING, f"resumed by {routed.received.envelope.sender} after {paused_s:.1f} s")
        return ResumeReply(already=False, paused_s=round(paused_s, 3))

    # -- hyperparameters --------------------------------------------------------------
    def on_params(self, routed: Routed) -> Message:
        return ParamsReply(params=tunables.describe(self.config))

    def on_history(self, routed: Routed) -> Message:
        return HistoryReply(entries=self.journal.entries)

    def on_patch(self, routed: Routed) -> Message | object:
        request: PatchRequest = routed.received.message
        if self.state not in (RunState.RUNNING, RunState.PAUSING, RunState.PAUSED):
            return ErrorReply(code=ErrorCode.CONFLICT, message=f"cannot patch: the run is {self.state.value}")
        try:
            new_config, diff = tunables.validate(self.config, request.changes)
        except tunables.PatchError as exc:
            return ErrorReply(code=ErrorCode.REJECTED, message=str(exc))
        specs, now = tunables.specs(self.config), time.monotonic()
        owed: dict[str, set[str]] = {}
        for name in diff:
            owners = self.roster.active(specs[name].owner)
            if not owners:
                return ErrorReply(code=ErrorCode.REJECTED,
                                  message=f"patch rejected, nothing changed: {name} belongs to the "
                                          f"{specs[name].owner.value}, and none is in the run")
            for owner in owners:
                health = owner.health(now, self.config.timing.missing_after_s)
                if health is not Health.OK:
                    return ErrorReply(code=ErrorCode.REJECTED,
                                      message=f"patch rejected, nothing changed: {owner.name} ({name}) is "
                                              f"{health.value}, last seen {now - owner.last_seen:.1f} s ago")
                owed.setdefault(owner.name, set()).add(name)
        self.config = new_config
        author = request.author or routed.received.envelope.sender
        pending = PendingPatch(new_patch_id(), author, owed, deadline=now + self.config.timing.patch_wait_s)
        self.patches[pending.patch_id] = pending
        at = LogicalTime(iteration=request.at_iteration, env_step=0) if request.at_iteration is not None else None
        for member in self.roster.active():
            if member.name in owed:
                self.send(member.route, ApplyPatch(
                    patch_id=pending.patch_id, author=author, at=at,
                    changes={name: diff[name][1] for name in owed[member.name]}))
        log.info("patch %s by %s accepted: %s", pending.patch_id, author,
                 ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in diff.items()))
        if at is not None:
            status = PatchStatus.SCHEDULED
        elif self.state is not RunState.RUNNING:
            status = PatchStatus.ON_RESUME
        elif request.wait:
            pending.waiters.append(routed.received.envelope.id)
            return DEFER
        else:
            status = PatchStatus.PENDING
        return PatchReply(patch_id=pending.patch_id, status=status)

    def on_patch_applied(self, routed: Routed) -> None:
        message: PatchApplied = routed.received.message
        pending = self.patches.get(message.patch_id)
        if pending is None:  # e.g. pending in a member's checkpoint, applied after a resume
            pending = self.patches[message.patch_id] = PendingPatch(message.patch_id, message.author, {})
        entry = self.journal.record(pending, message)
        try:  # a replayed patch was never validated here: keep `params` true to what runs
            self.config, _ = tunables.validate(self.config, {k: new for k, (_, new) in message.changes.items()})
        except tunables.PatchError as exc:
            log.error("%s applied values this controller rejects: %s", message.position.service, exc)
        self.bus.publish(PatchEvent(entry=entry), ltime=message.position.ltime)
        pending.applied.append(entry)
        pending.owed.get(message.position.service, set()).difference_update(message.changes)
        if pending.done:
            self.answer_patch(pending, PatchStatus.APPLIED)
            del self.patches[pending.patch_id]
        return None

    def answer_patch(self, pending: PendingPatch, status: PatchStatus) -> None:
        reply = PatchReply(patch_id=pending.patch_id, status=status, applied=list(pending.applied))
        for request_id in pending.waiters:
            self.answer(request_id, reply)
        pending.waiters = []

    # -- checkpoints ----------------------------------------------------------------------
    def load_resume(self, run_dir: Path) -> int:
        """Take config, run id and every member's state from the run's latest good checkpoint."""
        path = checkpoints.latest_good(run_dir / "checkpoints", report=log.warning)
        manifest, controller, parts = checkpoints.read(path)
        data = controller["config"]
        data.update(addresses=self.config.addresses.model_dump(), resume=str(run_dir),
                    timing=self.config.timing.model_dump())
        data["run"].update(dir=str(run_dir),
                           envrunners=sum(1 for s in parts if s != controller["learner"] and s.startswith("envrunner")))
        self.config = config_from_dict(data, origin=str(path / "controller.json"))
        self.run_dir, self.run_id = run_dir, controller["run_id"]
        self.restore = parts
        self.resumed_from = LogicalTime(iteration=manifest["iteration"], env_step=manifest["env_step"])
        log.info("resuming run %s from %s (iteration %d, %d env steps)", self.run_id, path,
                 manifest["iteration"], manifest["env_step"])
        return controller["journal_entries"]

    def on_checkpoint(self, routed: Routed) -> Message | object:
        request_id = routed.received.envelope.id
        if self.checkpoint is not None:
            self.checkpoint.waiters.append(request_id)
            return DEFER
        if self.state is not RunState.RUNNING:
            return ErrorReply(code=ErrorCode.CONFLICT, message=f"cannot checkpoint: the run is {self.state.value}"
                              + (" (resume first: a checkpoint is taken at the next iteration boundary)"
                                 if self.state is RunState.PAUSED else ""))
        learner = self.roster.active(Role.LEARNER)[0]
        self.checkpoint = CheckpointInProgress(new_patch_id(), waiters=[request_id])
        self.send(learner.route, CheckpointCommand(ckpt_id=self.checkpoint.ckpt_id))
        return DEFER

    def on_checkpoint_part(self, routed: Routed) -> None:
        part: CheckpointPart = routed.received.message
        member = self.roster.members.get(part.service)
        if member is None:
            return None
        if member.role is Role.LEARNER and (self.checkpoint is None or self.checkpoint.ckpt_id != part.ckpt_id):
            if self.checkpoint is not None and self.checkpoint.boundary is None:
                part = part.model_copy(update={"ckpt_id": self.checkpoint.ckpt_id})  # our request, its boundary
            else:
                self.checkpoint = CheckpointInProgress(part.ckpt_id)  # the learner's own (every N, at the end)
        if self.checkpoint is None or part.ckpt_id != self.checkpoint.ckpt_id:
            log.warning("ignoring state from %s for checkpoint %s", part.service, part.ckpt_id)
            return None
        ck = self.checkpoint
        if "error" in part.meta:
            if member.role is Role.LEARNER:
                ck.learner = None  # it does not hold: nothing to release
            self.finish_checkpoint(error=f"{part.service}: {part.meta['error']}")
            return None
        ck.parts[part.service] = part
        if member.role is Role.LEARNER:
            ck.learner, ck.boundary = part.service, part.meta["iteration"]
            ck.env_step = part.meta["env_steps"]
            for runner in self.roster.active(Role.ENVRUNNER):
                # rollouts sent: one more than the updates when the learner saved unanswered ones (overlap)
                at = part.meta.get("boundary", ck.boundary)
                self.send(runner.route, CheckpointCommand(ckpt_id=part.ckpt_id, at_iteration=at))
            ck.learner_ckpt_id = routed.received.message.ckpt_id
        if not ck.missing(self.roster):
            self.finish_checkpoint()
        return None

    def finish_checkpoint(self, error: str = "") -> None:
        ck, self.checkpoint = self.checkpoint, None
        reply: Message
        if not error:
            try:
                started = time.monotonic()
                path = checkpoints.write(
                    self.run_dir / "checkpoints", ck.boundary, ck.env_step,
                    [checkpoints.Part(p.service, dict(p.arrays), p.meta) for p in ck.parts.values()],
                    {"run_id": self.run_id, "config": self.config.to_dict(), "learner": ck.learner,
                     "journal_entries": len(self.journal.entries), "iteration": ck.boundary, "env_step": ck.env_step},
                    keep=self.config.checkpoint.keep)
                size = sum(f.stat().st_size for f in path.iterdir())
                manifest = checkpoints.verify(path)
                log.info("checkpoint %s: %d bytes in %.3f s (write), %.3f s since it began (request or boundary)", path, size,
                         time.monotonic() - started, time.monotonic() - ck.started)
                reply = CheckpointReply(path=str(path), ltime=LogicalTime(iteration=ck.boundary, env_step=ck.env_step),
                                        bytes=size, seconds=round(time.monotonic() - ck.started, 4),
                                        policy_sha256=manifest["policy_sha256"])
            except (OSError, ValueError, StopIteration) as exc:
                error = f"writing failed: {type(exc).__name__}: {exc}"
        if error:
            log.error("checkpoint %s abandoned: %s", ck.ckpt_id, error)
            reply = ErrorReply(code=ErrorCode.TIMEOUT if "not complete" in error else ErrorCode.INTERNAL,
                               message=f"checkpoint abandoned (the run goes on): {error}")
        learner = self.roster.members.get(ck.learner or "")
        if learner is not None and ck.learner_ckpt_id:
            self.send(learner.route, CheckpointDone(ckpt_id=ck.learner_ckpt_id, ok=not error, message=error))
        for request_id in ck.waiters:
            self.answer(request_id, reply)
        if ck.stop_waiters:
            saved = None if error else str(path)
            for request_id in ck.stop_waiters:
                self.answer(request_id, StopReply(checkpoint=saved, message=error))
            self.begin_stop("stop requested" + (f" after checkpoint {saved}" if saved else f" ({error})"))

    def on_stop_request(self, routed: Routed) -> Message | object:
        request: StopRequest = routed.received.message
        sender = routed.received.envelope.sender
        if self.state in (RunState.STOPPING, RunState.STOPPED):
            return StopReply(message="already stopping")
        can_checkpoint = request.checkpoint and self.state is RunState.RUNNING and self.roster.active(Role.LEARNER)
        if not can_checkpoint:
            self.begin_stop(f"stop requested by {sender}")
            why = "" if not request.checkpoint else f" (no checkpoint: the run is {self.state.value})"
            return StopReply(message="stopping" + why)
        if self.checkpoint is None:
            learner = self.roster.active(Role.LEARNER)[0]
            self.checkpoint = CheckpointInProgress(new_patch_id())
            self.send(learner.route, CheckpointCommand(ckpt_id=self.checkpoint.ckpt_id))
        self.checkpoint.stop_waiters.append(routed.received.envelope.id)
        return DEFER

    # -- stopping -------------------------------------------------------------------
    def begin_stop(self, reason: str) -> None:
        if self.state in (RunState.STOPPING, RunState.STOPPED):
            return
        log.info("stopping the run: %s", reason)
        for request_id in self.pause_waiters:
            self.answer(request_id, ErrorReply(code=ErrorCode.CONFLICT, message=f"the run is stopping: {reason}"))
        self.pause_waiters = []
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
    try:
        controller = Controller(config)
    except ValueError as exc:  # e.g. an unreadable patches= journal
        raise StartupError(f"controller: {exc}") from None
    return controller.run()


