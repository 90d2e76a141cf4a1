"""Helpers for tests that start real service processes (plain functions and classes, no fixtures).

The process harness itself (free ports, starting a service with a log file,
stopping by pid with bounded waits) is ``dynamicrl.clients.processes``, shared with
bench/; re-exported here. On top of it:

* ``wait_until(fn, timeout)``: poll a predicate with a deadline instead of sleeping;
* ``start_controller(tmp_path)``: a controller process answering status (a context manager that stops it);
* ``Run(tmp, overrides)``: one whole run on free ports, its services started one by one (``start``)
  or under `honcho start` (``honcho``), and everything it started stopped by pid (``close``);
* ``user_env(**variables)``: the environment of a user's shell outside any run;
* ``run_cli(*args, cwd=...)``: the ``dynamicrl`` command as a user runs it, outside any run's
  environment (``$DYNAMICRL_*`` removed unless given in ``env``), bounded by ``timeout``;
* ``read_metrics(run_dir)``: a run's metrics.csv.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol, cast

from dynamicrl.clients.processes import (  # noqa: F401  (re-exported for the tests)
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

REPO = Path(__file__).resolve().parents[1]
PROCFILE = REPO / "Procfile"
#: The ``dynamicrl`` command, run by the interpreter running the tests.
CLI = [sys.executable, "-m", "dynamicrl.clients.cli"]


def wait_until(fn: Callable[[], Any], timeout: float, interval: float = 0.05, message: str | None = None) -> Any:
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
    """A started controller; ``with`` it to have it stopped (by pid) at the end."""

    proc: subprocess.Popen
    controller: str
    bus_in: str
    bus_out: str

    def __enter__(self) -> RunningController:
        return self

    def __exit__(self, *_exc) -> None:
        stop(self.proc)


def start_controller(
    tmp_path: Path, ports: Sequence[int] | None = None, timeout: float = 30, overrides: Sequence[str] = ()
) -> RunningController:
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


class _Logged(Protocol):
    """A Popen from ``start_service``/``start_module``, which set ``log_path`` on it (Popen does not declare it)."""

    log_path: Path


def logs(procs: Sequence[subprocess.Popen], tail: int = 3000) -> str:
    """The end of each process's log, headed by its name and exit code (None: still running)."""
    return "\n".join(
        f"--- {Path(cast(_Logged, p).log_path).name} (exit {p.poll()}) ---\n{log_text(p)[-tail:]}" for p in procs
    )


# -- a process tree (honcho and what it starts) ------------------------------------------------------
def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    return children


def descendants(pid: int) -> list[int]:
    children, found, stack = _children(), [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def alive(pid: int) -> bool:
    """Running (a zombie or a reused pid that is not ours does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z" and (b"dynamicrl" in cmdline or b"honcho" in cmdline)


def kill(pid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


class Supervised:
    """`honcho start`, `dynamicrl run` or `dynamicrl resume-run` (honcho's Manager) in its own session.

    Remembers every descendant pid it has seen, so its ``stop`` can stop them by pid even
    after honcho itself is gone.
    """

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path, cwd: Path = REPO) -> None:
        self.log_path = log_path
        with log_path.open("w") as log:
            self.proc = subprocess.Popen(
                args,
                cwd=cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.seen: set[int] = set()

    def watch(self) -> list[int]:
        pids = descendants(self.proc.pid)
        self.seen.update(pids)
        return pids

    def services(self) -> dict[str, int]:
        """pid by service ("controller", "learner", ...) of the live `dynamicrl service` processes."""
        found: dict[str, int] = {}
        for pid in self.watch():
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"service" in argv and alive(pid):
                found.setdefault(argv[argv.index(b"service") + 1].decode(), pid)
        return found

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while (code := self.proc.poll()) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"still running after {timeout} s:\n{self.log()[-4000:]}")
            self.watch()
            time.sleep(0.1)
        return code

    def kill9(self) -> list[int]:
        """SIGKILL honcho and every process under it, now; wait until none runs."""
        pids = [self.proc.pid, *self.watch()]
        for pid in pids:
            kill(pid)
        self.proc.wait(timeout=10)
        wait_until(lambda: not any(alive(p) for p in pids), timeout=10, message="a killed process lives on")
        return pids

    def stop(self) -> None:
        """Ctrl-C (SIGINT to honcho's group), a bounded wait, then SIGKILL by pid whatever is left."""
        if self.proc.poll() is None:
            self.watch()
            kill(-self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                kill(self.proc.pid)
                self.proc.wait(timeout=10)
        for pid in self.seen:
            if alive(pid):
                kill(pid)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


# -- the dynamicrl command ---------------------------------------------------------------------------
def user_env(**variables: str) -> dict[str, str]:
    """This process's environment as a user's shell outside any run has it (no ``DYNAMICRL_*``,
    ``HONCHO_*``), plus ``variables``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DYNAMICRL_", "HONCHO_"))}
    env.update(variables)
    return env


class CliResult(subprocess.CompletedProcess):
    """A finished `dynamicrl` command (returncode, stdout, stderr), how long it took, and its ``--json`` reply."""

    def __init__(self, done: subprocess.CompletedProcess, seconds: float) -> None:
        super().__init__(done.args, done.returncode, done.stdout, done.stderr)
        self.seconds = seconds

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


def run_cli(*args: str, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 60) -> CliResult:
    """`dynamicrl ARGS` in ``cwd`` with ``user_env(**env)``, bounded by ``timeout``."""
    started = time.monotonic()
    done = subprocess.run(
        [*CLI, *args],
        cwd=cwd,
        env=user_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return CliResult(done, time.monotonic() - started)


# -- a run's files ----------------------------------------------------------------------------------
def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    """metrics.csv of ``run_dir`` ([] while it does not exist)."""
    path = Path(run_dir) / "metrics.csv"
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


# -- a whole run -------------------------------------------------------------------------------------
class Run:
    """One run in ``tmp`` (made if missing) on free ports: ``envrunners`` env-runners (``run.envrunners`` says
    so), ``overrides`` on top, the config file ``config`` (the services' default if None), the variables ``env``
    added to the services' environment; and the processes it started, all stopped by pid in ``close``.

    ``start()`` starts controller, learner, env-runners (ranks 0..n-1), logger (and previewer) one by one
    (``procs``); ``honcho()`` and ``resume_run(run_dir)`` start `honcho start` with the repo's
    Procfile, the run's config in its environment (``Supervised``). Use it as a context manager,
    or through the e2e ``runs`` fixture.
    """

    def __init__(
        self,
        tmp: Path,
        overrides: Sequence[str] = (),
        envrunners: int = 1,
        config: str | Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp
        self.envrunners = envrunners
        self.config_path = config
        ports = free_ports(4)
        self.endpoint, self.bus_in, self.bus_out, self.data = (endpoint(port) for port in ports)
        self.overrides = [*base_overrides(tmp, ports), f"run.envrunners={envrunners}", *overrides]
        #: added to the services' environment by ``start``
        self.service_env = {**({"DYNAMICRL_CONFIG": str(config)} if config is not None else {}), **(env or {})}
        #: what a user's shell for this run adds: the config, and the overrides as $DYNAMICRL_OVERRIDES
        self.shell_vars = {**self.service_env, "DYNAMICRL_OVERRIDES": " ".join(self.overrides)}
        #: that shell's environment, which honcho gets
        self.env = user_env(**self.shell_vars, PYTHONUNBUFFERED="1")
        self.procs: list[subprocess.Popen] = []
        self.supervised: list[Supervised] = []
        self._control = None  # one client for the frequent status polls, made on first use

    # -- lifecycle
    def start(self) -> Run:
        """Controller, learner, the env-runners and logger, each its own process (``procs``)."""
        env = self.service_env or None
        self.procs.append(start_service("controller", self.overrides, self.tmp, env=env))
        self.procs.append(start_service("learner", self.overrides, self.tmp, env=env))
        for rank in range(self.envrunners):
            self.procs.append(start_service("envrunner", self.overrides, self.tmp, env=env, args=["--rank", str(rank)]))
        self.procs.append(start_service("logger", self.overrides, self.tmp, env=env))
        # as `dynamicrl run` does: the previewer when it draws; here only for a run that sets video keys (the
        # config is read only then: a plugin module named in the config may be importable by the services alone)
        if any(o.startswith("video.") for o in self.overrides) and self.config.video.previewer:
            self.procs.append(start_service("previewer", self.overrides, self.tmp, env=env))
        return self

    def honcho(self) -> Supervised:
        """`honcho start -c envrunner=N` with the repo's Procfile, as a user runs it."""
        return self._supervise(
            [sys.executable, "-m", "honcho", "-f", str(PROCFILE), "start", "-c", f"envrunner={self.envrunners}"]
        )

    def resume_run(self, run_dir: Path, *options: str) -> Supervised:
        """`dynamicrl resume-run RUN_DIR` as a user types it, with the same environment, from a directory
        outside the repository (the launcher needs no Procfile there)."""
        return self._supervise([*CLI, "resume-run", str(run_dir), *options], cwd=self.tmp)

    def launch(self, *args: str) -> Supervised:
        """`dynamicrl run ARGS` as a user types it, with the same environment, outside the repository."""
        return self._supervise([*CLI, "run", *args], cwd=self.tmp)

    def _supervise(self, args: list[str], cwd: Path = REPO) -> Supervised:
        log = self.tmp / f"honcho.{len(self.supervised)}.log"
        self.supervised.append(Supervised(args, self.env, log, cwd=cwd))
        return self.supervised[-1]

    def finish(self, timeout: float = 180) -> None:
        """Wait (bounded) for the processes ``start`` started to end by themselves; each must exit 0."""
        assert wait_exit(self.procs, timeout), f"the run did not finish by itself within {timeout} s:\n{self.logs()}"
        for proc in self.procs:
            assert proc.returncode == 0, logs([proc])

    def close(self) -> None:
        """Stop everything the run started (by pid, bounded); again later (the ``runs`` fixture's): a no-op."""
        try:
            stop_all(self.procs, timeout=15)
            for supervised in self.supervised:
                supervised.stop()
        finally:
            if self._control is not None:
                self._control.close()
                self._control = None

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def logs(self) -> str:
        return "\n".join(
            [logs(self.procs), *(f"--- {s.log_path.name} ---\n{s.log()[-4000:]}" for s in self.supervised)]
        )

    def check_alive(self) -> None:
        dead = [p for p in self.procs if p.poll() is not None]
        assert not dead, f"a service exited early:\n{self.logs()}"

    # -- the config
    @cached_property
    def config(self):
        """The run's config as its services load it."""
        from dynamicrl.core.settings import DEFAULT_CONFIG, load_config

        return load_config(self.config_path if self.config_path is not None else DEFAULT_CONFIG, self.overrides)

    @property
    def per_rollout(self) -> int:
        """Env steps per rollout of one env-runner."""
        return self.config.algo.num_steps * self.config.env.num_envs

    @property
    def per_iteration(self) -> int:
        return self.per_rollout * self.envrunners

    @property
    def num_iterations(self) -> int:
        return math.ceil(self.config.run.total_env_steps / self.per_iteration)

    # -- talking to the controller
    def client(self, timeout_s: float = 10.0):
        """A new ControlClient for the controller (no retries); the caller closes it."""
        from dynamicrl.clients.control import ControlClient

        return ControlClient(self.endpoint, timeout_s=timeout_s, retries=0)

    def _controlled(self):
        if self._control is None:
            from dynamicrl.clients.control import ControlClient

            self._control = ControlClient(self.endpoint, timeout_s=3.0, retries=1)
        return self._control

    def status(self):
        self.check_alive()
        return self._controlled().status()

    def call(self, request, timeout_s: float = 15.0):
        with self.client(timeout_s=timeout_s) as client:
            return client.call(request)

    def params(self) -> dict[str, Any]:
        return {name: row.value for name, row in self.param_rows().items()}

    def param_rows(self) -> dict[str, Any]:
        from dynamicrl.protocol.messages import ParamsRequest

        return {row.name: row for row in self._controlled().call(ParamsRequest()).params}

    def cli(self, *args: str, timeout: float = 60) -> CliResult:
        """`dynamicrl ARGS` in the run's environment (its config and overrides), in ``tmp``."""
        return run_cli(*args, cwd=self.tmp, env=self.shell_vars, timeout=timeout)

    def wait_state(self, state, timeout: float = 60):
        """The StatusReply once the run is in ``state`` (while nobody answers yet, polls on)."""
        from dynamicrl.clients.control import ControlError

        return self._wait_status(
            lambda s: s.state is state, timeout, f"the run never got {state.value}", also_tolerated=(ControlError,)
        )

    def wait_iteration(self, n: int, timeout: float = 60):
        """The StatusReply once iteration ``n`` is done (while nobody answers yet, polls on)."""
        return self._wait_status(
            lambda s: s.ltime is not None and s.ltime.iteration >= n, timeout, f"the run never reached iteration {n}"
        )

    def _wait_status(self, accept, timeout: float, message: str, also_tolerated: tuple = ()):
        """Poll status on one connection (a new one costs both ends ~3 ms of CPU: the CURVE handshake) until
        ``accept(status)``; no answer yet (a controller still importing under load) is not yet."""
        from dynamicrl.clients.control import RequestTimeout

        def reached(client):
            self.check_alive()
            try:
                status = client.status()
            except (RequestTimeout, *also_tolerated):
                return None
            return status if accept(status) else None

        with self.client(timeout_s=1.0) as client:
            return wait_until(lambda: reached(client), timeout, message=f"{message}:\n{self.logs()}")

    def names(self, role) -> list[str]:
        return sorted(s.service for s in self.status().services if s.role is role)

    # -- the run directory
    @property
    def run_dir(self) -> Path:
        """The one run directory under ``tmp/runs`` (waits, bounded, for it to appear)."""
        runs = self.tmp / "runs"
        found = wait_until(
            lambda: runs.is_dir() and [p for p in runs.iterdir() if p.is_dir()],
            timeout=60,
            message=f"no run directory appeared:\n{self.logs()}",
        )
        assert len(found) == 1, found
        return found[0]

    def metrics(self) -> list[dict[str, str]]:
        return read_metrics(self.run_dir)

    def metrics_size(self) -> int:
        path = self.run_dir / "metrics.csv"
        return path.stat().st_size if path.exists() else 0

    def journal_text(self) -> str | None:
        path = self.run_dir / "patches.jsonl"
        return path.read_text() if path.exists() else None

    def journal(self) -> list[dict]:
        return [json.loads(line) for line in (self.journal_text() or "").splitlines() if line.strip()]

    def entries(self, patch_id: str) -> dict[str, dict]:
        """Journal entries of one patch, by service."""
        return {e["service"]: e for e in self.journal() if e["patch_id"] == patch_id}

    def rows_after(self, iteration: int, timeout: float = 30) -> list[dict[str, str]]:
        """metrics.csv once it has a row for ``iteration`` (and every row before it)."""

        def written():
            rows = self.metrics()
            return rows if rows and int(rows[-1]["iteration"]) >= iteration else None

        rows = wait_until(written, timeout, message=f"metrics.csv never reached iteration {iteration}:\n{self.logs()}")
        assert [int(r["iteration"]) for r in rows] == list(range(1, len(rows) + 1)), "metrics.csv skips iterations"
        return rows
