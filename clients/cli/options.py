"""What every command that finds the run shares: its config, overrides and output options."""

from __future__ import annotations

import click

from dynamicrl.services.launch import config_option
from dynamicrl.services.launch import load as _load

__all__ = ["_load", "config_option", "json_option", "overrides_argument", "timeout_option"]

timeout_option = click.option(
    "--timeout", type=float, default=None, help="seconds to wait per attempt (default: timing.request_timeout_s)"
)
json_option = click.option("--json", "as_json", is_flag=True, help="print the raw reply as JSON")
overrides_argument = click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
