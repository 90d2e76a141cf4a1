"""Sockets with safe defaults, and the few ways DynamicRL uses them.

Every socket is made by :func:`make_socket`, which sets LINGER (shutdown never
hangs), high-water marks (a slow peer drops, it does not block) and
MAXMSGSIZE (an oversized frame is refused by the transport). The helpers below
are the whole transport: publish, subscribe with gap detection, a Lazy Pirate
requester, and ROUTER send/receive.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic

import zmq

from . import security
from .codec import M_co, ProtocolError, Received, Session, claimed, decode
from .messages import ErrorCode, ErrorReply, LogicalTime, Message

log = logging.getLogger(__name__)

LINGER_MS = 500
HWM = 1000
MAX_MESSAGE_BYTES = 1 << 30
#: On sockets that never carry rollouts, weights or checkpoint parts (the bus, a client's requests),
#: a frame's size is bounded far lower, so a half-sent huge frame cannot make a receiver reserve a GiB.
SMALL_MESSAGE_BYTES = 64 << 20


def make_socket(
    ctx: zmq.Context,
    kind: int,
    *,
    hwm: int = HWM,
    maxmsgsize: int = MAX_MESSAGE_BYTES,
    identity: bytes | None = None,
) -> zmq.Socket:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, LINGER_MS)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.MAXMSGSIZE, maxmsgsize)
    if identity is not None:
        sock.setsockopt(zmq.IDENTITY, identity)
    if kind == zmq.ROUTER:
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    return sock


class Publisher:
    """PUB connected to the bus's XSUB side.

    Never blocks: PUB drops a message (silently, zmq raises nothing) for a peer whose
    queue is full. Receivers see the loss as a gap in this sender's sequence numbers.
    """

    def __init__(self, ctx: zmq.Context, endpoint: str, sender: str, run_id: str | None = None):
        self.socket = make_socket(ctx, zmq.PUB, maxmsgsize=SMALL_MESSAGE_BYTES)
        connect(self.socket, endpoint)
        self.session = Session(sender, run_id)

    def publish(self, message: Message, ltime: LogicalTime | None = None) -> None:
        self.socket.send_multipart(self.session.encode(message, ltime=ltime), flags=zmq.NOBLOCK, copy=False)

    def close(self) -> None:
        self.socket.close()


@dataclass
class GapCounter:
    """Sequence tracking: PUB/SUB loses silently, so count what is missing.

    A sender numbers each topic apart (``Session``), and a new run starts again from 0, so
    the count is kept per sender, run and topic: a subscriber to some topics sees no hole
    where the others went, and a restart is not a loss.
    """

    last: dict[tuple[str, str | None, str], int] = field(default_factory=dict)
    by_sender: dict[str, int] = field(default_factory=dict)

    @property
    def missed(self) -> int:
        return sum(self.by_sender.values())

    def see(self, received: Received) -> int:
        """Record a received message's ``seq``; return how many messages of its topic were skipped."""
        envelope = received.envelope
        key = (envelope.sender, envelope.run_id, received.message.topic())
        previous = self.last.get(key)
        self.last[key] = envelope.seq
        if previous is None or envelope.seq <= previous:  # first sight, or the sender restarted
            return 0
        gap = envelope.seq - previous - 1
        self.by_sender[envelope.sender] = self.by_sender.get(envelope.sender, 0) + gap
        return gap


class Subscriber:
    """SUB connected to the bus's XPUB side, yielding validated messages."""

    def __init__(self, ctx: zmq.Context, endpoint: str, prefixes: Sequence[str] = ("",), hwm: int = HWM):
        self.socket = make_socket(ctx, zmq.SUB, hwm=hwm, maxmsgsize=SMALL_MESSAGE_BYTES)
        for prefix in prefixes:
            self.socket.setsockopt(zmq.SUBSCRIBE, prefix.encode())
        connect(self.socket, endpoint)
        self.gaps = GapCounter()
        self.rejected = 0

    def receive(self) -> Received | None:
        """One message that is waiting, or None. Garbage is logged and skipped."""
        frames = self.socket.recv_multipart(copy=False)
        try:
            received = decode(frames)
        except ProtocolError as exc:
            self.rejected += 1
            log.warning("dropped a bad bus message: %s", exc)
            return None
        gap = self.gaps.see(received)
        if gap:
            log.warning("missed %d message(s) from %s on the bus", gap, received.envelope.sender)
        return received

    def close(self) -> None:
        self.socket.close()


class RequestTimeout(RuntimeError):
    """No reply after every retry: the server is down or wedged.

    The requester already closed its socket; calling again opens a fresh one.
    """


class Requester:
    """Lazy Pirate client over REQ: poll with a timeout, reopen, retry with the same id.

    A REQ socket that timed out is wedged (its next send fails), so it is
    closed and replaced; the request id stays the same so the server can answer
    a duplicate with the reply it already gave instead of acting twice.
    """

    def __init__(self, ctx: zmq.Context, endpoint: str, sender: str, *, timeout_s: float = 2.0, retries: int = 2):
        self.ctx, self.endpoint = ctx, endpoint
        self.timeout_ms = int(timeout_s * 1000)
        self.retries = retries
        self.session = Session(sender)
        self.socket: zmq.Socket | None = None

    def request(self, message: Message, msg_id: str | None = None) -> Message:
        request_id = msg_id or uuid.uuid4().hex
        frames = self.session.encode(message, msg_id=request_id)
        for _attempt in range(self.retries + 1):
            if self.socket is None:
                self.socket = make_socket(self.ctx, zmq.REQ, maxmsgsize=SMALL_MESSAGE_BYTES)
                connect(self.socket, self.endpoint)
            self.socket.send_multipart(frames)
            if self.socket.poll(self.timeout_ms, zmq.POLLIN):
                reply = decode(self.socket.recv_multipart())
                if reply.envelope.parent not in (None, request_id):
                    raise ProtocolError(f"reply names request {reply.envelope.parent}, expected {request_id}")
                return reply.message
            self.socket.close(linger=0)
            self.socket = None
        raise RequestTimeout(
            f"no reply from {self.endpoint} after {self.retries + 1} attempt(s) of {self.timeout_ms} ms"
        )

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close(linger=0)
            self.socket = None


@dataclass(frozen=True)
class Routed(Generic[M_co]):
    """A message received on a ROUTER, with the route to answer it and who its key proved the
    sender is (``peer``; None with curve off)."""

    route: list[bytes]
    received: Received[M_co]
    peer: security.Peer | None = None


def recv_routed(sock: zmq.Socket, session: Session) -> Routed[Message] | None:
    """Receive on a ROUTER. Garbage gets an ErrorReply (REQ peers would wedge otherwise)."""
    frames = sock.recv_multipart(copy=False)
    # DEALER peers: [identity, *msg]; REQ peers: [identity, b"", *msg]
    split = 2 if len(frames) > 1 and len(frames[1]) == 0 else 1
    route = [f.bytes for f in frames[:split]]
    try:
        return Routed(route, decode(frames[split:]), security.peer_of(frames[0]))
    except ProtocolError as exc:
        log.warning("bad request from %r: %s", route[0][:64], exc)
        reply = ErrorReply(code=ErrorCode.BAD_MESSAGE, message=str(exc))
        send_routed(sock, session, route, reply, parent=claimed(frames[split:], "id"))
        return None


def send_routed(
    sock: zmq.Socket, session: Session, route: list[bytes], message: Message, parent: str | None = None
) -> bool:
    """Send on a ROUTER; False when the peer is gone (ROUTER_MANDATORY) or its queue is full."""
    try:
        sock.send_multipart([*route, *session.encode(message, parent=parent)], flags=zmq.NOBLOCK, copy=False)
        return True
    except (zmq.Again, zmq.ZMQError) as exc:
        log.warning("could not send %s to %r: %s", message.TYPE, route[0], exc)
        return False


def send(
    sock: zmq.Socket, session: Session, message: Message, *, ltime: LogicalTime | None = None, parent: str | None = None
) -> None:
    """Send on a DEALER (or PUSH/PAIR) socket."""
    sock.send_multipart(session.encode(message, ltime=ltime, parent=parent), copy=False)


def recv(sock: zmq.Socket) -> Received[Message]:
    """Receive one message on a DEALER; raises ProtocolError on garbage."""
    return decode(sock.recv_multipart(copy=False))


class BindError(RuntimeError):
    """An endpoint could not be bound (in use by another run, or not an address here)."""


def bind(sock: zmq.Socket, endpoint: str) -> str:
    """Bind as a CURVE server, returning the real endpoint (a ``:0`` port becomes the one chosen)."""
    security.serve(sock, endpoint)
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        raise BindError(
            f"cannot bind {endpoint}: {exc.strerror} (another run on this port? "
            "change it under addresses: in the config)"
        ) from None
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


def connect(sock: zmq.Socket, endpoint: str) -> None:
    """Connect as a CURVE client with the identity of the socket's context."""
    security.join(sock, endpoint)
    sock.connect(endpoint)


__all__ = [
    "BindError",
    "GapCounter",
    "Publisher",
    "RequestTimeout",
    "Requester",
    "Routed",
    "Subscriber",
    "bind",
    "connect",
    "make_socket",
    "recv",
    "recv_routed",
    "send",
    "send_routed",
]
