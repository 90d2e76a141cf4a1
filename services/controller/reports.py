"""Reports: what clients can ask about the run in any state, and what monitors tell it.

``status`` (the run, its members, the latest train metrics seen on the bus, the monitors'
losses), ``params`` (the tunables and their current values), ``history`` (the patch journal),
and ``MonitorReport`` from monitors outside the run (kept in ``monitors.py``'s table).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from dynamicrl.core import tunables
from dynamicrl.protocol.messages import (
    ErrorCode,
    ErrorReply,
    HistoryReply,
    HistoryRequest,
    LogicalTime,
    Message,
    MonitorReport,
    MonitorReportReply,
    ParamsReply,
    ParamsRequest,
    StatusReply,
    StatusRequest,
)
from dynamicrl.protocol.sockets import Routed

if TYPE_CHECKING:
    from .app import Controller


class Reports:
    def __init__(self, controller: Controller) -> None:
        self.controller = controller

    def on_status(self, routed: Routed[StatusRequest]) -> Message:
        controller = self.controller
        now = time.monotonic()
        metrics = controller.last_metrics
        return StatusReply(
            run_id=controller.run_id,
            run_dir=str(controller.run_dir),
            state=controller.state,
            services=[
                m.status(now, controller.config.timing.missing_after_s)
                for m in sorted(controller.roster.members.values(), key=lambda m: (m.role.value, m.rank, m.name))
            ],
            ltime=LogicalTime(iteration=metrics.iteration, env_step=metrics.env_steps) if metrics else None,
            sps=metrics.sps if metrics else None,
            return_mean=metrics.return_mean if metrics else None,
            total_env_steps=controller.config.run.total_env_steps,
            monitors=controller.monitors.statuses(now),
        )

    def on_params(self, routed: Routed[ParamsRequest]) -> Message:
        return ParamsReply(params=tunables.describe(self.controller.config))

    def on_history(self, routed: Routed[HistoryRequest]) -> Message:
        return HistoryReply(entries=self.controller.patching.journal.entries)

    def on_monitor_report(self, routed: Routed[MonitorReport]) -> Message:
        controller = self.controller
        try:
            controller.monitors.record(routed.received.message, time.monotonic())
        except ValueError as exc:
            return ErrorReply(code=ErrorCode.REJECTED, message=str(exc))
        return MonitorReportReply(expiry_s=controller.monitors.expiry_s)
