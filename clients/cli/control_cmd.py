"""Requests to the live run's controller: status, pause, resume, params, patch, history, checkpoint, stop.

Each command is its own options, the request it builds from them and how it prints the reply;
`request_command` does the rest, the same for all.
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from dynamicrl.clients.cli.options import _load, config_option, json_option, overrides_argument, timeout_option
from dynamicrl.core.settings import Config

if TYPE_CHECKING:  # the message models load when a command runs
    from dynamicrl.protocol import messages


def _call(config: Config, request, timeout_s: float | None = None):
    """One request to the controller; every failure becomes one clear message and exit 1."""
    from dynamicrl.clients import control
    from dynamicrl.protocol.security import SecurityError

    try:
        return control.call(config, request, timeout_s)
    except control.RequestTimeout:
        keys = f" are its keys in {config.security.keys}?" if config.security.curve else ""
        raise click.ClickException(
            f"no controller answered at {config.addresses.controller} (is the run started?{keys})"
        ) from None
    except SecurityError as exc:
        raise click.ClickException(str(exc)) from None
    except control.ControlError as exc:
        raise click.ClickException(str(exc)) from None


def request_command(
    show: Callable[[Any], None],
    *,
    with_timeout: bool = False,
    overrides_from=overrides_argument,
    follow: Callable[..., contextlib.AbstractContextManager[Callable[..., Any] | None]] | None = None,
):
    """Make ``build(**its own options) -> request`` a command that sends the request and prints the reply.

    Adds --config, --timeout (if ``with_timeout``), then the command's own options, the config
    overrides (``overrides_from``: KEY=VALUE arguments unless given) and --json. Sends the request
    to the controller (waiting as long as that request may take: ``control.reply_within_s``), and
    prints the reply as JSON with --json, else with ``show(reply)``.

    ``follow(config, **options)``: what the command waits for after the reply (e.g. bus events), entered
    before the request is sent so nothing is missed; it yields None (nothing to wait for) or
    ``after(reply)``, which prints (or returns, with --json: added to the reply's JSON as ``followed``).
    """

    def decorate(build: Callable[..., Any]) -> Callable[..., None]:
        def command(
            config_path: str, as_json: bool, overrides: tuple[str, ...], timeout: float | None = None, **options: Any
        ) -> None:
            request = build(**options)
            config = _load(config_path, overrides)
            with follow(config, **options) if follow else contextlib.nullcontext() as after:
                reply = _call(config, request, timeout)
                if as_json:
                    document = reply.model_dump(mode="json")
                    if after is not None:
                        document["followed"] = after(reply, as_json=True)
                    click.echo(json.dumps(document, indent=2))
                    return
                show(reply)
                if after is not None:
                    after(reply, as_json=False)

        # its name and docstring become the command's name and help
        wrapped: Any = functools.update_wrapper(command, build, updated=())
        # each click.option/argument appends its parameter to __click_params__, and click.command shows that list
        # reversed (top decorator first): so json first (shown last), the overrides, then build's own options,
        # then timeout and config (shown first)
        wrapped.__click_params__ = []
        overrides_from(json_option(wrapped))
        wrapped.__click_params__ += getattr(build, "__click_params__", [])
        config_option(timeout_option(wrapped) if with_timeout else wrapped)
        return wrapped

    return decorate


def _where(ltime, minibatch=None) -> str:
    text = f"iteration {ltime.iteration}, env step {ltime.env_step}"
    return text + (f", minibatch {minibatch}" if minibatch is not None else "")


def _print_status(reply: messages.StatusReply) -> None:
    ltime = reply.ltime
    stalled = "" if reply.stalled_s is None else f", STALLED: nothing advanced for {reply.stalled_s:.0f} s"
    click.echo(f"run       {reply.run_id}  [{reply.state.value}{stalled}]")
    click.echo(f"dir       {reply.run_dir}")
    if reply.waiting_for:
        click.echo(f"waiting   for {reply.waiting_for}")
    if ltime is not None:
        pct = 100.0 * ltime.env_step / max(reply.total_env_steps, 1)
        click.echo(
            f"progress  iteration {ltime.iteration}, {ltime.env_step} / {reply.total_env_steps} env steps ({pct:.1f}%)"
        )
        click.echo(f"speed     {reply.sps:.0f} env steps/s")
        ret = "n/a (no finished episode yet)" if reply.return_mean is None else f"{reply.return_mean:.1f}"
        click.echo(f"return    {ret}")
    else:
        click.echo("progress  no iteration finished yet")
    if reply.last_checkpoint is not None:
        saved = reply.last_checkpoint
        click.echo(
            f"checkpoint {saved.path} ({saved.kind}, iteration {saved.ltime.iteration}); {saved.kept} in checkpoints/"
        )
    by_services, by_monitors = sum(s.missed for s in reply.services), sum(m.missed for m in reply.monitors)
    click.echo(
        f"missed    {by_services + by_monitors} bus message(s) in all: {by_services} by services, "
        f"{by_monitors} by {len(reply.monitors)} monitor(s)"
    )
    guard = reply.security
    if guard is not None:
        click.echo(
            f"security  CURVE {'on' if guard.curve else 'OFF (debugging only)'}; refused {guard.refused_handshakes} "
            f"connection(s), dropped {guard.dropped_bus} bus frame(s)"
        )
    click.echo("services:")
    for s in reply.services:
        at = f"  at {_where(s.ltime)}" if s.ltime else ""
        at += f"  missed {s.missed} bus message(s)" if s.missed else ""
        at += (
            f"  cpu {s.cpu_percent:.0f}%  rss {s.rss_mb:.0f} MiB"
            if s.cpu_percent is not None and s.rss_mb is not None
            else ""
        )
        click.echo(
            f"  {s.service:<14} {s.role.value:<10} rank {s.rank:<3} pid {s.pid:<8} {s.health.value:<8} "
            f"seen {s.last_seen_s:.1f}s ago{at}"
        )
    if reply.monitors:
        click.echo("monitors:")
    for m in reply.monitors:
        topics = ",".join(t or "(all)" for t in m.topics) or "-"
        senders = ", ".join(f"{k} {n}" for k, n in sorted(m.missed_by_sender.items(), key=lambda kv: -kv[1]) if n)
        extra = f" ({senders})" if senders else ""
        extra += f"  {m.rejected} undecodable" if m.rejected else ""
        click.echo(
            f"  {m.name:<20} received {m.received:<9} missed {m.missed:<7} report {m.last_report_s:.1f}s ago"
            f"{' (closed)' if m.closed else ''}  topics {topics}{extra}"
        )


@click.command()
@request_command(_print_status, with_timeout=True)
def status() -> messages.StatusRequest:
    """Services, health, iteration, env steps, SPS, mean return and bus messages lost (services, monitors).

    Example: dynamicrl status --json
    """
    from dynamicrl.protocol.messages import StatusRequest

    return StatusRequest()


def _print_pause(reply: messages.PauseReply) -> None:
    if reply.already:
        click.echo(f"already paused (pause {reply.pause}); services stand at:")
    else:
        click.echo(f"pause {reply.pause}: paused in {reply.latency_s * 1000:.1f} ms; services stand at:")
    for p in reply.positions:
        click.echo(f"  {p.service:<14} {_where(p.ltime, p.minibatch)}")


#: how long `pause --preview` waits for the previews (the first pause also makes the previewer's GL context)
PREVIEW_WAIT_S = 60.0


@contextlib.contextmanager
def _previews_of_the_pause(config: Config, preview: bool) -> Iterator[Callable[..., Any] | None]:
    """With --preview: subscribed to the bus before the pause is asked for, wait for its PreviewsSaved."""
    if not preview:
        yield None
        return
    from dynamicrl.protocol.messages import PreviewsSaved, StatusRequest
    from dynamicrl.protocol.security import context_for
    from dynamicrl.protocol.sockets import Subscriber

    ctx = context_for(config.security)
    sub = Subscriber(ctx, config.addresses.bus_out, [PreviewsSaved.TYPE])

    def after(reply: messages.PauseReply, as_json: bool) -> Any:
        if not reply.previews:
            raise click.ClickException(
                "no pause previews: the run has no previewer, video.pause_previews is off, "
                "or the env has no scene to draw (the env-runners' log says so)"
            )
        if reply.already:  # drawn when the pause began, announced then: read them where they were written
            folder = Path(_call(config, StatusRequest()).run_dir) / "previews" / f"pause-{reply.pause}"
            written = sorted(folder.glob("*.png")) if folder.is_dir() else []
            if written:
                return _show_previews(reply.pause, [str(p) for p in written], None, as_json)
        deadline = time.monotonic() + PREVIEW_WAIT_S
        while (left_ms := int(1000 * (deadline - time.monotonic()))) > 0:
            if not sub.socket.poll(left_ms):
                break
            received = sub.receive()
            saved = received.message if received is not None else None
            if not isinstance(saved, PreviewsSaved) or saved.pause != reply.pause:
                continue
            if saved.error:
                raise click.ClickException(f"no previews of pause {saved.pause}: {saved.error}")
            return _show_previews(saved.pause, saved.paths, saved.seconds, as_json)
        raise click.ClickException(f"no previews of pause {reply.pause} within {PREVIEW_WAIT_S:g} s")

    try:
        time.sleep(0.1)  # the subscription reaches the bus before the previews can (ZeroMQ's slow joiner)
        yield after
    finally:
        sub.close()
        ctx.term()


def _show_previews(pause: int, paths: list[str], seconds: float | None, as_json: bool) -> Any:
    if as_json:
        return {"pause": pause, "paths": paths}
    drawn = f", drawn in {seconds:.2f} s" if seconds is not None else ""
    click.echo(f"previews of pause {pause} ({len(paths)}{drawn}):")
    for path in paths:
        click.echo(f"  {path}")
    return None


@click.command()
@click.option("--preview", is_flag=True, help="then wait for the pause's previews and print their paths")
@request_command(_print_pause, follow=_previews_of_the_pause)
def pause(preview: bool) -> messages.PauseRequest:
    """Stop every service at its next safe point; returns once all stand at the barrier.

    Prints where each service stopped. Pausing a paused run is harmless. If a
    service does not reach its barrier within timing.pause_timeout_s, the pause is
    called off (the run keeps going) and the command fails naming that service.
    The previewer then draws each env-runner's sub-envs as they stand
    (runs/<id>/previews/pause-<n>/); the pause does not wait for that, --preview does.

    Example: dynamicrl pause --preview
    """
    from dynamicrl.protocol.messages import PauseRequest

    return PauseRequest()


def _print_resume(reply: messages.ResumeReply) -> None:
    if reply.already:
        click.echo("not paused; nothing to resume")
    else:
        click.echo(f"resumed after {reply.paused_s:.1f} s paused")


@click.command()
@request_command(_print_resume)
def resume() -> messages.ResumeRequest:
    """Continue a paused run exactly where each service stopped (harmless if running).

    Example: dynamicrl resume
    """
    from dynamicrl.protocol.messages import ResumeRequest

    return ResumeRequest()


def _print_params(reply: messages.ParamsReply) -> None:
    from dynamicrl.core.tunables import allowed

    click.echo(f"{'name':<22} {'value':<12} {'allowed':<26} {'applies':<15} description")
    for row in reply.params:
        click.echo(f"{row.name:<22} {row.value!s:<12} {allowed(row):<26} {row.apply:<15} {row.description}")


@click.command()
@request_command(_print_params)
def params() -> messages.ParamsRequest:
    """Every live-tunable hyperparameter: type, bounds, apply point, current value.

    Example: dynamicrl params
    """
    from dynamicrl.protocol.messages import ParamsRequest

    return ParamsRequest()


def _print_patch(reply: messages.PatchReply) -> None:
    click.echo(f"patch {reply.patch_id}: {reply.status.value}")
    for entry in reply.applied:
        for name, change in entry.changes.items():
            click.echo(
                f"  {name}: {change.old!r} -> {change.new!r}  by {entry.service} at "
                f"{_where(entry.ltime, entry.minibatch)}"
            )


@click.command(context_settings={"ignore_unknown_options": True})
@request_command(
    _print_patch,
    overrides_from=click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="KEY=VALUE",
        help="config override for finding the controller (e.g. --set addresses.controller=...)",
    ),
)
@click.argument("changes", nargs=-1, required=True, metavar="NAME=VALUE...")
@click.option(
    "--at-iteration",
    type=click.IntRange(min=0),
    default=None,
    help="apply once this many iterations are complete (default: at each value's apply point)",
)
@click.option("--no-wait", is_flag=True, help="return once accepted instead of when applied")
@click.option("--author", default=None, help="recorded in the journal (default: cli@<user>)")
def patch(
    changes: tuple[str, ...], at_iteration: int | None, no_wait: bool, author: str | None
) -> messages.PatchRequest:
    """Change hyperparameters of the live run, all or nothing: `dynamicrl patch ppo.lr=1e-4 ppo.ent_coef=0.01`.

    The whole patch is validated first (unknown name, wrong type, out of bounds:
    nothing changes and the error names the key, the value and what is allowed).
    Each value then takes effect at its apply point (see `dynamicrl params`); the
    reply gives the logical time at which it did. Sent while paused, it takes
    effect on resume. Every application is appended to the run's patches.jsonl.

    Example: dynamicrl patch ppo.lr=1e-4 --at-iteration 50
    """
    import getpass

    from dynamicrl.core.settings import value_problem
    from dynamicrl.core.tunables import parse_value
    from dynamicrl.protocol.messages import PatchRequest

    if author is not None and (problem := value_problem(author)):
        raise click.BadParameter(problem, param_hint="'--author'")
    parsed = {}
    for item in changes:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r}: expected NAME=VALUE (e.g. ppo.lr=1e-4)", param_hint="CHANGES")
        # what no message can carry is refused here, naming the key: the controller never sees it
        value = parse_value(text.strip())
        if problem := value_problem(item) or value_problem(value):
            raise click.BadParameter(f"{item!r}: {problem}", param_hint="CHANGES")
        # a list or mapping is no tunable's value: send the text so the controller names the key and says why
        parsed[name.strip()] = value if value is None or isinstance(value, (bool, int, float, str)) else text.strip()
    return PatchRequest(
        changes=parsed, at_iteration=at_iteration, wait=not no_wait, author=author or f"cli@{getpass.getuser()}"
    )


def _print_history(reply: messages.HistoryReply) -> None:
    if not reply.entries:
        click.echo("no patches applied yet")
    from dynamicrl.core.patch_text import entry_line

    for entry in reply.entries:
        click.echo(entry_line(entry))


@click.command()
@request_command(_print_history)
def history() -> messages.HistoryRequest:
    """The run's patch journal: who changed what, old -> new, and at which logical time.

    Example: dynamicrl history --json
    """
    from dynamicrl.protocol.messages import HistoryRequest

    return HistoryRequest()


def _print_checkpoint(reply: messages.CheckpointReply) -> None:
    if reply.scheduled:
        click.echo("checkpoint scheduled: the run is paused; it is taken at the first iteration boundary after resume")
        return
    assert reply.ltime is not None and reply.bytes is not None and reply.seconds is not None  # set when written
    click.echo(f"checkpoint {reply.path}")
    click.echo(
        f"  at iteration {reply.ltime.iteration}, env step {reply.ltime.env_step}; "
        f"{reply.bytes / 1e6:.2f} MB in {reply.seconds:.3f} s"
    )
    click.echo(f"  policy_sha256: {reply.policy_sha256}")


@click.command()
@request_command(_print_checkpoint)
def checkpoint() -> messages.CheckpointRequest:
    """Save the whole run at the next iteration boundary; kept whatever checkpoint.keep says.

    Waits until the files are written (checkpoint.timeout_s at most) and prints where. While
    the run is paused it returns at once: the checkpoint is scheduled and taken at the first
    iteration boundary after `dynamicrl resume` (or before a `dynamicrl stop`).

    Example: dynamicrl checkpoint
    """
    from dynamicrl.protocol.messages import CheckpointRequest

    return CheckpointRequest()


def _print_stop(reply: messages.StopReply) -> None:
    if reply.checkpoint:
        click.echo(f"stopping after checkpoint {reply.checkpoint}")
    else:
        click.echo(reply.message or "stopping")


@click.command()
@request_command(_print_stop)
@click.option("--no-checkpoint", is_flag=True, help="stop at once, without a last checkpoint")
def stop(no_checkpoint: bool) -> messages.StopRequest:
    """Stop the run cleanly: checkpoint at the next iteration boundary, then stop every service.

    Example: dynamicrl stop --no-checkpoint
    """
    from dynamicrl.protocol.messages import StopRequest

    return StopRequest(checkpoint=not no_checkpoint)


COMMANDS = (status, pause, resume, params, patch, history, checkpoint, stop)
