"""A pause in progress: who must report, who has, and who is waiting for the answer."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from dynamicrl.protocol.messages import Position, Scene


@dataclass
class Barrier:
    expected: set[str]
    timeout_s: float
    pause_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    started: float = field(default_factory=time.monotonic)
    reached: dict[str, Position] = field(default_factory=dict)
    scenes: dict[str, list[Scene]] = field(default_factory=dict)  # for the previews, by env-runner

    def report(self, pause_id: str, position: Position, scenes: list[Scene]) -> None:
        if pause_id == self.pause_id and position.service in self.expected:
            self.reached[position.service] = position
            # a member shows only its own sub-envs
            self.scenes[position.service] = [s for s in scenes if s.service == position.service]

    def forget(self, service: str) -> None:
        """A member that left cleanly no longer holds the barrier up."""
        self.expected.discard(service)

    @property
    def complete(self) -> bool:
        return self.expected <= set(self.reached)

    def missing(self) -> list[str]:
        return sorted(self.expected - set(self.reached))

    def expired(self, now: float) -> bool:
        return now - self.started > self.timeout_s

    def positions(self) -> list[Position]:
        return [self.reached[name] for name in sorted(self.reached)]

    def all_scenes(self) -> list[Scene]:
        return [scene for name in sorted(self.scenes) for scene in self.scenes[name]]
