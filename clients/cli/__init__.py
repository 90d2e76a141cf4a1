"""The ``dynamicrl`` command. Each command is a thin function over ControlClient.

Nothing here imports torch at module level: ``dynamicrl status`` must answer
fast, and only ``dynamicrl service learner|envrunner`` needs torch.
"""

from __future__ import annotations

import os

import click

from dynamicrl.core.settings import DEFAULT_CONFIG, Config, ConfigError, load_from_environment


def _load(config_path: str, overrides: tuple[str, ...]) -> Config:
    """The run's config as its processes load it; a config error is one message and exit 1."""
    try:
        return load_from_environment(config_path, overrides)
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


def _call(config: Config, request, timeout_s: float | None = None, extra_s: float = 0.0):
    """One request to the controller; every failure becomes one clear message and exit 1."""
    from dynamicrl.clients.control import ControlClient, ControlError, RequestTimeout
    from dynamicrl.protocol.messages import StatusRequest

    endpoint = config.addresses.controller
    base_s = timeout_s or config.timing.request_timeout_s
    try:
        if extra_s:  # the reply may take extra_s (pause, patch): learn fast whether anyone answers at all
            with ControlClient(endpoint, timeout_s=base_s) as probe:
                probe.call(StatusRequest())
        with ControlClient(endpoint, timeout_s=base_s + extra_s) as client:
            return client.call(request)
    except RequestTimeout:
        raise click.ClickException(f"no controller answered at {endpoint} (is the run started?)") from None
    except ControlError as exc:
        raise click.ClickException(str(exc)) from None


def _emit_json(reply) -> None:
    click.echo(reply.model_dump_json(indent=2))


timeout_option = click.option("--timeout", type=float, default=None,
                              help="seconds to wait per attempt (default: timing.request_timeout_s)")
json_option = click.option("--json", "as_json", is_flag=True, help="print the raw reply as JSON")
overrides_argument = click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")


@main.command()
@config_option
@timeout_option
@json_option
@overrides_argument
def status(config_path: str, timeout: float | None, as_json: bool, overrides: tuple[str, ...]) -> None:
    """Services, health, iteration, env steps, SPS, mean return and bus messages lost (services, monitors)."""
    from dynamicrl.protocol.messages import StatusRequest

    reply = _call(_load(config_path, overrides), StatusRequest(), timeout)
    if as_json:
        _emit_json(reply)
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
    by_services, by_monitors = sum(s.missed for s in reply.services), sum(m.missed for m in reply.monitors)
    click.echo(f"missed    {by_services + by_monitors} bus message(s) in all: {by_services} by services, "
               f"{by_monitors} by {len(reply.monitors)} monitor(s)")
    click.echo("services:")
    for s in reply.services:
        at = f"  at {_where(s.ltime)}" if s.ltime else ""
        at += f"  missed {s.missed} bus message(s)" if s.missed else ""
        click.echo(f"  {s.service:<14} {s.role.value:<10} rank {s.rank:<3} pid {s.pid:<8} {s.health.value:<8} "
                   f"seen {s.last_seen_s:.1f}s ago{at}")
    if reply.monitors:
        click.echo("monitors:")
    for m in reply.monitors:
        topics = ",".join(t or "(all)" for t in m.topics) or "-"
        senders = ", ".join(f"{k} {n}" for k, n in sorted(m.missed_by_sender.items(), key=lambda kv: -kv[1]) if n)
        extra = f" ({senders})" if senders else ""
        extra += f"  {m.rejected} undecodable" if m.rejected else ""
        click.echo(f"  {m.name:<20} received {m.received:<9} missed {m.missed:<7} report {m.last_report_s:.1f}s ago"
                   f"{' (closed)' if m.closed else ''}  topics {topics}{extra}")


def _where(ltime, minibatch=None) -> str:
    text = f"iteration {ltime.iteration}, env step {ltime.env_step}"
    return text + (f", minibatch {minibatch}" if minibatch is not None else "")


@main.command()
@config_option
@json_option
@overrides_argument
def pause(config_path: str, as_json: bool, overrides: tuple[str, ...]) -> None:
    """Stop every service at its next safe point; returns once all stand at the barrier.

    Prints where each service stopped. Pausing a paused run is harmless. If a
    service does not reach its barrier within timing.pause_timeout_s, the pause is
    called off (the run keeps going) and the command fails naming that service.
    """
    from dynamicrl.protocol.messages import PauseRequest

    config = _load(config_path, overrides)
    reply = _call(config, PauseRequest(), extra_s=config.timing.pause_timeout_s)
    if as_json:
        _emit_json(reply)
        return
    if reply.already:
        click.echo("already paused; services stand at:")
    else:
        click.echo(f"paused in {reply.latency_s * 1000:.1f} ms; services stand at:")
    for p in reply.positions:
        click.echo(f"  {p.service:<14} {_where(p.ltime, p.minibatch)}")


@main.command()
@config_option
@json_option
@overrides_argument
def resume(config_path: str, as_json: bool, overrides: tuple[str, ...]) -> None:
    """Continue a paused run exactly where each service stopped (harmless if running)."""
    from dynamicrl.protocol.messages import ResumeRequest

    reply = _call(_load(config_path, overrides), ResumeRequest())
    if as_json:
        _emit_json(reply)
    elif reply.already:
        click.echo("not paused; nothing to resume")
    else:
        click.echo(f"resumed after {reply.paused_s:.1f} s paused")


@main.command()
@config_option
@json_option
@overrides_argument
def params(config_path: str, as_json: bool, overrides: tuple[str, ...]) -> None:
    """Every live-tunable hyperparameter: type, bounds, apply point, current value."""
    from dynamicrl.protocol.messages import ParamsRequest
    from dynamicrl.core.tunables import allowed

    reply = _call(_load(config_path, overrides), ParamsRequest())
    if as_json:
        _emit_json(reply)
        return
    click.echo(f"{'name':<22} {'value':<12} {'allowed':<26} {'applies':<15} description")
    for row in reply.params:
        click.echo(f"{row.name:<22} {row.value!s:<12} {allowed(row):<26} {row.apply:<15} {row.description}")


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("changes", nargs=-1, required=True, metavar="NAME=VALUE...")
@config_option
@click.option("--at-iteration", type=click.IntRange(min=0), default=None,
              help="apply once this many iterations are complete (default: at each value's apply point)")
@click.option("--no-wait", is_flag=True, help="return once accepted instead of when applied")
@click.option("--author", default=None, help="recorded in the journal (default: cli@<user>)")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="config override for finding the controller (e.g. --set addresses.controller=...)")
@json_option
def patch(changes: tuple[str, ...], config_path: str, at_iteration: int | None, no_wait: bool,
          author: str | None, overrides: tuple[str, ...], as_json: bool) -> None:
    """Change hyperparameters of the live run, all or nothing: `dynamicrl patch ppo.lr=1e-4 ppo.ent_coef=0.01`.

    The whole patch is validated first (unknown name, wrong type, out of bounds:
    nothing changes and the error names the key, the value and what is allowed).
    Each value then takes effect at its apply point (see `dynamicrl params`); the
    reply gives the logical time at which it did. Sent while paused, it takes
    effect on resume. Every application is appended to the run's patches.jsonl.
    """
    import getpass

    from dynamicrl.protocol.messages import PatchRequest
    from dynamicrl.core.tunables import parse_value

    parsed = {}
    for item in changes:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r}: expected NAME=VALUE (e.g. ppo.lr=1e-4)", param_hint="CHANGES")
        value = parse_value(text.strip())
        # a list or mapping is no tunable's value: send the text so the controller names the key and says why
        parsed[name.strip()] = value if value is None or isinstance(value, (bool, int, float, str)) else text.strip()
    config = _load(config_path, overrides)
    request = PatchRequest(changes=parsed, at_iteration=at_iteration, wait=not no_wait,
                           author=author or f"cli@{getpass.getuser()}")
    reply = _call(config, request, extra_s=0 if no_wait else config.timing.patch_wait_s)
    if as_json:
        _emit_json(reply)
        return
    click.echo(f"patch {reply.patch_id}: {reply.status.value}")
    for entry in reply.applied:
        for name, change in entry.changes.items():
            click.echo(f"  {name}: {change.old!r} -> {change.new!r}  by {entry.service} at "
                       f"{_where(entry.ltime, entry.minibatch)}")


@main.command()
@config_option
@json_option
@overrides_argument
def history(config_path: str, as_json: bool, overrides: tuple[str, ...]) -> None:
    """The run's patch journal: who changed what, old -> new, and at which logical time."""
    from dynamicrl.protocol.messages import HistoryRequest

    reply = _call(_load(config_path, overrides), HistoryRequest())
    if as_json:
        _emit_json(reply)
        return
    if not reply.entries:
        click.echo("no patches applied yet")
    for entry in reply.entries:
        changes = ", ".join(f"{k} {c.old!r} -> {c.new!r}" for k, c in entry.changes.items())
        click.echo(f"{entry.patch_id}  {entry.author:<16} {entry.service:<14} {_where(entry.ltime, entry.minibatch)}: "
                   f"{changes}")


@main.command()
@config_option
@json_option
@overrides_argument
def checkpoint(config_path: str, as_json: bool, overrides: tuple[str, ...]) -> None:
    """Save the whole run at the next iteration boundary (atomic; the last checkpoint.keep are kept)."""
    from dynamicrl.protocol.messages import CheckpointRequest

    config = _load(config_path, overrides)
    reply = _call(config, CheckpointRequest(), extra_s=config.checkpoint.timeout_s)
    if as_json:
        _emit_json(reply)
        return
    click.echo(f"checkpoint {reply.path}")
    click.echo(f"  at iteration {reply.ltime.iteration}, env step {reply.ltime.env_step}; "
               f"{reply.bytes / 1e6:.2f} MB in {reply.seconds:.3f} s")
    click.echo(f"  policy_sha256: {reply.policy_sha256}")


@main.command()
@config_option
@click.option("--no-checkpoint", is_flag=True, help="stop at once, without a last checkpoint")
@json_option
@overrides_argument
def stop(config_path: str, no_checkpoint: bool, as_json: bool, overrides: tuple[str, ...]) -> None:
    """Stop the run cleanly: checkpoint at the next iteration boundary, then stop every service."""
    from dynamicrl.protocol.messages import StopRequest

    config = _load(config_path, overrides)
    reply = _call(config, StopRequest(checkpoint=not no_checkpoint), extra_s=config.checkpoint.timeout_s)
    if as_json:
        _emit_json(reply)
    elif reply.checkpoint:
        click.echo(f"stopping after checkpoint {reply.checkpoint}")
    else:
        click.echo(reply.message or "stopping")


@main.command()
@click.argument("path", type=click.Path(exists=True, file_okay=False))
def inspect(path: str) -> None:
    """Verify a checkpoint (or a run's latest good one): manifest, every checksum, policy_sha256."""
    import json
    from pathlib import Path

    from dynamicrl.core import checkpoints

    try:
        target = checkpoints.resolve(Path(path), report=lambda m: click.echo(m, err=True))
        manifest, _controller, parts = checkpoints.read(target)
        learner = checkpoints.policy_part(target, parts)
    except checkpoints.CheckpointError as exc:
        raise click.ClickException(str(exc)) from None
    actual = checkpoints.policy_sha256(learner.arrays)
    if actual != manifest["policy_sha256"]:
        raise click.ClickException(f"{target}: policy hash {actual} differs from the manifest's")
    click.echo(f"checkpoint {target}")
    click.echo(json.dumps({k: v for k, v in manifest.items() if k != "files"}, indent=1))
    for name in sorted(manifest["files"]):
        click.echo(f"  ok  {name}  sha256 {manifest['files'][name][:16]}...")
    click.echo(f"policy_sha256: {actual}")


@main.command()
@click.argument("path", type=click.Path(exists=True, file_okay=False))
@click.option("--episodes", "-n", type=click.IntRange(min=1), default=10, show_default=True,
              help="whole episodes to play")
@click.option("--stochastic", is_flag=True, help="sample actions as in training (default: the most likely action)")
@click.option("--seed", type=int, default=0, show_default=True, help="episode i is reset with seed + i")
@click.option("--all", "every_checkpoint", is_flag=True,
              help="evaluate every good checkpoint the run kept, oldest first, and name the best")
@click.option("--json", "as_json", is_flag=True, help="print the result (every episode, mean, std) as JSON")
def evaluate(path: str, episodes: int, stochastic: bool, seed: int, every_checkpoint: bool, as_json: bool) -> None:
    """Play a checkpoint's policy (or a run's latest good one's) offline and report its returns.

    The policy acts with its most likely action and the learner's observation statistics, frozen,
    on the run's own env config: the final-policy figure SB3 rl-zoo's benchmark reports, where a
    run's own return is of training episodes with sampled actions. Needs no running services.
    With --all, every checkpoint the run kept (set checkpoint.every_iterations and checkpoint.keep
    to keep a series): how the policy itself improved, and which checkpoint to deploy.
    """
    import json
    import statistics
    from pathlib import Path

    from dynamicrl.clients.evaluate import evaluate as run_evaluation, evaluate_run, summary

    run = evaluate_run if every_checkpoint else run_evaluation
    try:
        result = run(Path(path), episodes=episodes, deterministic=not stochastic, seed=seed,
                     report=lambda m: click.echo(m, err=True))
    except (ValueError, NotImplementedError) as exc:  # CheckpointError, a bad env id: one message naming it
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in result] if every_checkpoint else result.to_dict(), indent=2))
    elif every_checkpoint:
        kind = "stochastic" if stochastic else "deterministic"
        click.echo(f"{len(result)} checkpoint(s), {episodes} {kind} episode(s) each from seed {seed}:")
        for r in result:
            click.echo(f"  iteration {r.iteration:>7} ({r.env_steps:>10} env steps): return {r.mean:10.1f} "
                       f"+- {r.std:.1f}, length {statistics.fmean(r.lengths):.0f}")
        best = max(result, key=lambda r: r.mean)
        click.echo(f"best: {best.checkpoint} (iteration {best.iteration}, return {best.mean:.1f})")
    else:
        click.echo(f"checkpoint {result.checkpoint}")
        for i, (ret, length) in enumerate(zip(result.returns, result.lengths)):
            click.echo(f"  episode {i} (seed {seed + i}): return {ret:.1f}, length {length}")
        click.echo(summary(result))


@main.command("resume-run")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--procfile", "-f", default="Procfile", show_default=True, help="the Procfile to start")
@click.option("--total-env-steps", type=click.IntRange(min=1), default=None,
              help="a new budget, past the checkpoint: train the run longer than it planned (a finished run too)")
def resume_run(run_dir: str, procfile: str, total_env_steps: int | None) -> None:
    """Continue a run from its latest good checkpoint: `honcho start` with $DYNAMICRL_RESUME set.

    Starts as many env-runners as the checkpoint holds; the run directory,
    metrics.csv, TensorBoard and patches.jsonl continue where the checkpoint stood.
    With --total-env-steps the run trains on to that budget, and an annealed
    learning rate follows the line to the new end (ppo.anneal_env_steps aside).
    """
    import shutil
    from pathlib import Path

    from dynamicrl.core import checkpoints

    try:
        path = checkpoints.latest_good(Path(run_dir) / "checkpoints", report=lambda m: click.echo(m, err=True))
        manifest = checkpoints.verify(path)
        if total_env_steps is not None:
            checkpoints.check_budget(total_env_steps, manifest, path)
    except checkpoints.CheckpointError as exc:
        raise click.ClickException(str(exc)) from None
    envrunners = sum(1 for s in manifest["services"] if s.startswith("envrunner"))
    honcho = shutil.which("honcho")
    if honcho is None:
        raise click.ClickException("honcho is not installed (pip install honcho)")
    budget = "" if total_env_steps is None else f", on to {total_env_steps} env steps"
    click.echo(f"resuming {run_dir} from {path.name} (iteration {manifest['iteration']}, "
               f"{envrunners} env-runner(s){budget})", err=True)
    os.environ["DYNAMICRL_RESUME"] = str(Path(run_dir).resolve())
    if total_env_steps is not None:  # after the user's overrides: this one wins
        os.environ["DYNAMICRL_OVERRIDES"] = f"{os.environ.get('DYNAMICRL_OVERRIDES', '')} " \
                                            f"resume_total_env_steps={total_env_steps}"
    os.execv(honcho, [honcho, "-f", procfile, "start", "-c", f"envrunner={envrunners}"])


# commands that live in their own modules (imported last: they use the options defined above)
from dynamicrl.clients.cli.protocol_cmd import protocol_group  # noqa: E402
from dynamicrl.clients.cli.provider import provider_group, rule_group  # noqa: E402
from dynamicrl.clients.cli.watch import watch_command  # noqa: E402

from dynamicrl.services.launch import service  # noqa: E402

main.add_command(service)
main.add_command(protocol_group)
main.add_command(watch_command)
main.add_command(provider_group)
main.add_command(rule_group)
