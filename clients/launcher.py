"""`dynamicrl run` and `dynamicrl resume-run`: a whole run under honcho's Manager, from any directory.

The process set is the Procfile shipped in the package (``services/Procfile``; the repository's
``Procfile`` links to it), expanded the way ``honcho start -c envrunner=N`` expands it, and
honcho supervises exactly as under ``honcho start``: on Ctrl-C it sends SIGTERM to each process,
and each asks the controller to stop the run after a last checkpoint. What the launcher adds
comes before that loop and beside it: the config is loaded once here (an error is one message,
and nothing starts), the machine and the ports are checked, and the console shows the run.
"""

from __future__ import annotations

import importlib.resources
import os
import shlex
import signal
import socket
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from dynamicrl.core.settings import Config

if TYPE_CHECKING:
    from honcho.manager import Manager

#: the variables a run's processes read; the launcher sets them, so a value left in the shell
#: (or the name honcho gives the process that runs the launcher) must not leak in
SCRUBBED = ("DYNAMICRL_RESUME", "HONCHO_PROCESS_NAME")
#: a rough resident size of one env-runner (torch and the env loaded): enough to refuse a count
#: the machine's memory cannot hold, before anything starts
ENVRUNNER_MB = 300


class LaunchError(RuntimeError):
    """The run cannot start as asked; the message says why and what to change. Nothing was started."""


def procfile_text(name: str = "Procfile") -> str:
    return importlib.resources.files("dynamicrl.services").joinpath(name).read_text()


def envrunner_count(config: Config, asked: int | None) -> int:
    """``--envrunners`` if given, else ``run.envrunners``; ``auto`` means one."""
    if asked is not None:
        return asked
    return 1 if config.run.envrunners == "auto" else config.run.envrunners


def check_machine(envrunners: int) -> None:
    """Refuse an env-runner count this machine's memory cannot hold (one clear line, nothing started)."""
    import psutil

    available_mb = psutil.virtual_memory().available / 2**20
    if envrunners * ENVRUNNER_MB > available_mb:
        raise LaunchError(
            f"run.envrunners={envrunners}: each env-runner needs about {ENVRUNNER_MB} MB and this machine has "
            f"{available_mb:.0f} MB available; ask for fewer (--envrunners N)"
        )


def check_ports(config: Config) -> None:
    """Each address the run binds must be free, or the start fails later, once per process."""
    for key in ("controller", "bus_in", "bus_out", "data"):
        address = getattr(config.addresses, key)
        parts = urlsplit(address)
        if parts.scheme != "tcp" or parts.port is None:
            continue
        host = "0.0.0.0" if parts.hostname in ("*", None) else parts.hostname
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as ZeroMQ binds
            try:
                probe.bind((host, parts.port))
            except OSError as exc:
                raise LaunchError(
                    f"addresses.{key} {address}: cannot bind ({exc.strerror}); is another run on these ports? "
                    f"Start this one elsewhere with --port N (N to N+3 must be free)"
                ) from None


def service_environment(config_path: str, overrides: Sequence[str], extra: Mapping[str, str]) -> dict[str, str]:
    """The shell environment plus the run's config, overrides and how to start a service."""
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    if Path(config_path).is_file():  # else a packaged config: each service finds it the same way
        config_path = str(Path(config_path).resolve())
    env["DYNAMICRL_CONFIG"] = config_path
    env["DYNAMICRL_OVERRIDES"] = " ".join(filter(None, [env.get("DYNAMICRL_OVERRIDES", ""), shlex.join(overrides)]))
    if shlex.quote(sys.executable) == sys.executable:  # the Procfile expands it unquoted
        env["DYNAMICRL_CLI"] = f"{sys.executable} -m dynamicrl.clients.cli"
        env["DYNAMICRL_SERVICE"] = f"{env['DYNAMICRL_CLI']} service"
    env.setdefault("PYTHONUNBUFFERED", "1")  # lines reach the console as they are written
    env.update(extra)
    return env


def launch(
    config: Config,
    config_path: str,
    overrides: Sequence[str],
    envrunners: int,
    extra_env: Mapping[str, str] | None = None,
    dashboard: bool = False,
) -> int:
    """Start the run's processes under honcho (and the dashboard, if asked) and show them until every one
    has exited; the run's exit code (`run_exit_code`)."""
    from honcho.environ import expand_processes, parse_procfile
    from honcho.manager import Manager

    from dynamicrl.clients.console import LiveConsole, RunView, for_stream

    check_machine(envrunners)
    check_ports(config)
    env = service_environment(config_path, overrides, extra_env or {})
    view = RunView(total_env_steps=config.run.total_env_steps)
    console = for_stream(sys.stdout, view)
    manager = Manager(console)
    processes = parse_procfile(procfile_text()).processes
    if dashboard:  # a client beside the run, from its own Procfile entry
        processes.update(parse_procfile(procfile_text("Procfile.dashboard")).processes)
    # the previewer only when it draws (clips or pause previews): otherwise it would only idle
    concurrency = {"envrunner": envrunners, "previewer": 1 if config.video.previewer else 0}
    for process in expand_processes(processes, concurrency=concurrency):
        manager.add_process(process.name, process.cmd, env={**env, **process.env})
    watcher = BusWatcher(config.addresses.bus_out, view, config.security) if isinstance(console, LiveConsole) else None
    try:
        if watcher is not None:
            watcher.start()
        manager.loop()
    finally:
        if watcher is not None:
            watcher.close()
            console.close()
    return run_exit_code(manager)


def run_exit_code(manager: Manager) -> int:
    """The controller's code if it failed, else honcho's (a signal's 130/143, or the first process to
    stop), else any later process's failure but honcho's own SIGKILL.

    honcho alone reports whichever process stopped first: a previewer that exits 0 as the run stops
    would hide a controller that stops the run with 1 (a bad rollout, a lost learner). honcho SIGKILLs
    whatever has not stopped 5 s after the first one did; once the controller, the run's authority,
    has exited 0 (the run ended and was saved), that is no failure of the run. It happens to a
    previewer at nice 10 that a loaded machine keeps from running its SIGTERM handler in time."""
    codes = {name: proc.get("returncode") for name, proc in manager._processes.items()}
    failed = [code for _, code in sorted(codes.items()) if code and code != -signal.SIGKILL]
    return codes.get("controller.1") or manager.returncode or (failed[0] if failed else 0)


class BusWatcher(threading.Thread):
    """Keeps the console's view of the run current from the bus: metrics.train, state, patches, checkpoints."""

    def __init__(self, endpoint: str, view, security_settings) -> None:
        super().__init__(name="bus-watcher", daemon=True)
        self.endpoint, self.view, self.security = endpoint, view, security_settings
        self.done = threading.Event()

    def run(self) -> None:
        from dynamicrl.protocol.security import context_for
        from dynamicrl.protocol.sockets import Subscriber

        ctx = context_for(self.security)
        sub = Subscriber(ctx, self.endpoint)  # everything: a topic filter would show gaps where nothing was lost
        try:
            while not self.done.is_set():
                if sub.socket.poll(200):
                    received = sub.receive()
                    if received is not None:
                        self.see(received.message)  # the console redraws from the view by itself
        finally:
            sub.close()
            ctx.term()

    def see(self, message) -> None:
        from dynamicrl.protocol.messages import CheckpointSaved, PatchEvent, RunStateChanged, TrainMetrics

        view = self.view
        if isinstance(message, TrainMetrics):
            view.iteration, view.env_steps, view.sps = message.iteration, message.env_steps, message.sps
            view.total_env_steps = int(message.hyperparameters.get("run.total_env_steps", view.total_env_steps) or 1)
            if message.return_mean is not None:
                view.return_mean = message.return_mean
        elif isinstance(message, RunStateChanged):
            state = message.state.value
            if state == "paused" and view.state != "paused":
                view.event = f"paused at iteration {view.iteration}"
            elif state == "running" and view.state == "paused":
                view.event = f"resumed at iteration {view.iteration}"
            view.state = state
        elif isinstance(message, CheckpointSaved):
            saved = message.checkpoint
            view.event = f"checkpoint {Path(saved.path).name} ({saved.kind}) at iteration {saved.ltime.iteration}"
        elif isinstance(message, PatchEvent):
            changes = ", ".join(f"{k} {c.old} -> {c.new}" for k, c in message.entry.changes.items())
            view.event = f"patch {changes} at iteration {message.entry.ltime.iteration}"

    def close(self) -> None:
        self.done.set()
        self.join(timeout=2)
