"""This process's CPU and memory, sampled for heartbeats (and by the controller for itself).

One ``psutil.Process`` per service: ``cpu_percent(None)`` measures since the previous call and does
not block, so each sample covers the time since the last heartbeat.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any

import psutil

MIB = 1024 * 1024


class ProcessStats:
    def __init__(self) -> None:
        self.process = psutil.Process()
        self.process.cpu_percent(None)  # starts the measurement: the first call has nothing to compare with

    def sample(self) -> tuple[float, float]:
        """(CPU percent since the previous sample, 100 = one core; resident memory in MiB)."""
        return round(self.process.cpu_percent(None), 1), round(self.process.memory_info().rss / MIB, 1)


def release_free_memory() -> None:
    """Give the memory the allocator holds free back to the system (glibc's ``malloc_trim``).

    A burst of big incoming frames (a flood of hostile ones) leaves glibc's per-thread arenas full
    of freed pages it keeps; without this, a controller that refused them all stays hundreds of MB
    larger. A no-op where the C library has no ``malloc_trim``.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Any:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
