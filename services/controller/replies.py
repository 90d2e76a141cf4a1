"""Replies kept for retries: a retried request is answered again, never acted on twice.

A client retries with the same envelope id (Lazy Pirate, ``protocol/sockets.py:Requester``). The
replies to requests that change the run (pause, resume, patch, checkpoint, stop, register) are
kept apart from the read-only ones (status, params, history, monitor reports): for
``REPLY_KEEP_S`` whatever else is asked meanwhile, so a dashboard's status polls cannot push a
patch's reply out and let its retry apply it again. Read-only replies, harmless to recompute, are
kept for the last ``READS_KEPT`` requests; each kind is also held to ``BYTES_KEPT``. Each entry
keeps a fingerprint of its request's body, so an id reused with another body is refused instead
of answered with another request's reply.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dynamicrl.protocol.messages import HistoryRequest, Message, MonitorReport, ParamsRequest, StatusRequest

READ_ONLY = (StatusRequest, ParamsRequest, HistoryRequest, MonitorReport)
#: A reply to a request that changes the run is kept this long: far beyond any client's retries
#: (the CLI's last attempt comes within 2 x (request_timeout_s + the longest wait) of the first).
REPLY_KEEP_S = 600.0
#: ... and at most this many of them (older ones go first, even if younger than REPLY_KEEP_S).
CHANGES_KEPT = 10_000
READS_KEPT = 256
#: ... and each kind at most this many bytes of replies (as JSON), whatever their count.
BYTES_KEPT = 64 << 20


class IdReused(ValueError):
    """A request id already answered (or being answered) for a request with another body."""


def fingerprint(message: Message) -> bytes:
    """A digest of the request's type and body (arrays by their bytes, dtype and shape)."""
    body = message.model_dump_json(fallback=_array_digest)
    return hashlib.blake2b(f"{message.TYPE}\0{body}".encode(), digest_size=16).digest()


def _array_digest(value: Any) -> str:
    if isinstance(value, np.ndarray):
        digest = hashlib.blake2b(np.ascontiguousarray(value).tobytes(), digest_size=16).hexdigest()
        return f"{digest}:{value.dtype.str}:{value.shape}"
    raise TypeError(f"cannot fingerprint {type(value).__name__}")


@dataclass
class Pending:
    """A request being worked on (a pause, a waited-for patch): every route that asked gets the reply."""

    fingerprint: bytes
    read_only: bool
    routes: list[list[bytes]] = field(default_factory=list)


@dataclass(frozen=True)
class Kept:
    reply: Message
    fingerprint: bytes
    at: float
    size: int


class Store(OrderedDict[str, Kept]):
    """Kept replies, oldest first, with their total size."""

    def __init__(self, limit: int, keep_s: float | None) -> None:
        super().__init__()
        self.limit, self.keep_s, self.size = limit, keep_s, 0

    def keep(self, request_id: str, kept: Kept) -> None:
        self[request_id] = kept
        self.size += kept.size
        while len(self) > 1 and (
            len(self) > self.limit
            or self.size > BYTES_KEPT
            or (self.keep_s is not None and kept.at - next(iter(self.values())).at > self.keep_s)
        ):
            self.size -= self.popitem(last=False)[1].size


class Replies:
    def __init__(self) -> None:
        self.changes = Store(CHANGES_KEPT, REPLY_KEEP_S)
        self.reads = Store(READS_KEPT, None)
        self.pending: dict[str, Pending] = {}

    def known(self, request_id: str, message: Message) -> Kept | Pending | None:
        """What is known of this id: its kept reply, its pending request, or nothing (a new request).
        Raises IdReused when the id came with another body."""
        entry = self.pending.get(request_id) or self.changes.get(request_id) or self.reads.get(request_id)
        if entry is not None and entry.fingerprint != fingerprint(message):
            raise IdReused(f"request id {request_id[:64]!r} was used for another request: use a new id per request")
        return entry

    def begin(self, request_id: str, message: Message, route: list[bytes]) -> None:
        """A new request that will be answered (now or later) to ``route``."""
        self.pending[request_id] = Pending(fingerprint(message), isinstance(message, READ_ONLY), [route])

    def answered(self, request_id: str, reply: Message) -> list[list[bytes]]:
        """Keep ``reply`` for retries; the routes waiting for it."""
        pending = self.pending.pop(request_id, None)
        if pending is None:
            return []
        store = self.reads if pending.read_only else self.changes
        store.keep(request_id, Kept(reply, pending.fingerprint, time.monotonic(), len(reply.model_dump_json())))
        return pending.routes
