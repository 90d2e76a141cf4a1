"""`dynamicrl provider ...`: publish external streams (BCI, LSL) on the run's bus."""

from __future__ import annotations

import logging

import click

from dynamicrl.clients.cli.options import SECONDS, Number, _load, config_option, overrides_argument


def _logging(name: str) -> None:
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {name} %(levelname)s %(message)s")


@click.group("provider")
def provider_group() -> None:
    """Publish an external stream on the bus (topic external.<stream>) for rules and monitors.

    Example: dynamicrl provider mock-bci --rate 250
    """


@provider_group.command("mock-bci")
@config_option
@click.option("--seed", type=int, default=0, show_default=True, help="same seed, same samples")
@click.option("--rate", type=Number(min=0, min_open=True), default=250.0, show_default=True, help="Hz")
@click.option("--channels", type=click.IntRange(min=1, max=64), default=8, show_default=True)
@click.option("--chunk", type=click.IntRange(min=1), default=25, show_default=True, help="samples per message")
@click.option("--duration", type=SECONDS, default=None, help="seconds of signal, then exit (default: until stopped)")
@click.option("--stream", default="mock-bci", show_default=True, help="stream name: topic external.<stream>")
@overrides_argument
def mock_bci(
    config_path: str,
    seed: int,
    rate: float,
    channels: int,
    chunk: int,
    duration: float | None,
    stream: str,
    overrides: tuple[str, ...],
) -> None:
    """A deterministic synthetic EEG-like stream with an `engagement` index (beta / (alpha + theta)).

    Example: dynamicrl provider mock-bci --rate 250
    """
    from dynamicrl.clients.providers.mock_bci import run

    _logging("mock-bci")
    config = _load(config_path, overrides)
    try:
        sent = run(
            config.addresses.bus_in,
            stream=stream,
            seed=seed,
            rate=rate,
            channels=channels,
            chunk=chunk,
            duration=duration,
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"mock-bci: sent {sent} chunk(s)", err=True)


@provider_group.command("lsl")
@config_option
@click.option("--name", "name", default=None, help="LSL stream name to resolve")
@click.option("--type", "type_", default=None, help="LSL stream type to resolve (e.g. EEG)")
@click.option("--stream", default=None, help="bus stream name (default: the LSL stream's name)")
@click.option("--resolve-timeout", type=SECONDS, default=10.0, show_default=True, help="seconds to find the stream")
@click.option("--duration", type=SECONDS, default=None, help="seconds, then exit (default: until stopped)")
@overrides_argument
def lsl(
    config_path: str,
    name: str | None,
    type_: str | None,
    stream: str | None,
    resolve_timeout: float,
    duration: float | None,
    overrides: tuple[str, ...],
) -> None:
    """Bridge a Lab Streaming Layer stream (by --name or --type) to the bus. Needs `pip install 'dynamicrl[lsl]'`.

    Example: dynamicrl provider lsl --type EEG
    """
    if (name is None) == (type_ is None):
        raise click.UsageError("give exactly one of --name and --type")
    from dynamicrl.clients.providers.lsl import LSLUnavailable, run

    _logging("lsl")
    config = _load(config_path, overrides)
    try:
        moved = run(
            config.addresses.bus_in,
            name=name,
            type_=type_,
            stream=stream,
            resolve_timeout=resolve_timeout,
            duration=duration,
        )
    except (LSLUnavailable, LookupError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"lsl: moved {moved} sample(s)", err=True)


@click.group("rule")
def rule_group() -> None:
    """Steer the run from the bus: patches sent through the controller (validated and journaled).

    Example: dynamicrl rule engagement --param ppo.ent_coef --low 0.3
    """


@rule_group.command("engagement")
@config_option
@click.option("--param", default="ppo.ent_coef", show_default=True, help="the tunable to steer")
@click.option("--low", type=Number(), default=0.3, show_default=True, help="below this engagement: raise --param")
@click.option("--high", type=Number(), default=None, help="above this engagement: lower --param (default: never)")
@click.option("--min", "minimum", type=Number(), default=0.0, show_default=True)
@click.option("--max", "maximum", type=Number(), default=0.05, show_default=True)
@click.option("--step", type=Number(min=0, min_open=True), default=0.005, show_default=True)
@click.option(
    "--every-iterations",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="at most one patch per this many iterations",
)
@click.option("--stream", default="mock-bci", show_default=True, help="watch external.<stream>")
@click.option("--index", default="engagement", show_default=True, help="the derived scalar to read")
@click.option("--author", default="rule:engagement", show_default=True, help="recorded in patches.jsonl")
@click.option(
    "--smooth",
    "smooth_s",
    type=Number(min=0),
    default=0.0,
    show_default=True,
    help="act on a moving average of the index with this time constant (s, stream clock; 0: latest value)",
)
@click.option("--duration", type=SECONDS, default=None, help="seconds, then exit (default: until stopped)")
@overrides_argument
def engagement(
    config_path: str,
    param: str,
    low: float,
    high: float | None,
    minimum: float,
    maximum: float,
    step: float,
    every_iterations: int,
    stream: str,
    index: str,
    author: str,
    smooth_s: float,
    duration: float | None,
    overrides: tuple[str, ...],
) -> None:
    """Raise --param by --step (within [--min, --max]) while the stream's engagement is below --low.

    Example: dynamicrl rule engagement --param ppo.ent_coef --low 0.3 --max 0.05
    """
    from dynamicrl.clients.rules import EngagementRule, run_engagement_rule

    _logging("rule")
    config = _load(config_path, overrides)
    try:
        rule = EngagementRule(
            config.addresses.controller,
            config.addresses.bus_out,
            param=param,
            low=low,
            high=high,
            minimum=minimum,
            maximum=maximum,
            step=step,
            every_iterations=every_iterations,
            stream=stream,
            index=index,
            author=author,
            smooth_s=smooth_s,
            timeout_s=max(config.timing.request_timeout_s, 2.0),
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    sent = run_engagement_rule(rule, duration)
    click.echo(f"rule: {sent} patch(es) sent, {rule.rejected} refused", err=True)
