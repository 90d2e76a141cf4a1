"""What every command that finds the run shares: its config, overrides and output options."""

from __future__ import annotations

import math
from typing import Any

import click

from dynamicrl.services.launch import config_option
from dynamicrl.services.launch import load as _load

__all__ = ["SECONDS", "Number", "_load", "config_option", "json_option", "overrides_argument", "timeout_option"]

#: the longest wait or duration an option takes: a day
MAX_SECONDS = 86_400.0


class Number(click.FloatRange):
    """A float option's type: a finite number (click's FloatRange lets nan and inf through) within the range."""

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


#: every option in seconds (waits, timeouts, durations): more than 0, at most a day
SECONDS = Number(min=0, min_open=True, max=MAX_SECONDS)

timeout_option = click.option(
    "--timeout", type=SECONDS, default=None, help="seconds to wait per attempt (default: timing.request_timeout_s)"
)
json_option = click.option("--json", "as_json", is_flag=True, help="print the raw reply as JSON")
overrides_argument = click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
