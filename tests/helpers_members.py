"""Members played by the test itself: a real controller process, and DEALER sockets that speak the protocol.

``Peer`` is one connection to the controller's command socket (a member once it registers, an
intruder otherwise); ``FakeRun`` starts a controller and plays its learner, env-runner and logger
until the run is ``running``, so a test can make a member do anything (or forge what it says) in
milliseconds, without torch. ``request`` is a client's request over a REQ socket.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import zmq
from helpers import RunningController, start_controller

from dynamicrl.protocol import security
from dynamicrl.protocol.codec import Session, decode
from dynamicrl.protocol.messages import (
    CheckpointPart,
    Heartbeat,
    LogicalTime,
    Message,
    ParamsRequest,
    Position,
    Ready,
    RegisterReply,
    RegisterRequest,
    Role,
    RunStart,
    RunState,
    StatusRequest,
)
from dynamicrl.protocol.sockets import bind, connect

M = TypeVar("M", bound=Message)
WAIT_S = 10.0

#: timing for a fake run: nobody dies of silence during a test; an observer is dropped after 1 s
OVERRIDES = ["run.envrunners=1", "timing.dead_after_s=600", "timing.missing_after_s=1", "timing.pause_timeout_s=5"]


def key_role(name: str) -> str:
    """The role whose key a test peer holds: ``learner.1`` a learner's, ``outsider`` a client's."""
    prefix = name.split(".")[0]
    return prefix if prefix in {role.value for role in Role} else security.CLIENT


class Peer:
    """One DEALER connection to the controller, with the routing id ``name``, authenticated with the
    key of ``name`` (in the role ``key_role`` gives) unless ``key`` names another identity."""

    def __init__(self, address: str, name: str, key: str | None = None) -> None:
        self.name = name
        key = key or name
        self.ctx = security.context(role=key_role(key), name=key)
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.ROUTING_ID, name.encode())
        connect(self.sock, address)
        self.session = Session(name)

    def send(self, message: Message) -> None:
        self.sock.send_multipart(self.session.encode(message))

    def expect(self, kind: type[M], timeout: float = WAIT_S) -> M:
        """The next message of ``kind`` (others are skipped)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if self.sock.poll(int(left * 1000) + 1):
                message = decode(self.sock.recv_multipart()).message
                if isinstance(message, kind):
                    return message
        raise AssertionError(f"{self.name}: no {kind.__name__} within {timeout} s")

    def drain(self) -> list[Message]:
        """Everything waiting for it now."""
        found = []
        while self.sock.poll(50):
            found.append(decode(self.sock.recv_multipart()).message)
        return found

    def register(self, role: Role, service: str | None = None, rank: int | None = None) -> Message:
        """Register as ``service`` (unvalidated here: a forged name goes out as it is)."""
        self.send(
            RegisterRequest.model_construct(
                service=service or self.name, role=role, rank=rank, pid=os.getpid(), host=""
            )
        )
        return self.expect(Message)

    def beat(self, iteration: int | None = None) -> None:
        """A heartbeat; at logical time (``iteration``, 0) if given."""
        ltime = None if iteration is None else LogicalTime(iteration=iteration, env_step=0)
        self.send(Heartbeat(service=self.name, ltime=ltime))

    def position(self, iteration: int = 0, service: str | None = None) -> Position:
        return Position(service=service or self.name, ltime=LogicalTime(iteration=iteration, env_step=0))

    def part(self, ckpt_id: str, meta: dict, service: str | None = None) -> CheckpointPart:
        arrays = {"policy.w": np.arange(4, dtype=np.float32)} if service is None and "learner" in self.name else {}
        return CheckpointPart(
            ckpt_id=ckpt_id,
            service=service or self.name,
            ltime=LogicalTime(iteration=meta.get("iteration", 0), env_step=0),
            arrays=arrays or {"obs": np.zeros(3)},
            meta=meta,
        )

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()


def request(ctx: zmq.Context, address: str, message: Message, timeout: float = WAIT_S) -> zmq.Socket:
    """Send a client's request on a new REQ socket; ``reply(sock)`` reads the answer."""
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    connect(sock, address)
    sock.send_multipart(Session("test-client").encode(message))
    return sock


def reply(sock: zmq.Socket, timeout: float = WAIT_S) -> Message:
    try:
        assert sock.poll(int(timeout * 1000)), f"no reply within {timeout} s"
        return decode(sock.recv_multipart()).message
    finally:
        sock.close(linger=0)


class FakeRun:
    """A real controller whose learner (``learner.1``), env-runner (``envrunner.1``) and logger
    (``logger.1``) are ``Peer``s of the test: registered, ready, and the run ``running``."""

    def __init__(self, tmp: Path, overrides: Sequence[str] = ()) -> None:
        self.controller: RunningController = start_controller(tmp, overrides=[*OVERRIDES, *overrides])
        self.address = self.controller.controller
        self.ctx = security.context()
        self.peers: list[Peer] = []
        self.learner = self.peer("learner.1")
        self.envrunner = self.peer("envrunner.1")
        self.logger = self.peer("logger.1")
        registered = self.learner.register(Role.LEARNER)
        self.run_dir = Path(registered.run_dir)  # type: ignore[attr-defined]
        self.envrunner.register(Role.ENVRUNNER, rank=0)
        self.logger.register(Role.LOGGER)
        for member in (self.learner, self.envrunner, self.logger):
            member.send(Ready(service=member.name))
        for member in (self.learner, self.envrunner, self.logger):
            member.expect(RunStart)
        assert self.status().state is RunState.RUNNING

    def peer(self, name: str, key: str | None = None) -> Peer:
        self.peers.append(Peer(self.address, name, key))
        return self.peers[-1]

    def call(self, message: Message) -> Message:
        return reply(request(self.ctx, self.address, message))

    def status(self):
        return self.call(StatusRequest())

    def params(self) -> dict:
        return {row.name: row.value for row in self.call(ParamsRequest()).params}  # type: ignore[attr-defined]

    def beat(self) -> None:
        """The workers heartbeat (a patch needs its owners healthy)."""
        for member in (self.learner, self.envrunner):
            member.beat()

    def health(self) -> dict[str, str]:
        return {s.service: s.health.value for s in self.status().services}

    def journal(self) -> str:
        path = self.run_dir / "patches.jsonl"
        return path.read_text() if path.exists() else ""

    def log(self) -> str:
        from helpers import log_text

        return log_text(self.controller.proc)

    def close(self) -> None:
        for peer in self.peers:
            peer.close()
        self.ctx.term()
        self.controller.__exit__()


def raw_request(address: str, frames: list[bytes], timeout: float = WAIT_S) -> list[bytes]:
    """``frames`` as one request on a fresh REQ with the client's key; the raw reply frames."""
    ctx = security.context()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        connect(sock, address)
        sock.send_multipart(frames)
        assert sock.poll(int(timeout * 1000)), f"no reply within {timeout} s"
        return sock.recv_multipart()
    finally:
        sock.close(linger=0)
        ctx.term()


class StandInController(threading.Thread):
    """A ROUTER bound where the controller would be, with the controller's key: it answers each
    RegisterRequest with ``config`` (as a controller does: its resolved config) and each Ready with
    a RunStart for it and ``envrunner.1``, and records every message it receives as (sender, type)
    in ``received`` and every checkpoint part's id in ``parts``. It never sends CheckpointDone."""

    def __init__(self, address: str, config: dict, run_dir: str) -> None:
        super().__init__(daemon=True)
        self.address, self.config, self.run_dir = address, config, run_dir
        self.received: list[tuple[str, str]] = []
        self.parts: list[str] = []
        self.closing = False
        self.bound = threading.Event()

    def run(self) -> None:
        ctx = security.context(role="controller", name="controller")
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        bind(sock, self.address)
        self.bound.set()
        session = Session("controller", "stand-in")
        try:
            while not self.closing:
                if not sock.poll(100):
                    continue
                route, *frames = sock.recv_multipart()
                message = decode(frames).message
                self.received.append((route.decode(), message.TYPE))
                answer: Message | None = None
                if isinstance(message, RegisterRequest):
                    answer = RegisterReply(run_id="stand-in", run_dir=self.run_dir, rank=0, config=self.config)
                elif isinstance(message, Ready):
                    answer = RunStart(envrunners=1, members=[message.service, "envrunner.1"])
                elif isinstance(message, CheckpointPart):
                    self.parts.append(message.ckpt_id)
                if answer is not None:
                    sock.send_multipart([route, *session.encode(answer)])
        finally:
            sock.close(linger=0)
            ctx.term()

    def stop(self) -> None:
        self.closing = True
        self.join(timeout=10)
