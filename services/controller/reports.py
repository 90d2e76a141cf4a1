"""Reports: what clients can ask about the run in any state, and what monitors tell it.

``status`` (the run, its members, the latest train metrics seen on the bus, the monitors'
losses), ``params`` (the tunables and their current values), ``history`` (the patch journal),
and ``MonitorReport`` from monitors outside the run (kept in ``monitors.py``'s table). Also
``metrics.sys`` for the bus: the CPU and memory samples ``status`` shows, so the logger writes
the same numbers (one source: the members' heartbeats, and the controller's own sample).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from dynamicrl.core import tunables
from dynamicrl.core.process_stats import ProcessStats
from dynamicrl.protocol.messages import (
    ErrorCode,
    ErrorReply,
    Health,
    HistoryReply,
    HistoryRequest,
    LogicalTime,
    Message,
    MonitorReport,
    MonitorReportReply,
    ParamsReply,
    ParamsRequest,
    ProcessSample,
    RunState,
    SecurityStatus,
    StatusReply,
    StatusRequest,
    SystemMetrics,
)
from dynamicrl.protocol.sockets import Routed

if TYPE_CHECKING:
    from .app import Controller


class Reports:
    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.process_stats = ProcessStats()

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
            last_checkpoint=controller.last_checkpoint,
            waiting_for=controller.membership.waiting_for(now) if controller.state is RunState.STARTING else "",
            monitors=controller.monitors.statuses(now),
            stalled_s=round(stalled, 1) if (stalled := controller.progress.stalled_s(now)) is not None else None,
            security=SecurityStatus(
                curve=controller.security.curve,
                refused_handshakes=controller.security.refused
                + sum(m.refused_handshakes for m in controller.roster.members.values()),
                dropped_bus=controller.proxy.dropped,
            ),
        )

    def system_metrics(self, name: str) -> SystemMetrics:
        """The controller's own sample (as ``name``) and the latest of every member heard from lately."""
        controller = self.controller
        now, missing_after_s = time.monotonic(), controller.config.timing.missing_after_s
        cpu_percent, rss_mb = self.process_stats.sample()
        rows = [ProcessSample(service=name, cpu_percent=cpu_percent, rss_mb=rss_mb)]
        for m in sorted(controller.roster.active(), key=lambda m: (m.role.value, m.rank, m.name)):
            if (
                m.cpu_percent is not None
                and m.rss_mb is not None
                and m.health(now, missing_after_s) is not Health.MISSING
            ):
                rows.append(ProcessSample(service=m.name, cpu_percent=m.cpu_percent, rss_mb=m.rss_mb))
        metrics = controller.last_metrics
        ltime = LogicalTime(iteration=metrics.iteration, env_step=metrics.env_steps) if metrics else None
        return SystemMetrics(ltime=ltime, services=rows)

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
