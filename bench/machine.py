"""What every benchmark report says about the machine it ran on, and how busy it is."""

from __future__ import annotations

import os
import platform
import subprocess
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
    return (
        f"{os.cpu_count()} cores ({cpu_model()}), {mem_gb:.0f} GiB RAM, {gpu}; {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}; {', '.join(versions)}"
    )


def uptime() -> str:
    """``uptime``'s line (load averages), or the load averages alone where it cannot run."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average: {:.2f}, {:.2f}, {:.2f}".format(*os.getloadavg())


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has been busy since boot (/proc/stat, all cores; idle and iowait
    are not busy)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
