"""What every benchmark report says about the machine it ran on."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def describe() -> str:
    """Cores, CPU, memory, OS, Python and the library versions that decide the figures."""
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = "no GPU" if not Path("/dev/nvidia0").exists() else "a GPU (unused: CPU torch)"
    versions = []
    for mod in ("torch", "gymnasium", "mujoco", "numpy"):
        try:
            versions.append(f"{mod} {__import__(mod).__version__}")
        except ImportError:
            versions.append(f"{mod} not installed")
    return (f"{os.cpu_count()} cores ({cpu_model()}), {mem_gb:.0f} GiB RAM, {gpu}; {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}; {', '.join(versions)}")
