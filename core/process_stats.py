"""This process's CPU and memory, sampled for heartbeats (and by the controller for itself).

One ``psutil.Process`` per service: ``cpu_percent(None)`` measures since the previous call and does
not block, so each sample covers the time since the last heartbeat.
"""

from __future__ import annotations

import psutil

MIB = 1024 * 1024


class ProcessStats:
    def __init__(self) -> None:
        self.process = psutil.Process()
        self.process.cpu_percent(None)  # starts the measurement: the first call has nothing to compare with

    def sample(self) -> tuple[float, float]:
        """(CPU percent since the previous sample, 100 = one core; resident memory in MiB)."""
        return round(self.process.cpu_percent(None), 1), round(self.process.memory_info().rss / MIB, 1)
