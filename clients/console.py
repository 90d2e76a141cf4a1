"""The launcher's console: the processes' lines, and on a terminal a live progress bar under them.

Both consoles are honcho printers (``write(message)``, ``width``): honcho's Manager hands them
every line of every process and its own. On a terminal the lines scroll above a rich progress
bar fed from the bus (env steps, percentage, ETA, steps/s, latest return, run state and the last
pause, patch or checkpoint); anywhere else (CI, a pipe, a file) they are honcho's plain lines,
without escape codes.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import IO, Any

from honcho.printer import Printer
from rich.columns import Columns
from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.text import Text

#: honcho's ANSI colour codes ("36", "36;1") as rich colours, for each process's prefix
_COLOURS = dict(enumerate(("black", "red", "green", "yellow", "blue", "magenta", "cyan", "white"), start=30))


def _style(colour: str | None) -> str:
    code, _, bold = (colour or "").partition(";")
    name = _COLOURS.get(int(code), "") if code.isdigit() else ""
    return f"bold {name}" if bold and name else name


@dataclass
class RunView:
    """What the progress bar shows, as the bus last told it."""

    state: str = "starting"
    env_steps: int = 0
    total_env_steps: int = 1
    iteration: int = 0
    sps: float | None = None
    return_mean: float | None = None
    event: str = ""

    def eta(self) -> str:
        if not self.sps or self.env_steps >= self.total_env_steps:
            return "-:--:--"
        return str(datetime.timedelta(seconds=round((self.total_env_steps - self.env_steps) / self.sps)))


def for_stream(stream: IO[str], view: RunView) -> Any:
    """A live console on a terminal, honcho's own plain printer anywhere else."""
    if stream.isatty():
        return LiveConsole(stream, view)
    return Printer(stream, colour=False)


class LiveConsole:
    """The processes' lines above two live lines that redraw a few times a second:

    ``━━━━━━━━━━━━━━━━━━━━━━━━  61,440 / 150,000 env steps (41.0%)  ETA 0:00:12``
    ``running  7,141 steps/s  return 187.1  iteration 240  patch ppo.lr 0.0025 -> 0.0001 at iteration 34``
    """

    def __init__(self, stream: IO[str], view: RunView) -> None:
        self.width = 0  # set by honcho: the longest process name
        self.view = view
        self.console = Console(file=stream, highlight=False)
        self.live = Live(self, console=self.console, refresh_per_second=4, transient=False)
        self.live.start()

    def __rich__(self) -> Group:
        v = self.view
        pct = 100.0 * v.env_steps / max(v.total_env_steps, 1)
        bar = ProgressBar(total=max(v.total_env_steps, 1), completed=min(v.env_steps, v.total_env_steps), width=24)
        steps = Text(f"  {v.env_steps:,} / {v.total_env_steps:,} env steps ({pct:.1f}%)  ETA {v.eta()}")
        sps = "-" if v.sps is None else f"{v.sps:,.0f}"
        ret = "n/a" if v.return_mean is None else f"{v.return_mean:.1f}"
        status = Text.assemble(
            (f"{v.state:<8}", "bold"), f" {sps} steps/s  return {ret}  iteration {v.iteration}  ", (v.event, "dim")
        )
        return Group(Columns([bar, steps], padding=0), status)

    def write(self, message: Any) -> None:
        data = message.data.decode("utf-8", "replace") if isinstance(message.data, bytes) else message.data
        name = (message.name or "").ljust(self.width)
        style = _style(message.colour)
        for line in data.splitlines():
            prefix = Text(f"{message.time:%H:%M:%S} {name} | ", style=style)
            self.console.print(prefix + Text(line), soft_wrap=True)

    def close(self) -> None:
        self.live.stop()
