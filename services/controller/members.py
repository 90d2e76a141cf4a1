"""The roster: who is in the run, with which rank, and whether they are alive.

Liveness counts down from the last message seen (Paranoid Pirate style): a
member silent for ``missing_after_s`` is MISSING and heals on its next beat.

Who sent a message is decided here, once (``Roster.sender``): the member whose registered route
(its connection) the message came on, never the name a message claims. Refused messages are
logged by ``refuse``, one bounded line each, at most ``REFUSALS_LOGGED`` of them at warning level.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from dynamicrl.protocol.messages import Health, LogicalTime, RegisterRequest, Role, ServiceStatus
from dynamicrl.protocol.security import Peer
from dynamicrl.protocol.sockets import Routed

log = logging.getLogger(__name__)

#: members that advance nothing: one silent for ``missing_after_s`` is no longer waited for
OBSERVERS = (Role.LOGGER, Role.PREVIEWER)
REFUSALS_LOGGED = 100  # refused messages logged at warning level; the rest at debug (a flood stays quiet)
QUOTE_CHARS = 80


def cut(text: str, limit: int = QUOTE_CHARS) -> str:
    """``text``, cut to ``limit`` characters: never echo unbounded input into a log line or a reply."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def quote(value: Any) -> str:
    """``repr(value)``, cut (see ``cut``)."""
    return cut(repr(value))


_refusals = 0


def refuse(routed: Routed, why: str) -> None:
    """Log a refused message that expects no reply (one line; nothing changes) and drop it."""
    global _refusals
    _refusals += 1
    level = logging.WARNING if _refusals <= REFUSALS_LOGGED else logging.DEBUG
    if _refusals == REFUSALS_LOGGED:
        why += " (further refusals are logged at debug level only)"
    log.log(level, "refused %s from %s: %s", routed.received.message.TYPE, quote(routed.route[0]), why)


@dataclass
class Member:
    name: str
    role: Role
    rank: int
    pid: int
    route: list[bytes]
    host: str = ""
    registered: float = field(default_factory=time.monotonic)
    last_seen: float = field(default_factory=time.monotonic)
    unreachable: bool = False  # a send to it failed (its connection is gone, or its queue is full)
    ready: bool = False
    gone: bool = False
    ltime: LogicalTime | None = None
    missed: int = 0
    cpu_percent: float | None = None  # from its last heartbeat
    rss_mb: float | None = None
    refused_handshakes: int = 0  # at the sockets it binds, from its last heartbeat

    def health(self, now: float, missing_after_s: float) -> Health:
        if self.gone:
            return Health.GONE
        if not self.ready:
            return Health.STARTING
        return Health.MISSING if now - self.last_seen > missing_after_s else Health.OK

    def dropped(self, now: float, missing_after_s: float) -> bool:
        """No longer waited for by pauses and patches: gone; or, for ``missing_after_s``, never ready since it
        registered, or silent while unreachable, or (an observer) silent. A silent learner or env-runner still
        counts: it stops the run after ``timing.dead_after_s`` instead."""
        if self.gone:
            return True
        if not self.ready:
            return now - self.registered > missing_after_s
        silent = now - self.last_seen > missing_after_s
        return silent and (self.unreachable or self.role in OBSERVERS)

    def status(self, now: float, missing_after_s: float) -> ServiceStatus:
        return ServiceStatus(
            service=self.name,
            role=self.role,
            rank=self.rank,
            pid=self.pid,
            health=self.health(now, missing_after_s),
            last_seen_s=round(now - self.last_seen, 3),
            ltime=self.ltime,
            missed=self.missed,
            cpu_percent=self.cpu_percent,
            rss_mb=self.rss_mb,
        )


class Roster:
    def __init__(self) -> None:
        self.members: dict[str, Member] = {}
        self.first_envrunner_at: float | None = None

    def admit(self, request: RegisterRequest, route: list[bytes], started: bool) -> Member:
        """Add a member or raise ValueError saying why it cannot join."""
        existing = self.members.get(request.service)
        if existing is not None and not existing.gone and existing.pid != request.pid:
            raise ValueError(f"a live service is already named {request.service!r} (pid {existing.pid})")
        if existing is not None and existing.pid == request.pid:  # retried registration
            return existing
        other = self.sender_of(route)
        if other is not None:
            raise ValueError(f"this connection is already registered as {other.name!r}")
        if request.role is Role.ENVRUNNER:
            if started:
                raise ValueError(
                    f"the run already started with {len(self.active(Role.ENVRUNNER))} "
                    "env-runner(s); set run.envrunners to the number you launch"
                )
            rank = self._envrunner_rank(request.rank)
            self.first_envrunner_at = self.first_envrunner_at or time.monotonic()
        elif request.role is Role.LEARNER:
            if self.active(Role.LEARNER):
                raise ValueError("the run already has a learner")
            rank = 0
        else:
            rank = len(self.active(request.role))
        member = Member(request.service, request.role, rank, request.pid, route, request.host)
        self.members[request.service] = member
        return member

    def _envrunner_rank(self, requested: int | None) -> int:
        taken = {m.rank for m in self.active(Role.ENVRUNNER)}
        if requested is not None:
            if requested in taken:
                raise ValueError(f"env-runner rank {requested} is taken")
            return requested
        return min(set(range(len(taken) + 1)) - taken)

    def active(self, role: Role | None = None) -> list[Member]:
        return [m for m in self.members.values() if not m.gone and (role is None or m.role is role)]

    def local_pids_alive(self) -> list[int]:
        """Pids of departed members on this host that have not exited yet."""
        here = socket.gethostname()
        alive = []
        for member in self.members.values():
            if member.host == here and member.pid != os.getpid():
                try:
                    os.kill(member.pid, 0)
                    alive.append(member.pid)
                except (ProcessLookupError, PermissionError):
                    pass
        return alive

    def counted(self, now: float, missing_after_s: float) -> list[Member]:
        """The active members pauses and patches wait for (see ``Member.dropped``)."""
        return [m for m in self.active() if not m.dropped(now, missing_after_s)]

    def sender(self, routed: Routed) -> Member | None:
        """The member that sent this message (None: not a member): by the connection it came on, and
        by the key that proved who is on it (a client's key, or another member's, is nobody)."""
        member = self.sender_of(routed.route)
        if member is None or (routed.peer is not None and routed.peer != Peer(member.role.value, member.name)):
            return None
        return member

    def sender_of(self, route: list[bytes]) -> Member | None:
        return next((m for m in self.members.values() if not m.gone and m.route == route), None)

    def seen(self, routed: Routed) -> Member | None:
        """Any message from a member is a sign of life (and proves its connection is back)."""
        member = self.sender(routed)
        if member is not None:
            member.last_seen = time.monotonic()
            member.unreachable = False
        return member
