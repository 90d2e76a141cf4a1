"""Shared helpers for tests that start real service processes.

Everything here is plain functions (no fixtures) so unit, integration and
end-to-end tests can all use it:

* ``free_ports(n)`` / ``free_port()``: loopback TCP ports nobody listens on;
* ``base_overrides(tmp_path, ports)``: ``KEY=VALUE`` overrides that point a run
  at those ports and keep its run directory inside ``tmp_path``;
* ``start_service(name, overrides, tmp_path)``: ``python -m dynamicrl.services.NAME``
  with stdout+stderr going to a log file in ``tmp_path`` (``proc.log_path``);
* ``stop(proc)``: SIGTERM by pid, bounded wait, then SIGKILL; never hangs;
* ``stop_all(procs)``: the same for a whole run at once (reaping every process while
  waiting, so a controller that waits for its members' pids is not kept waiting);
* ``wait_exit(procs, timeout)``: wait for processes that end by themselves (same reaping);
* ``wait_until(fn, timeout)``: poll a predicate with a deadline instead of sleeping;
* ``run_cli(*args, cwd=...)``: the ``dynamicrl`` command as a user runs it, outside any run's
  environment (``$DYNAMICRL_*`` removed unless given in ``env``), bounded by ``timeout``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

#: Order of the ports ``base_overrides`` expects.
ADDRESS_KEYS = ("controller", "bus_in", "bus_out", "data")

#: The ``dynamicrl`` command, run by the interpreter running the tests.
CLI = [sys.executable, "-m", "dynamicrl.clients.cli"]

#: Variables that would silently change what a started service does.
_SCRUBBED_ENV = ("DYNAMICRL_CONFIG", "DYNAMICRL_OVERRIDES", "HONCHO_PROCESS_NAME")


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


def base_overrides(tmp_path: Path, ports: Sequence[int]) -> list[str]:
    """Overrides for a run on ``ports`` (controller, bus_in, bus_out, data) rooted in ``tmp_path``."""
    if len(ports) != len(ADDRESS_KEYS):
        raise ValueError(f"need {len(ADDRESS_KEYS)} ports ({', '.join(ADDRESS_KEYS)}), got {len(ports)}")
    overrides = [f"addresses.{key}={endpoint(port)}" for key, port in zip(ADDRESS_KEYS, ports)]
    overrides.append(f"run.root={Path(tmp_path) / 'runs'}")
    return overrides


def start_service(
    name: str,
    overrides: Sequence[str],
    tmp_path: Path,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
) -> subprocess.Popen:
    """Start ``python -m dynamicrl.services.<name> [args] [overrides]`` in ``tmp_path``.

    Output goes to ``tmp_path/<name>[.k].log`` (``proc.log_path``; ``log_text(proc)``
    reads it). DYNAMICRL_* variables of the calling shell are not inherited;
    pass them in ``env`` when a test wants them.
    """
    return start_module(f"dynamicrl.services.{name}", [*args, *overrides], tmp_path, name, env)


def start_module(module: str, args: Sequence[str], tmp_path: Path, name: str,
                 env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """``python -m MODULE ARGS`` in ``tmp_path``, output in ``tmp_path/<name>[.k].log`` (as ``start_service``)."""
    tmp_path = Path(tmp_path)
    log_path = tmp_path / f"{name}.log"
    k = 1
    while log_path.exists():
        log_path = tmp_path / f"{name}.{k}.log"
        k += 1
    child_env = {key: value for key, value in os.environ.items() if key not in _SCRUBBED_ENV}
    child_env["PYTHONUNBUFFERED"] = "1"
    child_env.update(env or {})
    command = [sys.executable, "-m", module, *args]
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            command, cwd=tmp_path, env=child_env, stdin=subprocess.DEVNULL,
            stdout=log_file, stderr=subprocess.STDOUT,
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


def wait_until(
    fn: Callable[[], Any], timeout: float, interval: float = 0.05, message: str | None = None
) -> Any:
    """Call ``fn`` every ``interval`` s until it returns something truthy, and return that.

    Raises AssertionError (with ``message``) once ``timeout`` s have passed without success.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(message or f"condition not met within {timeout} s: {fn!r}")
        time.sleep(interval)


def controller_status(address: str, timeout_s: float = 1.0):
    """The controller's StatusReply, or None while nobody answers at ``address``."""
    from dynamicrl.clients.control import ControlClient, RequestTimeout

    try:
        with ControlClient(address, timeout_s=timeout_s, retries=0) as client:
            return client.status()
    except RequestTimeout:
        return None


@dataclass
class RunningController:
    proc: subprocess.Popen
    controller: str
    bus_in: str
    bus_out: str


def start_controller(tmp_path: Path, ports: Sequence[int] | None = None, timeout: float = 30,
                     overrides: Sequence[str] = ()) -> RunningController:
    """A real controller process (and its bus) on free ports, answering status; the caller stops ``proc``."""
    ports = list(ports) if ports is not None else free_ports(4)
    proc = start_service("controller", [*base_overrides(tmp_path, ports), *overrides], tmp_path)

    def up():
        assert proc.poll() is None, f"controller exited with {proc.returncode}:\n{log_text(proc)}"
        return controller_status(endpoint(ports[0]))

    try:
        wait_until(up, timeout=timeout, message="controller never answered status")
    except BaseException:
        stop(proc)
        raise
    return RunningController(proc, endpoint(ports[0]), endpoint(ports[1]), endpoint(ports[2]))


def run_stack(tmp_path: Path, overrides: Sequence[str], envrunners: int = 1,
              env: Mapping[str, str] | None = None, timeout: float = 180) -> list[subprocess.Popen]:
    """Run controller, learner, ``envrunners`` env-runners and logger until the run ends by itself.

    Asserts that every process exits 0 (the controller within ``timeout``); stops them all in any case.
    """
    procs = [start_service("controller", overrides, tmp_path, env=env),
             start_service("learner", overrides, tmp_path, env=env),
             *(start_service("envrunner", overrides, tmp_path, env=env, args=["--rank", str(r)])
               for r in range(envrunners)),
             start_service("logger", overrides, tmp_path, env=env)]
    try:
        assert procs[0].wait(timeout=timeout) == 0, log_text(procs[0])
        for proc in procs[1:]:
            assert proc.wait(timeout=15) == 0, log_text(proc)
    finally:
        stop_all(procs)
    return procs


def metrics_rows(tmp_path: Path) -> list[dict[str, str]]:
    """metrics.csv of the one run under ``tmp_path/runs``."""
    import csv

    (run_dir,) = (Path(tmp_path) / "runs").iterdir()
    return list(csv.DictReader((run_dir / "metrics.csv").read_text().splitlines()))


def run_cli(*args: str, cwd: Path, env: Mapping[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DYNAMICRL_")}
    return subprocess.run([*CLI, *args], cwd=cwd, env={**base, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
