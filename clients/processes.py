"""Service processes on one machine: free ports, start with a log file, stop by pid with bounded waits.

The tests, the benchmarks and the launcher all start runs as real processes; this
is their one copy of how:

* ``free_ports(n)`` / ``free_port()``: loopback TCP ports nobody listens on;
* ``base_overrides(root, ports)``: ``KEY=VALUE`` overrides that point a run at those
  ports and keep its run directory inside ``root``;
* ``start_service(name, overrides, cwd)``: ``python -m dynamicrl.services.NAME`` with
  stdout+stderr going to a log file in ``cwd`` (``proc.log_path``; ``log_text(proc)``);
* ``stop(proc)``: SIGTERM by pid, bounded wait, then SIGKILL; never hangs;
* ``stop_all(procs)``: the same for a whole run at once (reaping every process while
  waiting, so a controller that waits for its members' pids is not kept waiting);
* ``wait_exit(procs, timeout)``: wait for processes that end by themselves (same reaping).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

#: Order of the ports ``base_overrides`` expects.
ADDRESS_KEYS = ("controller", "bus_in", "bus_out", "data")

#: Variables that would silently change what a started service does (resume: set by `dynamicrl resume-run`).
_SCRUBBED_ENV = ("DYNAMICRL_CONFIG", "DYNAMICRL_OVERRIDES", "DYNAMICRL_RESUME", "HONCHO_PROCESS_NAME")


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (all held open together, then released)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


def endpoint(port: int) -> str:
    return f"tcp://127.0.0.1:{port}"


def base_overrides(root: Path, ports: Sequence[int]) -> list[str]:
    """Overrides for a run on ``ports`` (controller, bus_in, bus_out, data) with its run directory in ``root``."""
    if len(ports) != len(ADDRESS_KEYS):
        raise ValueError(f"need {len(ADDRESS_KEYS)} ports ({', '.join(ADDRESS_KEYS)}), got {len(ports)}")
    overrides = [f"addresses.{key}={endpoint(port)}" for key, port in zip(ADDRESS_KEYS, ports)]
    overrides.append(f"run.root={Path(root) / 'runs'}")
    return overrides


def start_service(
    name: str,
    overrides: Sequence[str],
    cwd: Path,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
) -> subprocess.Popen:
    """Start ``python -m dynamicrl.services.<name> [args] [overrides]`` in ``cwd``.

    Output goes to ``cwd/<name>[.k].log`` (``proc.log_path``; ``log_text(proc)``
    reads it). DYNAMICRL_* variables of the calling shell are not inherited;
    pass them in ``env`` when a test wants them.
    """
    return start_module(f"dynamicrl.services.{name}", [*args, *overrides], cwd, name, env)


def start_module(
    module: str, args: Sequence[str], cwd: Path, name: str, env: Mapping[str, str] | None = None
) -> subprocess.Popen:
    """``python -m MODULE ARGS`` in ``cwd``, output in ``cwd/<name>[.k].log`` (as ``start_service``)."""
    cwd = Path(cwd)
    log_path = cwd / f"{name}.log"
    k = 1
    while log_path.exists():
        log_path = cwd / f"{name}.{k}.log"
        k += 1
    child_env = {key: value for key, value in os.environ.items() if key not in _SCRUBBED_ENV}
    child_env["PYTHONUNBUFFERED"] = "1"
    child_env.update(env or {})
    command = [sys.executable, "-m", module, *args]
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    proc.log_path = log_path  # type: ignore[attr-defined]
    return proc


def log_text(proc: subprocess.Popen) -> str:
    """What the process has written so far (empty if it has no log file)."""
    path = getattr(proc, "log_path", None)
    if path is None or not Path(path).exists():
        return ""
    return Path(path).read_text(errors="replace")


def stop(proc: subprocess.Popen, timeout: float = 10) -> int:
    """SIGTERM ``proc`` by pid, wait up to ``timeout`` s, then SIGKILL; return its exit code.

    A negative code is the signal that ended it (``-9``: it had to be killed).
    """
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return proc.wait(timeout=10)


def wait_exit(procs: Sequence[subprocess.Popen], timeout: float) -> bool:
    """Poll (and so reap) every process until all have exited or ``timeout`` s pass; True if all did.

    Waiting on one process at a time would leave the others as zombies, which a
    controller that waits for its members' pids to disappear still sees alive.
    """
    deadline = time.monotonic() + timeout
    while True:
        codes = [proc.poll() for proc in procs]  # every one, each time: poll() is what reaps
        if all(code is not None for code in codes):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def stop_all(procs: Sequence[subprocess.Popen], timeout: float = 15) -> list[int]:
    """SIGCONT + SIGTERM every live process of ``procs`` by pid, wait up to ``timeout`` s for all
    (reaping as they exit), then SIGKILL the rest; return their exit codes (negative: signal).

    SIGCONT first: a SIGSTOPped process would not act on SIGTERM.
    """
    for proc in procs:
        if proc.poll() is None:
            for sig in (signal.SIGCONT, signal.SIGTERM):
                try:
                    os.kill(proc.pid, sig)
                except ProcessLookupError:
                    pass
    if not wait_exit(procs, timeout):
        for proc in procs:
            if proc.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    return [proc.wait(timeout=10) for proc in procs]
