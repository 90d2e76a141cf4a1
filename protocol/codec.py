"""The one place that turns messages into frames and back.

Frames: ``[topic, payload, *array_buffers]``. ``topic`` is ``message.topic()``:
the message type, or for ``ExternalSample`` ``external.<stream>`` (so PUB/SUB
prefix filtering works; the decoder checks it against the decoded message); ``payload`` is a msgpack map holding the
envelope fields and the body under ``"body"``; every numpy array in the body is
replaced by ``{"__ndarray__": i, "dtype": ..., "shape": [...]}`` and its bytes
travel uncopied as frame ``2 + i``.

Everything that can go wrong while decoding (size, msgpack, version, unknown
type, schema, array layout) comes out as one :class:`ProtocolError`; a peer of
another major version gets its subclass :class:`ProtocolVersionMismatch`.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

import msgpack
from pydantic import ValidationError

from . import PROTOCOL_VERSION
from .envelope import Envelope
from .messages import ARRAY_DTYPES, MESSAGE_TYPES, LogicalTime, Message

if TYPE_CHECKING:
    import numpy as np

#: Largest msgpack payload accepted (arrays excluded): control messages are small.
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024
#: Largest number of array frames in one message.
MAX_ARRAY_FRAMES = 256
#: Longest topic frame: every topic is far shorter (external.<stream> names are bounded too).
MAX_TOPIC_BYTES = 256
_ND = "__ndarray__"

M = TypeVar("M", bound=Message)
M_co = TypeVar("M_co", bound=Message, covariant=True)


class ProtocolError(ValueError):
    """A frame did not decode into a valid message.

    The sender is at fault: log it, answer ``ErrorReply(BAD_MESSAGE)`` where a reply
    is expected, and keep serving. Retrying the same bytes cannot succeed.
    """


class ProtocolVersionMismatch(ProtocolError):
    """The message speaks another major protocol version than this code (``PROTOCOL_VERSION``).

    Not garbage: a peer (or a whole bus) of another generation. A receiver that only
    logs bad frames still drops it, but a monitor should stop and say so, since every
    further message from that peer will be refused too. ``version`` is the peer's
    ``v``, ``expected`` ours, ``sender`` the envelope's sender when it could be read.
    """

    def __init__(self, message: str, *, version: str, sender: str | None = None) -> None:
        super().__init__(message)
        self.version = version
        self.expected = PROTOCOL_VERSION
        self.sender = sender


@dataclass(frozen=True)
class Received(Generic[M_co]):
    """A decoded message with its envelope; ``Received[Heartbeat]`` where the type is known."""

    envelope: Envelope
    message: M_co


class Session:
    """Encodes messages for one sender on one socket, numbering them per topic.

    Each socket that sends gets its own session, and each topic its own count, so that the
    numbers a subscriber sees have no holes, whatever topics it subscribes to; a receiver that
    sees a hole knows it lost messages.
    """

    def __init__(self, sender: str, run_id: str | None = None) -> None:
        self.sender = sender
        self.run_id = run_id
        self.seqs: dict[str, int] = {}

    def encode(
        self,
        message: Message,
        *,
        parent: str | None = None,
        ltime: LogicalTime | None = None,
        msg_id: str | None = None,
    ) -> list[Any]:
        topic = message.topic()
        seq = self.seqs.get(topic, 0)
        self.seqs[topic] = seq + 1
        envelope = Envelope(
            v=PROTOCOL_VERSION,
            type=message.TYPE,
            sender=self.sender,
            seq=seq,
            run_id=self.run_id,
            ts=time.time(),
            id=msg_id or uuid.UUID(bytes=os.urandom(16)).hex,
            parent=parent,
            ltime=ltime,
        )
        return encode(envelope, message)


def encode(envelope: Envelope, message: Message) -> list[Any]:
    """Frames for ``message``; arrays are passed as buffers, not copied."""
    buffers: list[Any] = []
    np = _numpy()

    def pack_arrays(value: Any) -> Any:
        if np is not None and isinstance(value, np.ndarray):
            array = np.ascontiguousarray(value).reshape(value.shape)  # ascontiguousarray makes 0-d 1-d
            buffers.append(memoryview(array).cast("B") if array.size else b"")
            return {_ND: len(buffers) - 1, "dtype": array.dtype.str, "shape": list(array.shape)}
        if isinstance(value, dict):
            return {k: pack_arrays(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [pack_arrays(v) for v in value]
        return value

    header = envelope.model_dump(mode="json")
    header["body"] = pack_arrays(message.model_dump(mode="python"))
    if len(buffers) > MAX_ARRAY_FRAMES:  # refuse here, where the bug is, not at the receiver
        raise ProtocolError(f"{message.TYPE}: {len(buffers)} arrays exceed MAX_ARRAY_FRAMES={MAX_ARRAY_FRAMES}")
    payload = msgpack.packb(header, use_bin_type=True, default=_plain)
    return [message.topic().encode(), payload, *buffers]


def _plain(value: Any) -> Any:
    """msgpack fallback for enums and numpy scalars left in a model dump."""
    if hasattr(value, "value") and isinstance(value.value, (str, int)):
        return value.value
    np = _numpy()
    if np is not None and isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot encode {type(value).__name__}")


def _numpy() -> Any:
    """numpy if this process has loaded it, else None: without it no value can be an array or a numpy scalar,
    and a client that sends none (``dynamicrl status``) starts without numpy's import."""
    return sys.modules.get("numpy")


@overload
def decode(frames: Sequence[Any]) -> Received[Message]: ...
@overload
def decode(frames: Sequence[Any], *, expect: Sequence[type[M]]) -> Received[M]: ...
def decode(frames: Sequence[Any], *, expect: Sequence[type[Message]] | None = None) -> Received[Message]:
    """Validate ``frames`` fully and return the message, or raise ProtocolError."""
    try:
        return _decode(frames, expect)
    except ProtocolError:
        raise
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ProtocolError(f"invalid message: {where[:200]}: {first['msg'][:200]}") from None
    except Exception as exc:  # any decoder failure must become the one error type
        raise ProtocolError(f"undecodable frame: {type(exc).__name__}: {str(exc)[:200]}") from None


def _decode(frames: Sequence[Any], expect: Sequence[type[Message]] | None) -> Received[Message]:
    if len(frames) < 2:
        raise ProtocolError(f"expected [topic, payload, *arrays], got {len(frames)} frame(s)")
    if len(frames) - 2 > MAX_ARRAY_FRAMES:
        raise ProtocolError(f"too many array frames: {len(frames) - 2} > {MAX_ARRAY_FRAMES}")
    if len(frames[0]) > MAX_TOPIC_BYTES:
        raise ProtocolError(f"topic of {len(frames[0])} bytes exceeds {MAX_TOPIC_BYTES}")
    topic, payload = _bytes(frames[0]), _bytes(frames[1])
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ProtocolError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    peeked = _peek_type(payload)  # before unpacking all of it: a small request costs no megabyte of parsing
    limit = getattr(MESSAGE_TYPES.get(peeked or ""), "MAX_PAYLOAD", MAX_PAYLOAD_BYTES)
    if len(payload) > limit:
        raise ProtocolError(f"{peeked}: payload of {len(payload)} bytes exceeds its limit of {limit}")
    raw = msgpack.unpackb(payload, raw=False, strict_map_key=True, ext_hook=_no_ext)
    if not isinstance(raw, dict):
        raise ProtocolError("payload is not a map")
    version = raw.get("v")
    if not isinstance(version, str) or version.split(".")[0] != PROTOCOL_VERSION.split(".")[0]:
        problem = f"protocol version {_cut(version)} is not compatible with {PROTOCOL_VERSION}"
        if isinstance(version, str) and version.split(".")[0].isdigit():  # a real version: another major
            sender = raw.get("sender")
            raise ProtocolVersionMismatch(
                problem + (f" (from {_cut(sender)})" if isinstance(sender, str) else ""),
                version=version,
                sender=sender if isinstance(sender, str) else None,
            )
        raise ProtocolError(problem)
    type_name = raw.get("type")
    cls = MESSAGE_TYPES.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        raise ProtocolError(f"unknown message type {_cut(type_name)}")
    if expect is not None and cls not in expect:
        raise ProtocolError(f"unexpected message type {type_name!r} on this socket")
    body = raw.pop("body", None)
    if not isinstance(body, dict):
        raise ProtocolError("message body missing or not a map")
    envelope = Envelope.model_validate(raw)
    arrays = [_buffer(f) for f in frames[2:]]
    used: set[int] = set()
    body = _unpack_arrays(body, arrays, used)
    if len(used) != len(arrays):
        raise ProtocolError(f"{len(arrays) - len(used)} array frame(s) not referenced by the body")
    message = cls.model_validate(body)
    if topic != message.topic().encode():  # e.g. ExternalSample: external.<stream>
        raise ProtocolError(
            f"topic {_cut(topic)} does not match message type {type_name!r} (expected {message.topic()!r})"
        )
    return Received(envelope, message)


def _peek_type(payload: bytes) -> str | None:
    """The payload's ``type``, read by skipping over every other value (None if there is none)."""
    try:
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=True, ext_hook=_no_ext, max_buffer_size=len(payload) + 1)
        unpacker.feed(payload)
        for _ in range(unpacker.read_map_header()):
            if unpacker.unpack() == "type":
                value = unpacker.unpack()
                return value if isinstance(value, str) else None
            unpacker.skip()
    except (ValueError, ProtocolError, msgpack.UnpackException):
        pass
    return None


def claimed(frames: Sequence[Any], name: str) -> str | None:
    """The envelope's field ``name`` (a string), read without validating the rest (None if
    unreadable): the ``sender`` the bus checks against the key that sent the frames, the ``id`` a
    refusal of an invalid request still names as its ``parent``."""
    if len(frames) < 2 or len(frames[1]) > MAX_PAYLOAD_BYTES:
        return None
    try:
        raw = msgpack.unpackb(_bytes(frames[1]), raw=False, strict_map_key=True, ext_hook=_no_ext)
    except (ValueError, ProtocolError, msgpack.UnpackException):
        return None
    value = raw.get(name) if isinstance(raw, dict) else None
    return value if isinstance(value, str) and len(value) <= 128 else None


def _cut(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters: an error names bad input, never echoes all of it."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-2:]}"


def _no_ext(code: int, data: bytes) -> Any:
    raise ProtocolError(f"msgpack extension type {code} is not allowed")


def _bytes(frame: Any) -> bytes:
    return frame.bytes if hasattr(frame, "bytes") else bytes(frame)


def _buffer(frame: Any) -> memoryview:
    return memoryview(frame.buffer if hasattr(frame, "buffer") else frame)


def _unpack_arrays(value: Any, arrays: list[memoryview], used: set[int]) -> Any:
    if isinstance(value, msgpack.Timestamp):  # ext type -1 bypasses ext_hook
        raise ProtocolError("msgpack extension type -1 (timestamp) is not allowed")
    if isinstance(value, dict):
        if _ND in value:
            return _array(value, arrays, used)
        return {k: _unpack_arrays(v, arrays, used) for k, v in value.items()}
    if isinstance(value, list):
        return [_unpack_arrays(v, arrays, used) for v in value]
    return value


def _array(ref: dict, arrays: list[memoryview], used: set[int]) -> np.ndarray:
    index, dtype, shape = ref.get(_ND), ref.get("dtype"), ref.get("shape")
    if set(ref) != {_ND, "dtype", "shape"}:
        raise ProtocolError(f"array reference has keys {sorted(ref)}")
    if type(index) is not int or not 0 <= index < len(arrays) or index in used:
        raise ProtocolError(f"array reference {index!r} does not name an unused frame")
    if not isinstance(dtype, str) or dtype not in ARRAY_DTYPES:
        raise ProtocolError(f"array dtype {dtype!r} is not allowed")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise ProtocolError(f"array shape {shape!r} is not a list of sizes")
    used.add(index)
    import numpy as np

    np_dtype = np.dtype(dtype)
    expected = int(np.prod(shape, dtype=np.int64)) * np_dtype.itemsize
    if expected != arrays[index].nbytes:
        raise ProtocolError(
            f"array frame {index} has {arrays[index].nbytes} bytes, shape {shape} {dtype} needs {expected}"
        )
    return np.frombuffer(arrays[index], dtype=np_dtype).reshape(shape)
