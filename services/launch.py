"""Start one service process: ``dynamicrl service NAME`` and ``python -m dynamicrl.services.NAME``.

The one place that knows every service, so that no service imports another.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import click

from dynamicrl.core.settings import DEFAULT_CONFIG, Config, ConfigError, load_from_environment

SERVICES = ("controller", "learner", "envrunner", "logger", "previewer")

#: How every process and command finds the run's config (the CLI's commands use it too).
config_option = click.option(
    "--config",
    "-c",
    "config_path",
    envvar="DYNAMICRL_CONFIG",
    default=DEFAULT_CONFIG,
    show_default=True,
    help="Run config (YAML). Env: DYNAMICRL_CONFIG. Overrides: $DYNAMICRL_OVERRIDES and KEY=VALUE arguments.",
)


def load(config_path: str, overrides: tuple[str, ...]) -> Config:
    """The run's config as its processes load it; a config error is one line and exit 1."""
    try:
        return load_from_environment(config_path, overrides)
    except ConfigError as exc:
        raise click.ClickException(one_line(str(exc))) from None


def one_line(message: str) -> str:
    """A message of several lines (a config error's problems, one a line) as one line: ``first: a; b``."""
    first, *rest = [line.strip() for line in message.splitlines() if line.strip()] or [""]
    return f"{first} {'; '.join(rest)}" if first.endswith(":") and rest else "; ".join([first, *rest])


@click.command()
@click.argument("name", type=click.Choice(SERVICES))
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
@config_option
@click.option(
    "--rank", type=int, default=None, help="env-runner rank (default: from honcho's process name, else assigned)"
)
def service(name: str, overrides: tuple[str, ...], config_path: str, rank: int | None) -> None:
    """Run one service process (what the Procfile starts).

    Example: dynamicrl service envrunner --rank 1 run.seed=3
    """
    config = load(config_path, overrides)
    if name == "controller":
        from dynamicrl.services.controller.app import main as run_controller

        _guard(lambda: run_controller(config))
    elif name == "learner":
        from dynamicrl.services.learner.app import main as run_learner

        _guard(lambda: run_learner(config))
    elif name == "envrunner":
        from dynamicrl.services.envrunner.app import main as run_envrunner

        _guard(lambda: run_envrunner(config, rank=rank))
    elif name == "previewer":
        from dynamicrl.services.previewer.app import main as run_previewer

        _guard(lambda: run_previewer(config))
    else:
        from dynamicrl.services.logger.app import main as run_logger

        _guard(lambda: run_logger(config))


def _guard(run: Callable[[], int]) -> None:
    """Run a service; exit without interpreter teardown once it has closed everything.

    A service closes its sockets and files itself. Python's teardown (torch,
    MuJoCo) can then take a second, during which it no longer handles SIGTERM, so
    a supervisor stopping the others would kill it mid-way and report a failure.
    """
    from dynamicrl.protocol.security import SecurityError
    from dynamicrl.protocol.sockets import BindError
    from dynamicrl.services.base import StartupError, StoppedBeforeStart

    try:
        code = run()
    except StoppedBeforeStart:  # the controller has said so, once for the run
        code = 0
    except (StartupError, BindError, SecurityError) as exc:
        click.echo(f"error: {exc}", err=True)
        code = 2
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(name: str) -> None:
    """``python -m dynamicrl.services.<name> [ARGS]`` is ``dynamicrl service <name> [ARGS]``."""
    service.main([name, *sys.argv[1:]], prog_name=f"python -m dynamicrl.services.{name}")
