"""External monitors and what they lost on the bus (for ``status``).

The controller's XPUB drops silently for a subscriber whose queue is full, so a
subscriber's own count of sequence gaps is the only record of the loss. Members
report theirs in heartbeats; monitors outside the run (the Monitor SDK,
``dynamicrl watch``, third parties) send ``control.monitor_report`` now and then.
This table keeps each monitor's latest report, by name, and forgets a monitor
that has not reported for ``expiry_s``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from dynamicrl.protocol.messages import MonitorReport, MonitorStatus

log = logging.getLogger(__name__)

#: Most monitors kept at once: a report from one more is rejected (the table must stay small).
MAX_MONITORS = 256


@dataclass
class _Entry:
    report: MonitorReport
    at: float  # monotonic time it arrived


class Monitors:
    def __init__(self, expiry_s: float, limit: int = MAX_MONITORS) -> None:
        self.expiry_s = expiry_s
        self.limit = limit
        self.entries: dict[str, _Entry] = {}

    def record(self, report: MonitorReport, now: float) -> None:
        """Keep ``report`` as its monitor's latest; ValueError when a new monitor does not fit."""
        previous = self.entries.get(report.name)
        if previous is None:
            if len(self.entries) >= self.limit:
                raise ValueError(
                    f"already {len(self.entries)} monitors reporting (the most kept); {report.name!r} not recorded"
                )
            log.info(
                "monitor %s reports (topics %s)", report.name, ", ".join(repr(t) for t in report.topics) or "none given"
            )
        more = report.missed - (previous.report.missed if previous else 0)
        if more > 0:
            log.warning("monitor %s missed %d more bus message(s) (%d in all)", report.name, more, report.missed)
        self.entries[report.name] = _Entry(report, now)

    def expire(self, now: float) -> None:
        for name, entry in list(self.entries.items()):
            if now - entry.at > self.expiry_s:
                del self.entries[name]
                log.info("forgot monitor %s: no report for %.1f s", name, now - entry.at)

    def statuses(self, now: float) -> list[MonitorStatus]:
        self.expire(now)
        return [
            MonitorStatus(
                name=name,
                topics=e.report.topics,
                received=e.report.received,
                missed=e.report.missed,
                missed_by_sender=e.report.missed_by_sender,
                rejected=e.report.rejected,
                closed=e.report.final,
                last_report_s=round(now - e.at, 3),
            )
            for name, e in sorted(self.entries.items())
        ]
