"""The ``dynamicrl`` command. Each command is a thin function over ControlClient.

Nothing here imports torch at module level: ``dynamicrl status`` must answer
fast, and only ``dynamicrl service learner|envrunner`` needs torch.
"""

from __future__ import annotations

import os
import shlex
import sys

import click

from dynamicrl.config import DEFAULT_CONFIG, Config, ConfigError, load_config

SERVICES = ("controller", "learner", "envrunner", "logger")


def _load(config_path: str, overrides: tuple[str, ...]) -> Config:
    """Config file + $DYNAMICRL_OVERRIDES + command-line overrides (these win)."""
    env_overrides = shlex.split(os.environ.get("DYNAMICRL_OVERRIDES", ""))
    try:
        return load_config(config_path, [*env_overrides, *overrides])
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


config_option = click.option(
    "--config", "-c", "config_path", envvar="DYNAMICRL_CONFIG", default=DEFAULT_CONFIG, show_default=True,
    help="Run config (YAML). Env: DYNAMICRL_CONFIG. Overrides: $DYNAMICRL_OVERRIDES and KEY=VALUE arguments.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dynamicrl")
def main() -> None:
    """DynamicRL: interactive reinforcement learning on a ZeroMQ bus.

    Start a run with `honcho start` (or `dynamicrl service NAME` per process),
    then watch and steer it with the commands below.
    """


@main.command()
@click.argument("name", type=click.Choice(SERVICES))
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
@config_option
@click.option("--rank", type=int, default=None, help="env-runner rank (default: from honcho's process name, else assigned)")
def service(name: str, overrides: tuple[str, ...], config_path: str, rank: int | None) -> None:
    """Run one service process (what the Procfile starts)."""
    config = _load(config_path, overrides)
    if name == "controller":
        from dynamicrl.services.controller.app import main as run
    elif name == "learner":
        from dynamicrl.services.learner.app import main as run
    elif name == "envrunner":
        from dynamicrl.services.envrunner.app import main as run

        _guard(lambda: run(config, rank=rank))
    else:
        from dynamicrl.services.logger.app import main as run
    _guard(lambda: run(config))


def _guard(run) -> int:
    """Run a service; exit without interpreter teardown once it has closed everything.

    A service closes its sockets and files itself. Python's teardown (torch,
    MuJoCo) can then take a second, during which it no longer handles SIGTERM, so
    a supervisor stopping the others would kill it mid-way and report a failure.
    """
    from dynamicrl.services.base import StartupError

    try:
        code = run()
    except StartupError as exc:
        click.echo(f"error: {exc}", err=True)
        code = 2
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@main.command()
@config_option
@click.option("--timeout", type=float, default=None, help="seconds to wait per attempt (default: timing.request_timeout_s)")
@click.option("--json", "as_json", is_flag=True, help="print the raw status as JSON")
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
def status(config_path: str, timeout: float | None, as_json: bool, overrides: tuple[str, ...]) -> None:
    """Services, health, iteration, env steps, SPS and mean return of the running run."""
    from dynamicrl.clients.control import ControlClient, ControlError, RequestTimeout

    config = _load(config_path, overrides)
    endpoint = config.addresses.controller
    with ControlClient(endpoint, timeout_s=timeout or config.timing.request_timeout_s) as client:
        try:
            reply = client.status()
        except RequestTimeout:
            raise click.ClickException(f"no controller answered at {endpoint} (is the run started?)") from None
        except ControlError as exc:
            raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(reply.model_dump_json(indent=2))
        return
    ltime = reply.ltime
    click.echo(f"run       {reply.run_id}  [{reply.state.value}]")
    click.echo(f"dir       {reply.run_dir}")
    if ltime is not None:
        pct = 100.0 * ltime.env_step / max(reply.total_env_steps, 1)
        click.echo(f"progress  iteration {ltime.iteration}, {ltime.env_step} / {reply.total_env_steps} env steps ({pct:.1f}%)")
        click.echo(f"speed     {reply.sps:.0f} env steps/s")
        ret = "n/a (no finished episode yet)" if reply.return_mean is None else f"{reply.return_mean:.1f}"
        click.echo(f"return    {ret}")
    else:
        click.echo("progress  no iteration finished yet")
    click.echo("services:")
    for s in reply.services:
        click.echo(f"  {s.service:<14} {s.role.value:<10} rank {s.rank:<3} pid {s.pid:<8} {s.health.value:<8} "
                   f"seen {s.last_seen_s:.1f}s ago")
