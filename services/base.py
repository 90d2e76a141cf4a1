"""What every service shares: joining the run, heartbeats, safe points, clean exit.

A service is a readable loop that calls :meth:`Service.safe_point` wherever its
state is consistent (an env-runner between env steps, the learner between
minibatches). There, and only there, the service acts on the controller: it
stops, stands at a pause barrier until resumed, applies due hyperparameter
patches, and sends its heartbeat, so a busy service never looks dead and never
acts on a command half-way through a step.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import os
import platform
import signal
import socket
import time
from collections.abc import Callable
from typing import Any, TypeVar

import zmq

from dynamicrl.core import tunables
from dynamicrl.core.patch_text import patch_line
from dynamicrl.core.process_stats import ProcessStats
from dynamicrl.core.settings import Config, ConfigError, PluginError, config_from_dict, plugins_text
from dynamicrl.protocol import security
from dynamicrl.protocol.codec import ProtocolError, Received, Session
from dynamicrl.protocol.messages import (
    ApplyPatch,
    BarrierReached,
    CheckpointCommand,
    CheckpointDone,
    CheckpointPart,
    ErrorReply,
    Goodbye,
    Heartbeat,
    LogicalTime,
    Message,
    PatchApplied,
    PauseCommand,
    Position,
    Ready,
    RegisterReply,
    RegisterRequest,
    ResumeCommand,
    Role,
    RunStart,
    Scene,
    StopCommand,
    StopReply,
    StopRequest,
)
from dynamicrl.protocol.sockets import Publisher, connect, make_socket, recv, send

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)


class StartupError(RuntimeError):
    """The service could not join the run (controller absent, refused, or timed out)."""


class StoppedBeforeStart(RuntimeError):
    """Asked to stop (by the controller, or a signal) before the run started: a clean exit, not a
    failure; the controller says once that the run was stopped before it started."""


class Service:
    """Membership and lifecycle of one process; subclasses write the loop."""

    role: Role
    #: True for the logger, which advances nothing: it reports at a pause barrier at once and keeps
    #: running, and a signal to it alone waits for the run's stop without asking for one.
    observer = False

    def __init__(self, local: Config, name: str | None = None, rank: int | None = None) -> None:
        self.local = local
        self.name = name or default_name(self.role, rank)
        self.requested_rank = rank
        self.ctx = security.context_for(local.security, self.role.value, self.name)
        self.link = make_socket(self.ctx, zmq.DEALER, identity=self.name.encode())
        connect(self.link, local.addresses.controller)
        self.link_session = Session(self.name)
        self.bus = Publisher(self.ctx, local.addresses.bus_in, self.name)
        self.stopping = False
        self.stop_reason = ""
        self.running = False  # the run has started (RunStart): a signal now waits for the controller's stop
        self.signalled: tuple[str, float] | None = None  # (signal, monotonic time) of the first one
        self.asked_to_stop = False  # the StopRequest a signal calls for has been sent
        self.exit_code = 0
        self.finished = False  # set when the service ends because training is complete
        self.ltime = LogicalTime(iteration=0, env_step=0)
        self._next_beat = 0.0
        self.process_stats = ProcessStats()  # CPU and memory, sent with each heartbeat
        self.pause_id: str | None = None  # a pause is requested (or held) while set
        self.pause_scenes = False  # the pause asks for scenes() with the barrier report
        self.pending_patches: list[ApplyPatch] = []
        self.hold_patches = False
        self.missed = 0  # bus messages lost by this service's subscriptions (reported in heartbeats)
        self.checkpoint_requests: list[CheckpointCommand] = []
        self.checkpoint_done: dict[str, CheckpointDone] = {}
        self.minibatch: int | None = None
        self._handlers: dict[type[Message], Callable[[Received[Any]], None]] = {
            StopCommand: self._on_stop,
            PauseCommand: self._on_pause,
            ResumeCommand: self._on_resume,
            ApplyPatch: self._on_apply_patch,
            CheckpointCommand: lambda r: self.checkpoint_requests.append(r.message),
            CheckpointDone: lambda r: self.checkpoint_done.__setitem__(r.message.ckpt_id, r.message),
            StopReply: lambda r: log.debug(
                "%s: the controller: %s",
                self.name,
                r.message.message or f"stopping after checkpoint {r.message.checkpoint}",
            ),
        }
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        # the local config until register() brings the run's
        self.config: Config = local
        self.run_id = ""
        self.run_dir = ""
        self.rank = rank or 0

    # -- joining -----------------------------------------------------------------
    def register(self) -> RegisterReply:
        """Announce ourselves; the controller answers with run id, rank and resolved config."""
        self._send(
            RegisterRequest(
                service=self.name, role=self.role, rank=self.requested_rank, pid=os.getpid(), host=socket.gethostname()
            )
        )
        reply = self._await(RegisterReply, self.local.timing.start_timeout_s, "registration")
        self.config = self.run_config(reply.config)
        self.run_id, self.run_dir, self.rank = reply.run_id, reply.run_dir, reply.rank
        self.resumed_from = reply.resumed_from
        self.link_session.run_id = self.bus.session.run_id = self.run_id
        log.debug("%s joined run %s as rank %d", self.name, self.run_id, self.rank)
        return reply

    def run_config(self, data: dict[str, Any]) -> Config:
        """The run's config from the controller's reply: data, whose ``plugins`` are never imported here.

        Only this process's own config file and command line import plugins (``self.local``); a run
        that names another one fails this service with one line saying which to pass.
        """
        origin = f"the run's config from the controller at {self.local.addresses.controller}"
        try:
            return config_from_dict(data, origin=origin, imported=self.local.plugins)
        except PluginError as exc:
            wanted = plugins_text(exc.missing)
            raise StartupError(
                f"{self.name}: {origin} needs plugin(s) {wanted[1:-1]}, which this process did not import "
                f"(plugins are imported only from its own config): pass plugins={wanted} in its config file "
                f"or on its command line"
            ) from None
        except ConfigError as exc:
            raise StartupError(f"{self.name}: {exc}") from None

    def ready_and_wait(self) -> RunStart:
        """Report start-up done; block until every expected member is ready too."""
        self._send(Ready(service=self.name))
        start = self._await(RunStart, self.config.timing.start_timeout_s, "the start of the run", beat=True)
        self.running = True
        self.pending_patches.extend(start.patches)  # a replayed journal, due at exact logical times
        return start

    def _await(self, kind: type[M], timeout_s: float, what: str, beat: bool = False) -> M:
        """The next ``kind`` from the controller; ``beat``: a member heartbeats while it waits, so a
        long wait for the others (a slow start, the join window) does not make it look missing."""
        deadline = time.monotonic() + timeout_s
        while not self.stopping:
            if beat:
                self._beat()
            if time.monotonic() > deadline:
                raise StartupError(
                    f"{self.name}: no {what} from the controller at "
                    f"{self.local.addresses.controller} within {timeout_s:.0f} s"
                )
            if not self.link.poll(100):
                continue
            received = self._recv_link()
            if received is None:
                continue
            if isinstance(received.message, kind):
                return received.message
            if isinstance(received.message, ErrorReply):
                raise StartupError(f"{self.name}: controller refused: {received.message.message}")
            self._dispatch(received)
        raise StoppedBeforeStart(f"{self.name}: stopped before {what} ({self.stop_reason})")

    # -- running -------------------------------------------------------------------
    def safe_point(
        self, ltime: LogicalTime | None = None, *, minibatch: int | None = None, boundary: bool = True
    ) -> None:
        """Act on the controller here; call only where the service's state is consistent.

        ``minibatch`` is the learner's gradient steps done in the current update;
        ``boundary`` says that next-iteration patches may apply here (the learner
        passes False inside an update, whose shape is already fixed).
        """
        if ltime is not None:
            self.ltime = ltime
        self.minibatch = minibatch
        self._drain_link()
        if self.pause_id is not None and not self.stopping:
            self._stand_at_barrier()
        if self.pending_patches and not self.stopping and not self.hold_patches:
            self._apply_due_patches(boundary)
        self._beat()

    def wait(self, sock: zmq.Socket, timeout_ms: int) -> bool:
        """Wait for ``sock`` or the controller, whichever speaks first (commands act at once).

        True when ``sock`` has a message. The caller must be at a safe point.
        """
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self.link, zmq.POLLIN)
        events = dict(poller.poll(timeout_ms))
        if self.link in events or not events:
            self.safe_point(minibatch=self.minibatch)
        return sock in events

    def request(
        self,
        sock: zmq.Socket,
        session: Session,
        message: Message,
        replies: tuple[type[Message], ...],
        while_waiting: Callable[[], None] | None = None,
    ) -> Message | None:
        """Send ``message`` on ``sock`` (e.g. to the learner) and wait for a reply of one of the ``replies``
        types, acting on the controller meanwhile (``while_waiting`` too); None once stopping. A reply
        that does not decode is logged and skipped."""
        send(sock, session, message, ltime=self.ltime)
        while not self.stopping:
            if while_waiting is not None:
                while_waiting()
            if not self.wait(sock, 100):
                continue
            try:
                reply = recv(sock).message
            except ProtocolError as exc:
                log.warning("%s: bad reply to %s: %s", self.name, message.TYPE, exc)
                continue
            if isinstance(reply, replies):
                return reply
        return None

    def position(self) -> Position:
        return Position(service=self.name, ltime=self.ltime, minibatch=self.minibatch)

    def _drain_link(self) -> None:
        while self.link.poll(0):
            received = self._recv_link()
            if received is not None:
                self._dispatch(received)

    def _beat(self) -> None:
        now = time.monotonic()
        if self.signalled is not None and not self.stopping:
            grace = self.config.timing.signal_grace_s
            if not self.asked_to_stop and not self.observer:
                self.asked_to_stop = True
                log.debug(  # the controller says what it does about it, once for the run
                    "%s: %s: asking the controller to stop the run after a checkpoint (waiting %g s at most)",
                    self.name,
                    self.signalled[0],
                    grace,
                )
                self._send(StopRequest(checkpoint=True))
            elif now - self.signalled[1] > grace:
                self.stop(f"{self.signalled[0]}, and no stop from the controller in {grace:g} s")
        if now >= self._next_beat:
            self._next_beat = now + self.config.timing.heartbeat_s
            cpu_percent, rss_mb = self.process_stats.sample()
            self._send(
                Heartbeat(
                    service=self.name,
                    ltime=self.ltime,
                    missed=self.missed,
                    cpu_percent=cpu_percent,
                    rss_mb=rss_mb,
                    refused_handshakes=self.ctx.refused,
                )
            )

    # -- pauses ----------------------------------------------------------------------
    def _on_pause(self, received: Received[PauseCommand]) -> None:
        self.pause_id, self.pause_scenes = received.message.pause_id, received.message.scenes
        if self.observer:
            self._send(BarrierReached(pause_id=self.pause_id, position=self.position()))
            self.pause_id = None

    def scenes(self) -> list[Scene]:
        """What this service shows at a barrier for the pause's previews (env-runners: their sub-envs)."""
        return []

    def _on_resume(self, received: Received[ResumeCommand]) -> None:
        self.pause_id = None

    def _stand_at_barrier(self) -> None:
        """Report the position, then hold still (heartbeats go on) until resumed or stopped."""
        reported = None
        while self.pause_id is not None and not self.stopping:
            if reported != self.pause_id:  # a second pause while held is answered too
                reported = self.pause_id
                scenes = self.scenes() if self.pause_scenes else []
                self._send(BarrierReached(pause_id=reported, position=self.position(), scenes=scenes))
            if self.link.poll(100):
                self._drain_link()
            self._beat()

    # -- patches ---------------------------------------------------------------------
    def _on_apply_patch(self, received: Received[ApplyPatch]) -> None:
        self.pending_patches.append(received.message)

    def _apply_due_patches(self, boundary: bool) -> None:
        specs = tunables.specs(self.config)
        for patch in list(self.pending_patches):
            if patch.at is not None and self._before(patch):
                continue
            due = {
                name: value
                for name, value in patch.changes.items()
                if name in specs and (boundary or specs[name].apply != "next_iteration")
            }
            if not due:
                continue
            try:
                self.config, diff = tunables.validate(self.config, due)
            except tunables.PatchError as exc:  # the controller validated it; never apply half
                log.error("%s: refusing patch %s: %s", self.name, patch.patch_id, exc)
                diff = {}
            self.on_config_changed()
            remaining = {k: v for k, v in patch.changes.items() if k not in due and k in specs}
            self.pending_patches.remove(patch)
            if remaining:
                self.pending_patches.append(patch.model_copy(update={"changes": remaining}))
            self._send(
                PatchApplied(patch_id=patch.patch_id, author=patch.author, position=self.position(), changes=diff)
            )
            # the logger prints it once, from the journal, naming this member
            log.debug("applied %s", patch_line(patch.patch_id, patch.author, diff, self.position()))

    def _before(self, patch: ApplyPatch) -> bool:
        assert patch.at is not None  # only asked of a patch scheduled for a logical time
        here = (self.ltime.iteration, self.ltime.env_step, self.minibatch or 0)
        due = (patch.at.iteration, patch.at.env_step, patch.at_minibatch or 0)
        return here < due

    # -- checkpoints -------------------------------------------------------------------
    def send_checkpoint_part(self, ckpt_id: str, arrays: dict, meta: dict) -> None:
        # the tunables this member runs with: the controller's config already holds the values of patches
        # it accepted but this member has not applied yet (e.g. scheduled for a later iteration)
        meta = {
            **meta,
            "pending_patches": [p.model_dump(mode="json") for p in self.pending_patches],
            "tunables": {row.name: row.value for row in tunables.describe(self.config)},
            "versions": library_versions(),
        }
        self._send(CheckpointPart(ckpt_id=ckpt_id, service=self.name, ltime=self.ltime, arrays=arrays, meta=meta))

    def restore_pending_patches(self, meta: dict) -> None:
        """The tunables in force at the checkpoint and the patches still due (they apply when due again)."""
        saved, here = meta.get("versions", {}), library_versions()  # (a cached dict: read only)
        differ = {k: (saved[k], here.get(k)) for k in saved if saved[k] != here.get(k)}
        if differ:  # still resumed: a version change is often harmless, but it is the first suspect
            log.warning(
                "%s: resuming with other library versions than the checkpoint's (%s): the continuation "
                "may not be bitwise",
                self.name,
                ", ".join(f"{k} {old} -> {new}" for k, (old, new) in differ.items()),
            )
        if meta.get("tunables"):
            self.config, _ = tunables.validate(self.config, meta["tunables"])
            self.on_config_changed()
        self.pending_patches = [ApplyPatch.model_validate(p) for p in meta.get("pending_patches", [])]

    def on_config_changed(self) -> None:
        """Hook: a patch changed ``self.config``; push the new values where they are read."""

    def _dispatch(self, received: Received[Message]) -> None:
        handler = self._handlers.get(type(received.message))
        if handler is None:
            log.warning(
                "%s: ignoring unexpected %s from %s", self.name, received.message.TYPE, received.envelope.sender
            )
            return
        handler(received)

    def _recv_link(self) -> Received[Message] | None:
        try:
            return recv(self.link)
        except ProtocolError as exc:
            log.warning("%s: bad message from the controller: %s", self.name, exc)
            return None

    def _send(self, message: Message) -> None:
        send(self.link, self.link_session, message, ltime=self.ltime)

    def _on_stop(self, received: Received[StopCommand]) -> None:
        self.stop(f"controller: {received.message.reason}")

    def _on_signal(self, signum: int, _frame: object) -> None:
        """A member of a running run does not stop by itself on SIGTERM/SIGINT: it asks the controller
        to stop the run after a last checkpoint, which needs every member (honcho, on Ctrl-C, signals
        them all at once), and waits for the stop, ``timing.signal_grace_s`` at most; an observer
        only waits. A second signal, or one before the run started, stops it at once. The request is
        sent from the next safe point, not from this handler: the link may be mid-send here."""
        name = signal.Signals(signum).name
        if self.running and self.signalled is None:
            self.signalled = (name, time.monotonic())
        else:
            self.stop(name)

    def stop(self, reason: str) -> None:
        if not self.stopping:  # the end of training, or a stop the controller sent: the controller says it once
            log.log(
                logging.DEBUG if self.finished or reason.startswith("controller: ") else logging.INFO,
                "%s stopping: %s",
                self.name,
                reason,
            )
        self.stopping, self.stop_reason = True, self.stop_reason or reason

    def close(self) -> None:
        """Say goodbye and release sockets (LINGER is bounded, so this cannot hang)."""
        try:
            self._send(Goodbye(service=self.name, reason=self.stop_reason, finished=self.finished))
        except zmq.ZMQError:
            pass
        self.bus.close()
        self.link.close()
        self.ctx.term()
        log.debug("%s closed", self.name)


def default_name(role: Role, rank: int | None) -> str:
    """``envrunner.2`` under honcho (its process name), else role.(rank + 1) like honcho, or role.pid."""
    honcho = os.environ.get("HONCHO_PROCESS_NAME", "")
    if honcho.startswith(role.value + "."):
        return honcho
    return f"{role.value}.{rank + 1 if rank is not None else os.getpid()}"


def rank_from_environment() -> int | None:
    """honcho names processes ``envrunner.1``, ``envrunner.2``: rank = number - 1."""
    name = os.environ.get("HONCHO_PROCESS_NAME", "")
    suffix = name.rpartition(".")[2]
    return int(suffix) - 1 if suffix.isdigit() and int(suffix) >= 1 else None


def setup_logging(name: str) -> None:
    """Time, name and level on each line; under honcho (or `dynamicrl run`), whose prefix already has
    time and name, only the level, and that only when it is not INFO: one timestamp per line."""
    handler = logging.StreamHandler()
    if os.environ.get("HONCHO_PROCESS_NAME"):
        handler.setFormatter(_LevelUnlessInfo("%(message)s"))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {name} %(levelname)s %(message)s", datefmt="%H:%M:%S"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])


class _LevelUnlessInfo(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno == logging.INFO else f"{record.levelname} {text}"


#: what decides whether a continuation is bitwise; recorded in every member's checkpoint part
VERSIONED = ("dynamicrl", "numpy", "torch", "gymnasium", "mujoco", "pyzmq", "msgpack")


@functools.cache  # installed versions do not change while a process runs
def library_versions() -> dict[str, str]:
    """Installed versions (from package metadata: nothing is imported) and the Python version."""
    versions = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions
