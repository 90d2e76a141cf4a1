"""What every service shares: joining the run, heartbeats, safe points, clean exit.

A service is a readable loop that calls :meth:`Service.safe_point` wherever its
state is consistent (an env-runner between env steps, the learner between
minibatches). There the service answers the controller (stop now; later pause,
patch) and sends its heartbeat when one is due, so a busy service never looks
dead and never acts on a command half-way through a step.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from typing import Callable

import zmq

from dynamicrl.config import Config, config_from_dict
from dynamicrl.protocol.codec import ProtocolError, Received, Session
from dynamicrl.protocol.messages import (
    ErrorReply, Goodbye, Heartbeat, LogicalTime, Message, Ready, RegisterReply, RegisterRequest,
    Role, RunStart, StopCommand,
)
from dynamicrl.protocol.sockets import Publisher, make_socket, recv, send

log = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """The service could not join the run (controller absent, refused, or timed out)."""


class Service:
    """Membership and lifecycle of one process; subclasses write the loop."""

    role: Role

    def __init__(self, local: Config, name: str | None = None, rank: int | None = None) -> None:
        self.local = local
        self.name = name or default_name(self.role, rank)
        self.requested_rank = rank
        self.ctx = zmq.Context()
        self.link = make_socket(self.ctx, zmq.DEALER, identity=self.name.encode())
        self.link.connect(local.addresses.controller)
        self.link_session = Session(self.name)
        self.bus = Publisher(self.ctx, local.addresses.bus_in, self.name)
        self.stopping = False
        self.stop_reason = ""
        self.exit_code = 0
        self.ltime = LogicalTime(iteration=0, env_step=0)
        self._next_beat = 0.0
        self._handlers: dict[type[Message], Callable[[Received], None]] = {StopCommand: self._on_stop}
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        # filled by join()
        self.config: Config = local
        self.run_id = ""
        self.run_dir = ""
        self.rank = rank or 0

    # -- joining -----------------------------------------------------------------
    def register(self) -> RegisterReply:
        """Announce ourselves; the controller answers with run id, rank and resolved config."""
        self._send(RegisterRequest(service=self.name, role=self.role, rank=self.requested_rank,
                                   pid=os.getpid(), host=socket.gethostname()))
        reply = self._await(RegisterReply, self.local.timing.start_timeout_s, "registration")
        self.config = config_from_dict(reply.config)
        self.run_id, self.run_dir, self.rank = reply.run_id, reply.run_dir, reply.rank
        self.link_session.run_id = self.bus.session.run_id = self.run_id
        log.info("%s joined run %s as rank %d", self.name, self.run_id, self.rank)
        return reply

    def ready_and_wait(self) -> RunStart:
        """Report start-up done; block until every expected member is ready too."""
        self._send(Ready(service=self.name))
        return self._await(RunStart, self.config.timing.start_timeout_s, "the start of the run")

    def _await(self, kind: type[Message], timeout_s: float, what: str) -> Message:
        deadline = time.monotonic() + timeout_s
        while not self.stopping:
            if time.monotonic() > deadline:
                raise StartupError(f"{self.name}: no {what} from the controller at "
                                   f"{self.local.addresses.controller} within {timeout_s:.0f} s")
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
        raise StartupError(f"{self.name}: stopped before {what} ({self.stop_reason})")

    # -- running -------------------------------------------------------------------
    def safe_point(self, ltime: LogicalTime | None = None) -> None:
        """Handle what the controller sent and beat the heart; call only where state is consistent."""
        if ltime is not None:
            self.ltime = ltime
        while self.link.poll(0):
            received = self._recv_link()
            if received is not None:
                self._dispatch(received)
        now = time.monotonic()
        if now >= self._next_beat:
            self._next_beat = now + self.config.timing.heartbeat_s
            self._send(Heartbeat(service=self.name, ltime=self.ltime))

    def on(self, kind: type[Message], handler: Callable[[Received], None]) -> None:
        self._handlers[kind] = handler

    def _dispatch(self, received: Received) -> None:
        handler = self._handlers.get(type(received.message))
        if handler is None:
            log.warning("%s: ignoring unexpected %s from %s", self.name, received.message.TYPE,
                        received.envelope.sender)
            return
        handler(received)

    def _recv_link(self) -> Received | None:
        try:
            return recv(self.link)
        except ProtocolError as exc:
            log.warning("%s: bad message from the controller: %s", self.name, exc)
            return None

    def _send(self, message: Message) -> None:
        send(self.link, self.link_session, message, ltime=self.ltime)

    def _on_stop(self, received: Received) -> None:
        self.stop(f"controller: {received.message.reason}")

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stop(signal.Signals(signum).name)

    def stop(self, reason: str) -> None:
        if not self.stopping:
            log.info("%s stopping: %s", self.name, reason)
        self.stopping, self.stop_reason = True, self.stop_reason or reason

    def close(self) -> None:
        """Say goodbye and release sockets (LINGER is bounded, so this cannot hang)."""
        try:
            self._send(Goodbye(service=self.name, reason=self.stop_reason))
        except zmq.ZMQError:
            pass
        self.bus.close()
        self.link.close()
        self.ctx.term()
        log.info("%s closed", self.name)


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
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {name} %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
