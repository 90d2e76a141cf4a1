"""Seeded hostile frames, and an authenticated hostile peer that sends them to a live run's bound sockets.

Shared by ``tests/integration/test_fuzz.py`` (a few thousand frames per socket, asserted) and
``bench/fuzz.py`` (10,000+, printed). The peer holds the user's client key (``security.context()``),
as a buggy or hostile local tool would, and fuzzes, all at once, one thread per socket:

* ``command/REQ``: the controller's command ROUTER (``addresses.controller``), lock-step: every
  frame sent must get one reply before the next (a REQ that gets none is closed and reopened);
* ``command/DEALER``: the same ROUTER as a DEALER, up to ``WINDOW`` requests in flight; replies are
  counted against requests (a reply to a frame that began with an empty frame comes back behind
  an empty delimiter, which is stripped);
* ``data/DEALER``: the learner's data ROUTER (``addresses.data``), the same way;
* ``bus_in/PUB``: the bus's XSUB (``addresses.bus_in``). A PUB sends only what its subscribers asked
  for, so a ``keeper`` SUB subscribed to everything holds the subscription ``""`` open on the bus,
  and the PUB waits until a probe of its own comes round before fuzzing: then every frame reaches
  the controller's gate, which must drop all but ``external.*`` (counted in ``security.dropped_bus``);
* ``bus_out/XSUB``: the bus's XPUB (``addresses.bus_out``), upstream: an XSUB may send anything
  towards the XPUB it connects to (a SUB only subscription frames, through setsockopt).

Meanwhile :class:`Watch` asks ``status`` every 50 ms from a process of its own (latency, failures,
the last state) and samples the controller's and the learner's RSS (psutil). :func:`fuzz` does the
whole campaign against a started ``helpers.Run`` and returns a :class:`Result`; ``Result.problems()``
lists every check that failed (empty when the run came through), the figures are in its fields.

Frame kinds (:data:`KINDS`, each a ``Frames`` method, picked with a seeded ``random.Random`` per
socket): random bytes, truncated payloads, msgpack declaring huge sizes or nested deep, wrong
types (not a map, wrong envelope types, non-string keys, extension types, bad UTF-8), valid
envelopes with invalid bodies (always an unknown field, so never valid), invalid envelopes, wrong
topics, valid messages the socket does not take (``unexpected``; a rollout from a client on the
data socket: ``rejected``), reused request ids (same body: the kept reply; another body:
``bad_message``), too many frames, empty frames, bad array references, and big frames (1 to 5 MB:
over ``MAX_PAYLOAD_BYTES``, a huge topic, a huge array frame). No frame is a valid request the
socket acts on (no status, no patch, no policy request, no registration): each is checked with the
run's own codec before it goes (``Frames.next``), so every frame sent to the command and data sockets
must be answered with an ``ErrorReply``. None is refused by the transport: the largest is 5 MB, and
MAXMSGSIZE is 1 GiB on the command and data sockets, 64 MiB on the bus (``protocol/sockets.py``); the
ROUTERs answer with NOBLOCK, so a reply would be lost only if the peer let more than a high-water mark
(1000) of replies queue up, hence ``WINDOW``. Messages of many frames to the bus
(``many_frames_on_bus``) and valid unhandled messages with arrays to the controller
(``arrays_to_controller``) are options: the test and the bench turn both on (each once stalled or
killed the controller).
"""

from __future__ import annotations

import json
import random
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import msgpack
import psutil
import zmq
from helpers_messages import SAMPLES

from dynamicrl.protocol import PROTOCOL_VERSION, security
from dynamicrl.protocol.codec import (
    MAX_ARRAY_FRAMES,
    MAX_PAYLOAD_BYTES,
    MAX_TOPIC_BYTES,
    ProtocolError,
    Session,
    decode,
)
from dynamicrl.protocol.messages import (
    MESSAGE_TYPES,
    BarrierReached,
    CheckpointPart,
    CheckpointRequest,
    ErrorReply,
    Goodbye,
    Heartbeat,
    HistoryRequest,
    MonitorReport,
    ParamsRequest,
    PatchApplied,
    PatchRequest,
    PauseRequest,
    PolicyRequest,
    Ready,
    RegisterRequest,
    ResumeRequest,
    StatusRequest,
    StopRequest,
    TrainingDone,
)
from dynamicrl.protocol.sockets import connect

#: The types the controller acts on (``services/controller/app.py``, ``Controller.handlers``): never sent valid.
CONTROLLER_HANDLES = frozenset(
    t.TYPE
    for t in (
        RegisterRequest,
        Ready,
        Heartbeat,
        Goodbye,
        PauseRequest,
        BarrierReached,
        ResumeRequest,
        PatchRequest,
        PatchApplied,
        CheckpointRequest,
        CheckpointPart,
        TrainingDone,
        StopRequest,
        StatusRequest,
        ParamsRequest,
        HistoryRequest,
        MonitorReport,
    )
)
#: ... and the learner on its data socket (a ``data.rollout`` from a client is refused: sent valid).
LEARNER_SERVES = frozenset({PolicyRequest.TYPE})
#: Sockets, in the order of the table.
SOCKETS = ("command/REQ", "command/DEALER", "data/DEALER", "bus_in/PUB", "bus_out/XSUB")
REPLYING = ("command/REQ", "command/DEALER", "data/DEALER")
#: Requests in flight at most on a DEALER (a hostile peer that never reads would only fill its own queue).
WINDOW = 256
#: How long a request may wait for its reply before it counts as unanswered.
REPLY_TIMEOUT_S = 10.0
#: ``status`` must answer within this during the fuzzing, and memory come back to within this of its baseline.
STATUS_LIMIT_S = 0.5
RSS_MARGIN_MB = 50.0
MB = 1 << 20


def _encoded(type_name: str, sender: str = "fuzz") -> list[bytes]:
    return [bytes(f) for f in Session(sender).encode(SAMPLES[type_name]())]


#: Every sample's frames, encoded once: the types that carry arrays are those with frames past the payload.
_ENCODED = {name: _encoded(name) for name in SAMPLES}
ARRAY_TYPES = frozenset(name for name, frames in _ENCODED.items() if len(frames) > 2)


class Frames:
    """Seeded malformed messages for one socket (``target``: ``command``, ``data``, ``bus_in`` or ``bus_out``).

    ``arrays_to_controller``: also send the controller valid messages with arrays that it does not
    handle (``data.rollout``, ``external.sample``...); ``skip``: kinds not to send (see ``test_fuzz.py``
    for both).
    """

    def __init__(
        self, rng: random.Random, target: str, arrays_to_controller: bool = False, skip: frozenset[str] = frozenset()
    ) -> None:
        self.rng, self.target = rng, target
        self.kinds = [(k, w) for k, w in (BUS_OUT_KINDS if target == "bus_out" else KINDS) if k not in skip]
        if target == "command":
            self.unhandled = sorted(
                t
                for t in MESSAGE_TYPES
                if t not in CONTROLLER_HANDLES and (arrays_to_controller or t not in ARRAY_TYPES)
            )
        elif target == "data":
            self.unhandled = sorted(t for t in MESSAGE_TYPES if t not in LEARNER_SERVES)
        else:  # the bus: anything, also what members publish (metrics.train, control.state) under their names
            self.unhandled = sorted(MESSAGE_TYPES)
        self.sent_valid: list[list[bytes]] = []  # valid unhandled messages sent, for id reuse

    def next(self) -> tuple[str, list[bytes]]:
        """(kind, frames) of the next message. Each is checked here with the codec the run uses: every kind but
        ``VALID_KINDS`` must be refused (so it can only be answered with ``bad_message``)."""
        kind = self.rng.choices([k for k, _ in self.kinds], weights=[w for _, w in self.kinds])[0]
        frames = getattr(self, kind)()
        if kind not in UPSTREAM_KINDS:
            try:
                decode(frames)
            except ProtocolError:
                if kind in VALID_KINDS:
                    raise AssertionError(f"fuzzing bug: a {kind} message does not decode") from None
            else:
                if kind not in VALID_KINDS:
                    raise AssertionError(f"fuzzing bug: a {kind} message decodes: {frames[:2]!r:.300}")
        return kind, frames

    # -- helpers
    def _id(self) -> str:
        return f"{self.rng.getrandbits(128):032x}"

    def _header(self, type_name: str, body: Any) -> dict[str, Any]:
        return {
            "v": PROTOCOL_VERSION,
            "type": type_name,
            "sender": self.rng.choice(["fuzz", "envrunner.1", "learner.1", "controller", "logger.1"]),
            "seq": self.rng.randrange(1000),
            "run_id": None,
            "ts": 1.7e9 + self.rng.random(),
            "id": self._id(),
            "parent": None,
            "ltime": None,
            "body": body,
        }

    def _sample(self) -> tuple[str, list[bytes], dict[Any, Any]]:
        """A valid message of a random type with a fresh id: its type, frames and unpacked payload."""
        name = self.rng.choice(sorted(_ENCODED))
        frames = list(_ENCODED[name])
        payload = msgpack.unpackb(frames[1], raw=False)
        payload["id"] = self._id()
        payload["sender"] = self._header(name, {})["sender"]
        return name, frames, payload

    def _junk_value(self) -> Any:
        return self.rng.choice(
            [
                None,
                -1,
                2**63,
                1.5,
                float("nan"),
                "",
                "x" * self.rng.randrange(300),
                b"\x00\xff",
                [1, [2]],
                {"a": 1},
                True,
            ]
        )

    def _packed(self, payload: Any) -> bytes:
        return msgpack.packb(payload, use_bin_type=True)

    # -- the kinds
    def random_bytes(self) -> list[bytes]:
        sizes = [0, 1, 2, 8, 64, 512, 4096]
        return [self.rng.randbytes(self.rng.choice(sizes)) for _ in range(self.rng.randint(1, 4))]

    def truncated(self) -> list[bytes]:
        _, frames, _ = self._sample()
        cut = self.rng.randrange(len(frames[1]))
        return [frames[0], frames[1][:cut], *frames[2:]]

    def huge_msgpack(self) -> list[bytes]:
        declared = self.rng.choice(
            [
                b"\xdb\xff\xff\xff\xff",  # str32 of 4 GiB
                b"\xc6\xff\xff\xff\xff",  # bin32 of 4 GiB
                b"\xdd\xff\xff\xff\xff",  # array32 of 4 G items
                b"\xdf\xff\xff\xff\xff",  # map32 of 4 G pairs
                b"\x81\xa4body\xdf\x7f\xff\xff\xff",  # a map whose body declares 2 G pairs
                b"\x91" * 100_000,  # arrays nested 100,000 deep
                b"\x81\xa1a" * 50_000 + b"\xc0",  # maps nested 50,000 deep
            ]
        )
        topic = self.rng.choice(sorted(MESSAGE_TYPES)).encode()
        return [topic, declared + self.rng.randbytes(self.rng.randrange(64))]

    def wrong_types(self) -> list[bytes]:
        _, frames, payload = self._sample()
        choice = self.rng.randrange(8)
        if choice == 0:
            packed = self._packed(self.rng.choice([[1, 2, 3], 42, "a string", None, b"bytes", 1.5]))
        elif choice == 1:  # an envelope field of the wrong type
            key = self.rng.choice(sorted(payload))
            payload[key] = self.rng.choice([[1], {"x": 1}])  # valid for no envelope field, nor as the body
            packed = self._packed(payload)
        elif choice == 2:  # non-string map keys
            payload[self.rng.choice([1, -5, 2.5])] = 2
            packed = self._packed(payload)
        elif choice == 3:  # an extension type in the body
            payload["body"] = {"x": msgpack.ExtType(self.rng.randrange(128), self.rng.randbytes(8))}
            packed = self._packed(payload)
        elif choice == 4:  # a timestamp (ext -1) in the body
            payload["body"] = {"when": msgpack.Timestamp(1, 2)}
            packed = msgpack.packb(payload, use_bin_type=True, datetime=False)
        elif choice == 5:  # invalid UTF-8 in a string: str8 of 3 bytes holding \xff\xfe\xfd
            packed = b"\x81\xa1v\xd9\x03\xff\xfe\xfd"
        elif choice == 6:  # the body is not a map
            payload["body"] = self.rng.choice([[1, 2], "body", 7, None])
            packed = self._packed(payload)
        else:  # a bool where the type goes
            payload["type"] = True
            packed = self._packed(payload)
        return [frames[0], packed, *frames[2:]]

    def invalid_body(self) -> list[bytes]:
        _, frames, payload = self._sample()
        body = payload["body"]
        for _ in range(self.rng.randint(0, 3)):  # wrong types for real fields
            if body:
                body[self.rng.choice(sorted(body))] = self._junk_value()
        body["__fuzz__" + self.rng.choice(["", "x", "é"])] = self._junk_value()  # never valid: unknown field
        return [frames[0], self._packed(payload), *frames[2:]]

    def bad_envelope(self) -> list[bytes]:
        name, frames, payload = self._sample()
        key, value = self.rng.choice(
            [
                ("v", "2.0"),
                ("v", "0.9"),
                ("v", 1.6),
                ("v", None),
                ("v", ""),
                ("v", "one.six"),
                ("seq", -1),
                ("seq", "one"),
                ("id", ""),
                ("id", "x" * 65),
                ("id", None),
                ("sender", "x" * 129),
                ("sender", None),
                ("ts", "now"),
                ("run_id", 5),
                ("parent", 7),
                ("ltime", {"iteration": -1, "env_step": 0}),
                ("ltime", {"iteration": 1}),
                ("zz_extra", 1),
                ("type", "control.no_such_type"),
                ("type", name + " "),
                ("type", "x" * 10_000),
            ]
        )
        payload[key] = value
        if self.rng.random() < 0.2:
            del payload[self.rng.choice(["v", "type", "sender", "seq", "id", "ts"])]
        return [frames[0], self._packed(payload), *frames[2:]]

    def wrong_topic(self) -> list[bytes]:
        name, frames, payload = self._sample()
        others = [t for t in sorted(MESSAGE_TYPES) if t != name]
        topic = self.rng.choice(
            [
                self.rng.choice(others).encode(),
                self.rng.randbytes(self.rng.randrange(1, 40)),
                b"",
                b"\xff\xfe",
                name.encode() + b"\x00",
                b"external.",
                b"x" * (MAX_TOPIC_BYTES + 1),
            ]
        )
        if topic == b"external." + str(payload["body"].get("stream", "")).encode() or topic == name.encode():
            topic = b"never.a.topic"
        return [topic, self._packed(payload), *frames[2:]]

    def unhandled_valid(self) -> list[bytes]:
        """A valid message of a type this socket does not act on: ``unexpected`` (``rejected`` for a rollout)."""
        name = self.rng.choice(self.unhandled)
        payload = msgpack.unpackb(_ENCODED[name][1], raw=False)
        payload["id"] = self._id()
        if self.target.startswith("bus"):
            payload["sender"] = self._header(name, {})["sender"]  # forged: a member's name from a client key
        frames = [_ENCODED[name][0], self._packed(payload), *_ENCODED[name][2:]]
        self.sent_valid.append(frames)
        del self.sent_valid[:-64]
        return frames

    def reused_id(self) -> list[bytes]:
        """An earlier valid request again: byte for byte (its kept reply), or its id with another body."""
        if not self.sent_valid:
            return self.unhandled_valid()
        frames = self.rng.choice(self.sent_valid)
        if self.rng.random() < 0.5:
            return list(frames)
        payload = msgpack.unpackb(frames[1], raw=False)
        name = self.rng.choice(self.unhandled)
        other = msgpack.unpackb(_ENCODED[name][1], raw=False)
        other["id"] = payload["id"]
        return [_ENCODED[name][0], self._packed(other), *_ENCODED[name][2:]]

    def many_frames(self) -> list[bytes]:
        _, frames, _ = self._sample()
        count = self.rng.choice([MAX_ARRAY_FRAMES + 1, 1000, 5000])
        return [frames[0], frames[1], *[self.rng.randbytes(self.rng.randrange(16)) for _ in range(count)]]

    def empty_frames(self) -> list[bytes]:
        topic = self.rng.choice(sorted(MESSAGE_TYPES)).encode()
        return self.rng.choice(
            [[b""], [b"", b""], [b""] * self.rng.randint(3, 50), [topic, b""], [b"", self._packed({})], [topic]]
        )

    def bad_arrays(self) -> list[bytes]:
        name = self.rng.choice(sorted(ARRAY_TYPES))
        frames = list(_ENCODED[name])
        payload = msgpack.unpackb(frames[1], raw=False)
        refs: list[dict[str, Any]] = []

        def find(value: Any) -> None:
            if isinstance(value, dict):
                if "__ndarray__" in value:
                    refs.append(value)
                else:
                    for v in value.values():
                        find(v)
            elif isinstance(value, list):
                for v in value:
                    find(v)

        find(payload["body"])
        ref = self.rng.choice(refs)
        key, value = self.rng.choice(
            [
                ("__ndarray__", 999),
                ("__ndarray__", -1),
                ("__ndarray__", "0"),
                ("dtype", "|O"),
                ("dtype", "<c16"),
                ("dtype", ">f4"),
                ("shape", [-1]),
                ("shape", [2**62, 4]),
                ("shape", [10**6, 10**6]),
                ("shape", "3"),
                ("extra", 1),
            ]
        )
        ref[key] = value
        payload["id"] = self._id()
        extra = [self.rng.randbytes(8)] if self.rng.random() < 0.3 else []  # an unreferenced frame too
        return [frames[0], self._packed(payload), *frames[2:], *extra]

    def big(self) -> list[bytes]:
        size = self.rng.randint(1 * MB, 5 * MB)
        _, frames, payload = self._sample()
        choice = self.rng.randrange(4)
        if choice == 0:  # random bytes
            return [frames[0], self.rng.randbytes(size)]
        if choice == 1:  # a valid envelope padded past MAX_PAYLOAD_BYTES
            payload["body"]["padding"] = "x" * max(size, MAX_PAYLOAD_BYTES + 1)
            return [frames[0], self._packed(payload), *frames[2:]]
        if choice == 2:  # a huge topic
            return [b"t" * size, frames[1], *frames[2:]]
        return [frames[0], frames[1], *frames[2:], self.rng.randbytes(size)]  # a huge unreferenced array frame

    # -- upstream into the bus's XPUB (bus_out)
    def subscription(self) -> list[bytes]:
        prefix = self.rng.randbytes(self.rng.choice([1, 8, 40, 255, 256, 257, 1000]))
        return [self.rng.choice([b"\x00", b"\x01"]) + prefix]

    def upstream_multipart(self) -> list[bytes]:
        return [b"\x01" + self.rng.randbytes(4), *self.random_bytes()]


#: (kind, weight) for the command, data and bus_in sockets; big frames are rare (each costs megabytes).
KINDS: list[tuple[str, float]] = [
    ("random_bytes", 10),
    ("truncated", 10),
    ("huge_msgpack", 6),
    ("wrong_types", 10),
    ("invalid_body", 12),
    ("bad_envelope", 10),
    ("wrong_topic", 8),
    ("unhandled_valid", 10),
    ("reused_id", 5),
    ("many_frames", 3),
    ("empty_frames", 6),
    ("bad_arrays", 6),
    ("big", 0.6),
]
#: The kinds that are valid messages (of a type the socket does not act on); upstream frames are no messages.
VALID_KINDS = frozenset({"unhandled_valid", "reused_id"})
UPSTREAM_KINDS = frozenset({"subscription", "upstream_multipart"})
#: ... and upstream into the XPUB: mostly what is not a subscription.
BUS_OUT_KINDS: list[tuple[str, float]] = [
    *[(k, w) for k, w in KINDS if k != "big"],
    ("subscription", 15),
    ("upstream_multipart", 5),
    ("big", 0.6),
]


# -- the peer -----------------------------------------------------------------------------------------------
@dataclass
class SocketResult:
    """What one socket's fuzzing sent and got back."""

    name: str
    sent: int = 0
    bytes_sent: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    replies: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    not_errors: list[str] = field(default_factory=list)  # replies that were no ErrorReply (their types)
    undecodable: int = 0
    unanswered: list[str] = field(default_factory=list)  # kinds of the requests that got no reply (REQ)
    seconds: float = 0.0
    slowest: list[tuple[float, str, int]] = field(default_factory=list)  # REQ: the 5 slowest (s, kind, bytes)
    error: str = ""  # the peer itself failed (a send that timed out, ...)

    def take(self, frames: list[bytes]) -> None:
        """Count one reply (a leading empty delimiter, as a REQ-style request gets it back, stripped)."""
        self.replies += 1
        while frames and frames[0] == b"":
            frames = frames[1:]
        try:
            message = decode(frames).message
        except Exception:
            self.undecodable += 1
            return
        if isinstance(message, ErrorReply):
            self.codes[message.code.value] += 1
        else:
            self.not_errors.append(message.TYPE)


def _socket(ctx: zmq.Context, kind: int, endpoint: str) -> zmq.Socket:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDTIMEO, int(REPLY_TIMEOUT_S * 1000))
    connect(sock, endpoint)
    return sock


def _send(result: SocketResult, sock: zmq.Socket, kind: str, frames: list[bytes]) -> None:
    sock.send_multipart(frames)
    result.sent += 1
    result.bytes_sent += sum(len(f) for f in frames)
    result.kinds[kind] += 1


def fuzz_req(ctx: zmq.Context, endpoint: str, frames: Frames, count: int, result: SocketResult) -> None:
    """Lock-step on a REQ: each frame's reply before the next; no reply within REPLY_TIMEOUT_S: reopen."""
    sock = _socket(ctx, zmq.REQ, endpoint)
    try:
        for _ in range(count):
            kind, message = frames.next()
            sent = time.monotonic()
            _send(result, sock, kind, message)
            if sock.poll(int(REPLY_TIMEOUT_S * 1000)):
                result.take(sock.recv_multipart())
                took = (time.monotonic() - sent, kind, sum(len(f) for f in message))
                result.slowest = sorted([*result.slowest, took], reverse=True)[:5]
            else:
                result.unanswered.append(kind)
                sock.close(linger=0)
                sock = _socket(ctx, zmq.REQ, endpoint)
    finally:
        sock.close(linger=0)


def fuzz_dealer(ctx: zmq.Context, endpoint: str, frames: Frames, count: int, result: SocketResult) -> None:
    """Up to WINDOW requests in flight on a DEALER, replies read as they come; the rest awaited at the end."""
    sock = _socket(ctx, zmq.DEALER, endpoint)
    try:

        def read(timeout_ms: int) -> bool:
            if not sock.poll(timeout_ms):
                return False
            while sock.poll(0):
                result.take(sock.recv_multipart())
            return True

        for _ in range(count):
            while result.sent - result.replies >= WINDOW:
                if not read(int(REPLY_TIMEOUT_S * 1000)):
                    result.error = f"no reply for {REPLY_TIMEOUT_S} s with {WINDOW} requests in flight"
                    return
            kind, message = frames.next()
            _send(result, sock, kind, message)
            read(0)
        while result.replies < result.sent and read(int(REPLY_TIMEOUT_S * 1000)):
            pass
    finally:
        sock.close(linger=0)


@dataclass
class BusResult(SocketResult):
    """A bus socket's: also how many of its messages the gate must drop (``bus_in``: all but ``external.*``)."""

    must_drop: int = 0
    received: int = 0  # what the keeper (bus_in) or the XSUB (bus_out) got from the bus meanwhile


def fuzz_pub(ctx: zmq.Context, bus_in: str, bus_out: str, frames: Frames, count: int, result: BusResult) -> None:
    """A PUB into the bus, once a probe of its own comes back round through a keeper subscribed to everything."""
    keeper = _socket(ctx, zmq.SUB, bus_out)
    keeper.setsockopt(zmq.SUBSCRIBE, b"")
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 0)  # never drop here: every message must reach the gate
    pub.setsockopt(zmq.LINGER, int(REPLY_TIMEOUT_S * 1000))  # ... also those still queued at close
    connect(pub, bus_in)
    probe = [b"external.fuzz-probe", b"probe"]
    try:
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        while True:
            pub.send_multipart(probe)
            if keeper.poll(100) and probe in _drain(keeper, result):
                break
            if time.monotonic() > deadline:
                result.error = "the PUB's probe never came round: nothing it sent reached the bus"
                return
        for _ in range(count):
            kind, message = frames.next()
            _send(result, pub, kind, message)
            result.must_drop += not message[0].startswith(b"external.")
            if result.sent % 64 == 0:
                _drain(keeper, result)
    finally:
        pub.close()
        keeper.close(linger=0)


def fuzz_xsub(ctx: zmq.Context, bus_out: str, frames: Frames, count: int, result: BusResult) -> None:
    """An XSUB sending anything upstream into the bus's XPUB (and reading whatever its subscriptions bring)."""
    sock = _socket(ctx, zmq.XSUB, bus_out)
    try:
        for _ in range(count):
            kind, message = frames.next()
            _send(result, sock, kind, message)
            if result.sent % 64 == 0:
                _drain(sock, result)
    finally:
        sock.close(linger=0)


def _drain(sock: zmq.Socket, result: BusResult) -> list[list[bytes]]:
    got = []
    while sock.poll(0):
        got.append(sock.recv_multipart())
    result.received += len(got)
    return got


# -- watching the run ------------------------------------------------------------------------------------
class Watch(threading.Thread):
    """``status`` every ``interval`` s from a process of its own (``python tests/fuzzing.py watch``, on one
    connection: latencies, failures, the last state), and the RSS of ``pids`` (MB) sampled meanwhile.

    Its own process, not a thread beside the hostile peer's: in one interpreter the peer's threads hold
    the GIL for most of each status round trip, and that latency would be this process's, not the run's.
    """

    def __init__(self, endpoint: str, pids: dict[str, int], keys: str, interval: float = 0.05) -> None:
        super().__init__(daemon=True, name="fuzz-status-watch")
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.peak = dict.fromkeys(pids, 0.0)
        self.latencies: list[float] = []
        self.started: list[float] = []  # when each status request went out (time.monotonic(): system-wide)
        self.failures: list[str] = []
        self.last_state = ""
        self.stopping = threading.Event()
        self.child = subprocess.Popen(
            [sys.executable, __file__, "watch", endpoint, keys, str(interval)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.child.stdout is not None and self.child.stdin is not None
        ready = self.child.stdout.readline()  # its imports done, its connection made
        if ready.strip() != "ready":
            self.child.kill()
            raise RuntimeError(f"the status watcher did not start: {ready!r}")

    def rss(self) -> dict[str, float]:
        now = {}
        for name, proc in self.procs.items():
            try:
                now[name] = proc.memory_info().rss / MB
            except psutil.Error:
                now[name] = float("nan")
        return now

    def run(self) -> None:
        while not self.stopping.wait(0.05):
            for name, value in self.rss().items():
                self.peak[name] = max(self.peak[name], value)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=10)
        try:
            out, _ = self.child.communicate(input="", timeout=30)  # stdin closed: it stops and reports
            report = json.loads(out.strip().splitlines()[-1])
        except (subprocess.TimeoutExpired, ValueError, IndexError) as exc:
            self.child.kill()
            self.child.wait(timeout=10)
            self.failures.append(f"the status watcher failed: {exc!r}")
            return
        self.started, self.latencies = report["started"], report["latencies"]
        self.failures += report["failures"]
        self.last_state = report["state"]

    @property
    def worst(self) -> float:
        return max(self.latencies, default=float("nan"))

    @property
    def p99(self) -> float:
        if len(self.latencies) < 2:
            return self.worst
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[98]


def _watch_main(endpoint: str, keys: str, interval: float) -> None:
    """The watcher's process: status every ``interval`` s until stdin closes, then one JSON line."""
    from dynamicrl.clients.control import ControlClient

    closed = threading.Event()

    def wait_for_eof() -> None:
        sys.stdin.read()
        closed.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
    started: list[float] = []
    latencies: list[float] = []
    failures: list[str] = []
    state = ""
    ctx = security.context(keys=keys)
    with ControlClient(endpoint, timeout_s=2.0, retries=0, ctx=ctx) as client:
        client.status()  # connected, and the controller answers
        print("ready", flush=True)
        while not closed.is_set():
            begin = time.monotonic()
            try:
                state = client.status().state.value
            except Exception as exc:  # a timeout, a refusal: each one a failure
                failures.append(f"{type(exc).__name__}: {str(exc)[:200]}")
            started.append(begin)
            latencies.append(time.monotonic() - begin)
            closed.wait(interval)
    ctx.term()
    print(json.dumps({"started": started, "latencies": latencies, "failures": failures, "state": state}), flush=True)


@dataclass
class Memory:
    baseline: float
    peak: float
    after: float

    @property
    def growth(self) -> float:
        return self.after - self.baseline


@dataclass
class Result:
    """A campaign's figures, and :meth:`problems`: what went wrong (empty: nothing)."""

    frames: int
    sockets: dict[str, SocketResult]
    status_latencies: list[float]
    status_slow: list[tuple[float, float]]  # (s into the fuzzing, latency) of every status slower than the limit
    status_failures: list[str]
    status_worst: float
    status_p99: float
    memory: dict[str, Memory]
    dropped_bus: int  # the controller's security.dropped_bus: how much it went up
    seconds: float
    checks: list[str] = field(default_factory=list)  # problems found by ``fuzz`` itself (the run's files, ...)

    def problems(self, timed: bool = True) -> list[str]:
        """What went wrong; ``timed``: also status slower than ``STATUS_LIMIT_S`` (the bench's figure, not a
        test's: a test asserts only that status always answered)."""
        found = list(self.checks)
        for name, sock in self.sockets.items():
            if sock.error:
                found.append(f"{name}: {sock.error}")
            if name in REPLYING:
                if sock.replies != sock.sent:
                    kinds = Counter(sock.unanswered).most_common(5)
                    found.append(f"{name}: {sock.sent} requests sent, {sock.replies} replies; unanswered kinds {kinds}")
                if sock.not_errors or sock.undecodable:
                    found.append(
                        f"{name}: {len(sock.not_errors)} replies were no ErrorReply "
                        f"({Counter(sock.not_errors).most_common(5)}), {sock.undecodable} undecodable"
                    )
        pub = self.sockets.get("bus_in/PUB")
        if isinstance(pub, BusResult) and self.dropped_bus < pub.must_drop:
            found.append(
                f"bus_in/PUB: {pub.must_drop} messages the gate must drop, dropped_bus went up by only "
                f"{self.dropped_bus}"
            )
        if self.status_failures:
            found.append(f"status failed {len(self.status_failures)} time(s): {self.status_failures[:3]}")
        if timed and not self.status_worst <= STATUS_LIMIT_S:
            slow = ", ".join(f"{lat:.2f} s at {t:.1f} s" for t, lat in self.status_slow[:10])
            found.append(
                f"status took {self.status_worst:.3f} s at worst (limit {STATUS_LIMIT_S} s); "
                f"{len(self.status_slow)} of {len(self.status_latencies)} over the limit: {slow}"
            )
        for name, mem in self.memory.items():
            if not mem.growth <= RSS_MARGIN_MB:
                found.append(
                    f"{name} RSS {mem.baseline:.0f} MB before, {mem.peak:.0f} MB peak, {mem.after:.0f} MB after "
                    f"(more than {RSS_MARGIN_MB:.0f} MB above its baseline)"
                )
        return found


def _dropped_bus(run: Any) -> int:
    status = run.status()
    return status.security.dropped_bus if status.security is not None else 0


def _check_metrics(rows: list[dict[str, str]], before: list[dict[str, str]], per_iteration: int) -> list[str]:
    """metrics.csv after the fuzzing: the rows from before as they were, then only rows the learner trained:
    iterations 1, 2, 3... each with its env steps."""
    found = []
    if rows and None in rows[-1].values():  # the logger is writing that line right now
        rows = rows[:-1]
    if rows[: len(before)] != before:
        found.append("metrics.csv: rows written before the fuzzing changed")
    iterations = [int(r["iteration"]) for r in rows]
    if iterations != list(range(1, len(rows) + 1)):
        found.append(f"metrics.csv: iterations not consecutive from 1: {iterations}")
    wrong = [r["iteration"] for r in rows if int(r["env_steps"]) != int(r["iteration"]) * per_iteration]
    if wrong:
        found.append(f"metrics.csv: rows whose env_steps are not iteration x {per_iteration}: {wrong}")
    return found


def fuzz(
    run: Any,
    frames: int,
    seed: int = 0,
    arrays_to_controller: bool = False,
    many_frames_on_bus: bool = False,
    settle_s: float = 15.0,
    sockets: Sequence[str] = SOCKETS,
) -> Result:
    """The whole campaign against ``run`` (a started ``helpers.Run``, past its first iterations): ``frames``
    messages per socket, every socket of ``sockets`` at once, then the checks of the run's state, files
    and memory. ``arrays_to_controller``, ``many_frames_on_bus``: also send those (see ``test_fuzz.py``).

    Memory "after" is sampled until both processes are back within ``RSS_MARGIN_MB`` of their baselines, or
    ``settle_s`` has passed (the last sample counts).
    """
    pids = {"controller": run.procs[0].pid, "learner": run.procs[1].pid}
    params, journal, metrics = run.params(), run.journal_text(), run.metrics()
    dropped_before = _dropped_bus(run)
    keys = run.config.security.keys
    watch = Watch(run.endpoint, pids, keys)
    samples = []
    for _ in range(5):
        samples.append(watch.rss())
        time.sleep(0.1)
    baseline = {name: statistics.median(s[name] for s in samples) for name in pids}

    ctx = security.context_for(run.config.security)  # the user's client key, as any local tool has it
    results: dict[str, SocketResult] = {
        name: (BusResult(name) if name.startswith("bus") else SocketResult(name)) for name in sockets
    }

    bus_skip = frozenset() if many_frames_on_bus else frozenset({"many_frames"})

    def rng(name: str) -> random.Random:
        return random.Random(f"{seed}:{name}")

    jobs: dict[str, Callable[[], None]] = {
        "command/REQ": lambda: fuzz_req(
            ctx,
            run.endpoint,
            Frames(rng("command/REQ"), "command", arrays_to_controller),
            frames,
            results["command/REQ"],
        ),
        "command/DEALER": lambda: fuzz_dealer(
            ctx,
            run.endpoint,
            Frames(rng("command/DEALER"), "command", arrays_to_controller),
            frames,
            results["command/DEALER"],
        ),
        "data/DEALER": lambda: fuzz_dealer(
            ctx, run.data, Frames(rng("data/DEALER"), "data"), frames, results["data/DEALER"]
        ),
        "bus_in/PUB": lambda: fuzz_pub(
            ctx,
            run.bus_in,
            run.bus_out,
            Frames(rng("bus_in/PUB"), "bus_in", skip=bus_skip),
            frames,
            cast(BusResult, results["bus_in/PUB"]),
        ),
        "bus_out/XSUB": lambda: fuzz_xsub(
            ctx,
            run.bus_out,
            Frames(rng("bus_out/XSUB"), "bus_out", skip=bus_skip),
            frames,
            cast(BusResult, results["bus_out/XSUB"]),
        ),
    }

    def guarded(name: str, job: Callable[[], None]) -> Callable[[], None]:
        def go() -> None:
            started = time.monotonic()
            try:
                job()
            except Exception as exc:
                results[name].error = results[name].error or f"{type(exc).__name__}: {exc}"
            results[name].seconds = time.monotonic() - started

        return go

    started = time.monotonic()
    watch.start()
    threads = [
        threading.Thread(target=guarded(n, j), name=f"fuzz-{n}", daemon=True) for n, j in jobs.items() if n in results
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=600)
    finally:
        watch.stop()
        ctx.term()  # waits (LINGER) for what the PUB still queues
    seconds = time.monotonic() - started

    deadline = time.monotonic() + settle_s
    while True:
        after = watch.rss()
        if all(after[n] - baseline[n] <= RSS_MARGIN_MB for n in pids) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    memory = {n: Memory(baseline[n], max(watch.peak[n], baseline[n], after[n]), after[n]) for n in pids}

    checks, dropped = [], 0
    try:
        run.check_alive()
    except AssertionError as exc:
        checks.append(f"a process died: {exc}")
    else:
        if watch.last_state != "running":
            checks.append(f"the run is {watch.last_state or 'unknown'} after the fuzzing, not running")
        if run.params() != params:
            checks.append("params changed")
        if run.journal_text() != journal:
            checks.append("patches.jsonl changed")
        checks += _check_metrics(run.metrics(), metrics, run.per_iteration)
        dropped = _dropped_bus(run) - dropped_before
    return Result(
        frames=frames,
        sockets=results,
        status_latencies=watch.latencies,
        status_slow=[(t - started, lat) for t, lat in zip(watch.started, watch.latencies) if lat > STATUS_LIMIT_S],
        status_failures=watch.failures,
        status_worst=watch.worst,
        status_p99=watch.p99,
        memory=memory,
        dropped_bus=dropped,
        seconds=seconds,
        checks=checks,
    )


if __name__ == "__main__":  # python tests/fuzzing.py watch ENDPOINT KEYS INTERVAL: the status watcher (Watch)
    _watch_main(sys.argv[2], sys.argv[3], float(sys.argv[4]))
