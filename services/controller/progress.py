"""Progress: whether a running run advances, so that ``status`` never says running while it is stuck.

Every member can be alive and heartbeating while nothing moves (a learner waiting for something
that never comes, env-runners waiting for it): health alone says ``ok``. Progress watches the
logical time the learner and env-runners report in their heartbeats, and calls the run stalled
when none has moved for ``timing.stall_after_s``, or for three times the longest gap seen so far
in the run if that is longer (a big update may take minutes; that is slow, not stuck). The clock
counts only while the run is ``running``: a pause is not a stall.
"""

from __future__ import annotations

import logging

from dynamicrl.protocol.messages import LogicalTime

log = logging.getLogger(__name__)

#: how many times the longest gap between advances seen in this run a stall must exceed
GAP_FACTOR = 3.0


class Progress:
    def __init__(self, stall_after_s: float) -> None:
        self.stall_after_s = stall_after_s
        self.positions: dict[str, tuple[int, int]] = {}  # member -> (iteration, env step) last heard
        self.moved_at: float | None = None  # None while the run is not running
        self.longest_gap_s = 0.0
        self.warned = False  # this stall was logged

    def running(self, now: float) -> None:
        """The run (re)entered ``running``: the clock starts afresh."""
        self.moved_at, self.warned = now, False

    def halted(self) -> None:
        """The run left ``running`` (a pause, the stop): no stall while it is not meant to move."""
        self.moved_at = None

    def heard(self, member: str, ltime: LogicalTime | None, now: float) -> None:
        """A learner's or env-runner's heartbeat: its logical time moved, or not."""
        if ltime is None or self.positions.get(member) == (position := (ltime.iteration, ltime.env_step)):
            return
        self.positions[member] = position
        if self.moved_at is not None:
            self.longest_gap_s = max(self.longest_gap_s, now - self.moved_at)
            if self.warned:
                log.info("the run advances again (%s at %s)", member, _at(position))
            self.moved_at, self.warned = now, False

    def limit_s(self) -> float:
        return max(self.stall_after_s, GAP_FACTOR * self.longest_gap_s)

    def stalled_s(self, now: float) -> float | None:
        """How long nothing has advanced, once that is longer than the limit; else None."""
        if self.moved_at is None or now - self.moved_at <= self.limit_s():
            return None
        return now - self.moved_at

    def warn_if_stalled(self, now: float) -> None:
        """Log a stall once, with where each member stands."""
        stalled = self.stalled_s(now)
        if stalled is None or self.warned:
            return
        self.warned = True
        where = ", ".join(f"{name} at {_at(p)}" for name, p in sorted(self.positions.items())) or "no position yet"
        log.warning("stalled: nothing advanced for %.0f s (%s); members are alive but stuck?", stalled, where)


def _at(position: tuple[int, int]) -> str:
    return f"iteration {position[0]}, env step {position[1]}"
