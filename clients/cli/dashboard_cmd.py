"""`dynamicrl dashboard`: the run in a browser, and its commands over HTTP (clients/dashboard)."""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import socket
from pathlib import Path

import click

from dynamicrl.clients.cli.options import _load, config_option, overrides_argument

DEFAULT_PORT = 8650


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command("dashboard")
@config_option
@overrides_argument
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    envvar="DYNAMICRL_DASHBOARD_HOST",
    help="address to listen on (loopback by default). Env: DYNAMICRL_DASHBOARD_HOST",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    envvar="DYNAMICRL_DASHBOARD_PORT",
    help="0: any free port. Env: DYNAMICRL_DASHBOARD_PORT",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    envvar="DYNAMICRL_DASHBOARD_TOKEN_FILE",
    help="read the token from it, or write a new one there, mode 0600 (default: ~/.dynamicrl/dashboard-PORT.token)",
)
@click.option(
    "--event-buffer",
    type=click.IntRange(min=1),
    default=4096,
    show_default=True,
    help="bus events kept for event-stream readers that fall behind or reconnect",
)
def dashboard(
    config_path: str, overrides: tuple[str, ...], host: str, port: int, token_file: Path | None, event_buffer: int
) -> None:
    """A live page and a REST API for the run: curves, services, clips, previews; pause, patch, stop.

    Prints its URL with a token once (as Jupyter does); every request needs that token. The
    interactive API docs are at /docs. Stops with Ctrl-C; the run is not touched.

    Example: dynamicrl dashboard --port 8650
    """
    import uvicorn

    from dynamicrl.clients.dashboard.app import create_app
    from dynamicrl.clients.dashboard.auth import default_token_file, load_or_create_token
    from dynamicrl.clients.dashboard.events import EventHub

    config = _load(config_path, overrides)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not _loopback(host):
        click.echo(
            f"warning: --host {host} serves the dashboard beyond this machine without TLS: anyone on the network "
            "path can read the token and the run, and then pause, patch or stop it. Put it behind a TLS proxy, or "
            "keep it on 127.0.0.1 and reach it through an SSH tunnel.",
            err=True,
        )
    try:
        listener = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as exc:
        raise click.ClickException(
            f"--host {host} --port {port}: cannot listen ({exc.strerror}); try --port N"
        ) from None
    port = listener.getsockname()[1]
    path = token_file or default_token_file(port)
    try:
        token = load_or_create_token(path)
    except OSError as exc:
        raise click.ClickException(f"--token-file {path}: {exc.strerror or exc}") from None
    hub = EventHub(config.addresses.bus_out, config.addresses.controller, f"dashboard.{os.getpid()}", event_buffer)
    app = create_app(config, token, hub)
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"Dashboard: http://{shown}:{port}/?token={token}  (token in {path})", err=True)
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=1, lifespan="on")
    )
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again for the handler
    # it found: let that be a no-op, so a stop (Ctrl-C, honcho's SIGTERM) exits 0 like every service
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    server.run(sockets=[listener])
