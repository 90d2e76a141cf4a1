"""What every command that finds the run shares: its config, overrides and output options."""

from __future__ import annotations

import click

from dynamicrl.core.settings import DEFAULT_CONFIG, Config, ConfigError, load_from_environment


def _load(config_path: str, overrides: tuple[str, ...]) -> Config:
    """The run's config as its processes load it; a config error is one message and exit 1."""
    try:
        return load_from_environment(config_path, overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


config_option = click.option(
    "--config",
    "-c",
    "config_path",
    envvar="DYNAMICRL_CONFIG",
    default=DEFAULT_CONFIG,
    show_default=True,
    help="Run config (YAML). Env: DYNAMICRL_CONFIG. Overrides: $DYNAMICRL_OVERRIDES and KEY=VALUE arguments.",
)
timeout_option = click.option(
    "--timeout", type=float, default=None, help="seconds to wait per attempt (default: timing.request_timeout_s)"
)
json_option = click.option("--json", "as_json", is_flag=True, help="print the raw reply as JSON")
overrides_argument = click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
