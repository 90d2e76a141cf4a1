"""Helpers for tests that start real service processes (plain functions, no fixtures).

The process harness itself (free ports, starting a service with a log file,
stopping by pid with bounded waits) is ``dynamicrl.clients.processes``, shared with
bench/; re-exported here. On top of it:

* ``wait_until(fn, timeout)``: poll a predicate with a deadline instead of sleeping;
* ``start_controller(tmp_path)``: a controller process answering status;
* ``run_stack(tmp_path, overrides)``: a whole run until it ends by itself;
* ``run_cli(*args, cwd=...)``: the ``dynamicrl`` command as a user runs it, outside any run's
  environment (``$DYNAMICRL_*`` removed unless given in ``env``), bounded by ``timeout``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dynamicrl.clients.processes import (  # noqa: F401  (re-exported for the tests)
    ADDRESS_KEYS,
    base_overrides,
    endpoint,
    free_port,
    free_ports,
    log_text,
    start_module,
    start_service,
    stop,
    stop_all,
    wait_exit,
)

#: The ``dynamicrl`` command, run by the interpreter running the tests.
CLI = [sys.executable, "-m", "dynamicrl.clients.cli"]


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
