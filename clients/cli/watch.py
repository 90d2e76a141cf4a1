"""`dynamicrl watch`: a live console view of the bus, built on the Monitor SDK."""

from __future__ import annotations

import logging
import os
import time
from enum import Enum
from typing import TYPE_CHECKING, Any

import click
from pydantic import BaseModel

from dynamicrl.clients.cli.options import SECONDS, _load, config_option, overrides_argument

if TYPE_CHECKING:  # numpy, zmq and the message models load when the command runs: `dynamicrl status` stays fast
    from dynamicrl.protocol.codec import Received
    from dynamicrl.protocol.messages import EpisodeStats, PatchEvent, RunStateChanged, TrainMetrics

#: metrics.train values shown after return and SPS, in this order when present (then any other *loss*).
TRAIN_VALUES = ("policy_loss", "value_loss", "entropy", "approx_kl")
#: A generic line is cut to this many characters.
MAX_LINE = 160


class LineFormatter:
    """One readable line per event, or None for what is not worth a line (a beacon that repeats)."""

    def __init__(self) -> None:
        self.states: dict[str, tuple[str | None, str]] = {}  # sender -> (run_id, state) last shown

    def format(self, event: Received) -> str | None:
        message, envelope = event.message, event.envelope
        if message.TYPE == "control.state":
            text = self._state(envelope.sender, envelope.run_id, message)
            if text is None:
                return None
            label, body = "state", text
        elif message.TYPE == "metrics.train":
            label, body = "train", _train(message)
        elif message.TYPE == "control.patch":
            label, body = "patch", _patch(message)
        elif message.TYPE == "metrics.episode":
            label, body = "episodes", _episodes(message)
        else:
            label, body = message.TYPE, f"{envelope.sender}  {summary(message)}"
        return _cut(f"{_clock(envelope.ts)}  {label:<8} {body}")

    def _state(self, sender: str, run_id: str | None, message: RunStateChanged) -> str | None:
        shown = self.states.get(sender)
        current = (run_id, message.state.value)
        if shown == current and not message.reason:  # the 0.5 s beacon repeating what we showed
            return None
        self.states[sender] = current
        text = message.state.value + (f": {message.reason}" if message.reason else "")
        if shown is None or shown[0] != run_id:  # first sight of this run (or a controller restart)
            text += f"  (run {run_id})"
        return text


def _clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


def _num(value: float | None, fmt: str = ".4g") -> str:
    return "n/a" if value is None else format(value, fmt)


def _train(m: TrainMetrics) -> str:
    names = [k for k in TRAIN_VALUES if k in m.values]
    names += sorted(k for k in m.values if k.endswith("loss") and k not in names)
    values = "  ".join(f"{k} {_num(m.values[k])}" for k in names)
    return f"iter {m.iteration:<5} steps {m.env_steps:<9} return {_num(m.return_mean, '.1f'):<7} sps {m.sps:<7.0f}" + (
        f" {values}" if values else ""
    )


def _patch(m: PatchEvent) -> str:
    e = m.entry
    where = f"iteration {e.ltime.iteration}, env step {e.ltime.env_step}"
    where += f", minibatch {e.minibatch}" if e.minibatch is not None else ""
    changes = ", ".join(f"{k} {c.old!r} -> {c.new!r}" for k, c in sorted(e.changes.items()))
    return f"{e.patch_id} by {e.author} applied by {e.service} at {where}: {changes}"


def _episodes(m: EpisodeStats) -> str:
    import numpy as np

    if not m.returns:
        return f"rank {m.rank}: no episode finished  env steps {m.env_steps}"
    returns = np.asarray(m.returns, dtype=float)
    length = f"  length {np.mean(m.lengths):.1f}" if m.lengths else ""
    return (
        f"rank {m.rank}: {len(m.returns)} finished, return {returns.mean():.1f} "
        f"(min {returns.min():.1f}, max {returns.max():.1f}){length}  env steps {m.env_steps}"
    )


def summary(message: BaseModel) -> str:
    """``field=value`` for every field of any message, each value shortened."""
    return ", ".join(f"{name}={_short(getattr(message, name))}" for name in type(message).model_fields)


def _short(value: Any, depth: int = 0) -> str:
    import numpy as np

    if isinstance(value, np.ndarray):
        return f"{value.dtype.str}{list(value.shape)}"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, BaseModel):
        value = {name: getattr(value, name) for name in type(value).model_fields}
    if isinstance(value, float):
        return format(value, ".4g")
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    if isinstance(value, dict):
        if depth >= 1 or len(value) > 4:
            return f"{{{len(value)} keys}}"
        return "{" + ", ".join(f"{k}: {_short(v, depth + 1)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        if depth >= 1 or len(value) > 4:
            return f"[{len(value)} items]"
        return "[" + ", ".join(_short(v, depth + 1) for v in value) + "]"
    return repr(value)


def _cut(line: str) -> str:
    return line if len(line) <= MAX_LINE else line[: MAX_LINE - 3] + "..."


class _Notices:
    """Gap and drop lines, at most one of each kind per second (a flood must not flood the console)."""

    def __init__(self) -> None:
        self.last: dict[str, float] = {}
        self.held: dict[str, int] = {}

    def gap(self, sender: str, count: int) -> None:
        self._say(
            "gap", count, lambda n: f"!! missed {n} message(s) from {sender} (PUB/SUB drops when a queue is full)"
        )

    def reject(self, error: Exception) -> None:
        self._say("drop", 1, lambda n: f"!! skipped {n} undecodable message(s): {error}")

    def _say(self, kind: str, count: int, text) -> None:
        self.held[kind] = self.held.get(kind, 0) + count
        now = time.monotonic()
        if now - self.last.get(kind, float("-inf")) >= 1.0:
            click.echo(_cut(f"{_clock(time.time())}  {text(self.held.pop(kind))}"))
            self.last[kind] = now


@click.command("watch")
@config_option
@click.option(
    "--topic",
    "-t",
    "topics",
    multiple=True,
    metavar="PREFIX",
    help="topic prefix to watch, repeatable (default: everything; e.g. metrics. or control.state)",
)
@click.option(
    "--count",
    "-n",
    type=click.IntRange(min=1),
    default=None,
    help="exit after N event lines (exit 1 if --timeout comes first)",
)
@click.option("--timeout", type=SECONDS, default=None, help="exit after S seconds")
@click.option(
    "--no-report",
    "no_report",
    is_flag=True,
    help="do not report received and missed counts to the controller (shown by `dynamicrl status`)",
)
@overrides_argument
def watch_command(
    config_path: str,
    topics: tuple[str, ...],
    count: int | None,
    timeout: float | None,
    no_report: bool,
    overrides: tuple[str, ...],
) -> None:
    """Print the bus live, one line per event: training metrics, state changes, patches, episodes.

    Subscribes to addresses.bus_out. State beacons that repeat the state are not
    shown; any other message type gets a generic line (type, sender, fields).
    Lost messages (holes in a sender's sequence numbers) and undecodable ones get
    a line starting with `!!`. A bus of another major protocol version stops it
    with an error. Unless --no-report, it reports its counts to the controller
    (addresses.controller) every 2 s and on exit, as watch.<pid>, so that
    `dynamicrl status` shows what it lost.

    Example: dynamicrl watch --topic control.
    """
    from dynamicrl.clients import monitor as monitor_module
    from dynamicrl.clients.monitor import Monitor, ProtocolVersionMismatch

    config = _load(config_path, overrides)
    endpoint = config.addresses.bus_out
    quiet = logging.getLogger(monitor_module.__name__)  # the notices below say it on stdout instead
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    notices = _Notices()
    formatter = LineFormatter()
    shown = 0
    report_to = None if no_report else config.addresses.controller
    click.echo(
        f"watching {endpoint} ({', '.join(topics) if topics else 'every topic'})"
        + (f", reporting losses to {report_to}" if report_to else "")
        + "; Ctrl-C stops",
        err=True,
    )
    monitor = Monitor(
        endpoint,
        topics or ("",),
        on_gap=notices.gap,
        on_reject=notices.reject,
        report_to=report_to,
        name=f"watch.{os.getpid()}",
    )
    with monitor:
        try:
            for event in monitor.events(timeout):
                line = formatter.format(event)
                if line is None:
                    continue
                click.echo(line)
                shown += 1
                if count is not None and shown >= count:
                    break
        except ProtocolVersionMismatch as exc:
            raise click.ClickException(f"{exc}; this dynamicrl speaks protocol {exc.expected}") from None
        except KeyboardInterrupt:
            pass
    # after close, which sent the final report
    reported = (
        ""
        if report_to is None
        else (
            f"; could not report to {report_to}: {monitor.report_error}"
            if monitor.report_error
            else f"; reported to {report_to}"
        )
    )
    click.echo(
        f"{shown} line(s); {monitor.received} message(s) received, {monitor.missed} missed, "
        f"{monitor.rejected} undecodable{reported}",
        err=True,
    )
    if count is not None and shown < count:
        raise click.ClickException(f"timed out after {timeout} s with {shown} of {count} event line(s)")
