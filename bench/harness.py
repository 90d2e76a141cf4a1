"""The benchmarks' one process harness: a whole run's service processes on free ports, stopped by pid.

Built on ``dynamicrl.clients.processes`` (the one copy of how the tests, the benchmarks and
the launcher start and stop a service); this adds only what every benchmark repeats:

* ``Run``: a run's process set (controller, learner, ``envrunners`` env-runners with
  ``--rank r``, logger) on free ports, each ``python -m dynamicrl.services.<name> [--rank r]
  [-c CONFIG] OVERRIDES`` with the workdir as its cwd and ``<workdir>/<label>.log`` as its log
  (labels ``controller``, ``learner``, ``envrunner.1``.., ``logger``); ``stop()`` ends every one
  by pid with bounded waits (``stop_all``); ``wait_done()`` waits for a run to end by itself and
  says how much CPU each process used;
* ``read_training(workdir)``: SPS and wall time of a finished run, from its metrics.csv;
* ``security_overrides(curve, keys)``: the overrides for CURVE on or off and a keys directory;
* ``cpu_ticks(pid)`` / ``descendants(pid)``: what ``/proc`` says about a process.

A sibling module: ``import harness`` works from ``python bench/X.py`` (bench/ is sys.path[0]).
"""

from __future__ import annotations

import csv
import os
import subprocess
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from dynamicrl.clients.processes import ADDRESS_KEYS, endpoint, free_ports, log_text, start_module, stop_all

#: a run without a previewer (the showcase films every 25 iterations, and the harness starts no previewer)
NO_PREVIEWER = ["video.every_iterations=null", "video.pause_previews=false"]


class Run:
    """A run's service processes on free ports; ``start()``, then ``stop()`` (also after a failed start).

    ``overrides`` come after the addresses and ``run.root=<workdir>/runs`` (or ``run.dir=RUN_DIR``
    when ``run_dir`` is given), so a benchmark's own override wins.
    """

    def __init__(
        self,
        workdir: Path,
        overrides: Sequence[str] = (),
        config: str | Path | None = None,
        envrunners: int = 1,
        run_dir: Path | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.ports = free_ports(len(ADDRESS_KEYS))
        self.address = {key: endpoint(port) for key, port in zip(ADDRESS_KEYS, self.ports)}
        self.endpoint = self.address["controller"]
        where = f"run.dir={run_dir}" if run_dir is not None else f"run.root={self.workdir / 'runs'}"
        self.overrides = [*(f"addresses.{key}={value}" for key, value in self.address.items()), where, *overrides]
        self.config = config
        self.envrunners = envrunners
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self) -> None:
        """Controller, learner, the env-runners, logger, in that order."""
        self.start_controller()
        self.start_members()

    def start_controller(self) -> None:
        self._start("controller", "controller")

    def start_members(self) -> None:
        """Learner, env-runners, logger (after ``start_controller``: a benchmark may start its own
        extra processes in between)."""
        self._start("learner", "learner")
        for rank in range(self.envrunners):
            self._start(f"envrunner.{rank + 1}", "envrunner", ["--rank", str(rank)])
        self._start("logger", "logger")

    def _start(self, label: str, service: str, args: Sequence[str] = ()) -> None:
        config = ["-c", str(self.config)] if self.config is not None else []
        self.procs[label] = start_module(
            f"dynamicrl.services.{service}", [*args, *config, *self.overrides], self.workdir, label
        )

    def dead(self) -> list[str]:
        """``label (exit N)`` of every process that has exited (polling reaps them)."""
        return [f"{label} (exit {p.returncode})" for label, p in self.procs.items() if p.poll() is not None]

    def log(self, label: str) -> str:
        return log_text(self.procs[label]) if label in self.procs else ""

    def log_tail(self, label: str, lines: int = 15) -> str:
        return "\n".join(self.log(label).splitlines()[-lines:])

    def cpu_seconds(self) -> float:
        """utime + stime of the run's live processes (from /proc)."""
        ticks = (cpu_ticks(p.pid) for p in self.procs.values())
        return sum(t for t in ticks if t is not None) / os.sysconf("SC_CLK_TCK")

    def wait_done(self, timeout: float = 1800, ignore: Collection[str] = (), interval: float = 0.2) -> dict[str, float]:
        """Until every process but those labelled in ``ignore`` has exited (SystemExit after ``timeout`` s).

        Returns the CPU seconds (utime + stime, as ``cpu_ticks``) of every process by label: read
        as it exited (its /proc entry is read before it is reaped), an ignored one's at the end.
        """
        cpu: dict[str, float] = {}
        waiting = {label: proc for label, proc in self.procs.items() if label not in ignore}
        deadline = time.monotonic() + timeout
        while waiting:
            if time.monotonic() > deadline:
                raise SystemExit(f"not done after {timeout:.0f} s: {self.dead()}")
            for label, proc in list(waiting.items()):
                if proc.returncode is None and _exited(proc.pid):
                    cpu[label] = (cpu_ticks(proc.pid) or 0) / os.sysconf("SC_CLK_TCK")
                if proc.poll() is not None:
                    del waiting[label]
            if waiting:
                time.sleep(interval)
        for label in ignore:
            if label in self.procs:
                cpu[label] = (cpu_ticks(self.procs[label].pid) or 0) / os.sysconf("SC_CLK_TCK")
        return cpu

    def stop(self, timeout: float = 15) -> dict[str, int]:
        """SIGTERM every live process at once (as honcho does on Ctrl-C: the controller then stops the run),
        SIGKILL what is left after ``timeout`` s; the exit codes by label."""
        return dict(zip(self.procs, stop_all(list(self.procs.values()), timeout)))


@dataclass(frozen=True)
class Training:
    """A finished run's figures from its metrics.csv, first row to last (iteration 1's start-up left out)."""

    run_dir: Path
    sps: float  # env steps over wall time
    wall_s: float
    iterations: int  # the last row's
    env_steps: int  # the last row's


def read_training(workdir: Path) -> Training:
    """The figures of the one run directory under ``<workdir>/runs`` (a ``Run``'s ``run.root``)."""
    (run_dir,) = (Path(workdir) / "runs").iterdir()
    with (run_dir / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    first, last = rows[0], rows[-1]
    wall = float(last["time"]) - float(first["time"])
    steps = int(last["env_steps"]) - int(first["env_steps"])
    return Training(
        run_dir, steps / wall if wall > 0 else float("nan"), wall, int(last["iteration"]), int(last["env_steps"])
    )


def security_overrides(curve: bool, keys: str | Path | None = None) -> list[str]:
    """``security.curve`` on or off (off: loopback only, as the harness binds), and ``security.keys`` if given."""
    return [f"security.curve={str(curve).lower()}", *([f"security.keys={keys}"] if keys is not None else [])]


def _exited(pid: int) -> bool:
    """``pid`` (a child of this process) has exited; it is left unreaped, so its /proc entry can still be read."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # reaped already
        return True


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (field 3, the state, first)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of ``pid`` in clock ticks; None if it is gone."""
    fields = _stat_fields(pid)
    try:
        return int(fields[11]) + int(fields[12]) if fields else None
    except (IndexError, ValueError):
        return None


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, their children, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        fields = _stat_fields(int(entry))
        if fields is None:  # gone since listdir
            continue
        try:
            children.setdefault(int(fields[1]), []).append(int(entry))
        except (TypeError, IndexError, ValueError):
            continue
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found
