"""The roster: who is in the run, with which rank, and whether they are alive.

Liveness counts down from the last message seen (Paranoid Pirate style): a
member silent for ``missing_after_s`` is MISSING and heals on its next beat.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field

from dynamicrl.protocol.messages import Health, LogicalTime, RegisterRequest, Role, ServiceStatus


@dataclass
class Member:
    name: str
    role: Role
    rank: int
    pid: int
    route: list[bytes]
    host: str = ""
    last_seen: float = field(default_factory=time.monotonic)
    ready: bool = False
    gone: bool = False
    ltime: LogicalTime | None = None
    missed: int = 0
    cpu_percent: float | None = None  # from its last heartbeat
    rss_mb: float | None = None

    def health(self, now: float, missing_after_s: float) -> Health:
        if self.gone:
            return Health.GONE
        if not self.ready:
            return Health.STARTING
        return Health.MISSING if now - self.last_seen > missing_after_s else Health.OK

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

    def seen(self, name: str) -> Member | None:
        member = self.members.get(name)
        if member is not None:
            member.last_seen = time.monotonic()
        return member
