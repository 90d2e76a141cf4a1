"""`dynamicrl run` and `dynamicrl resume-run`: start a whole run, or continue one, from any directory."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from dynamicrl.clients.cli.options import _load, overrides_argument
from dynamicrl.core.settings import DEFAULT_CONFIG

if TYPE_CHECKING:
    from dynamicrl.core.settings import Config


def _start(
    config_path: str,
    overrides: tuple[str, ...],
    envrunners: int | None,
    extra_env: dict[str, str],
    dashboard: bool = False,
    check: Callable[[Config], None] | None = None,
) -> None:
    """Load the config once (one message on error), ``check`` it, then launch; exit with the run's code."""
    from dynamicrl.clients.launcher import LaunchError, envrunner_count, launch

    config = _load(config_path, overrides)
    if check is not None:
        check(config)
    count = envrunner_count(config, envrunners)
    if config.run.envrunners == "auto":  # the launcher knows how many start: no join window to wait out
        overrides = (*overrides, f"run.envrunners={count}")
    try:
        code = launch(config, config_path, overrides, count, extra_env, dashboard=dashboard)
    except LaunchError as exc:
        raise click.ClickException(str(exc)) from None
    raise SystemExit(code)


def _port_overrides(port: int | None, envrunners: int | None) -> list[str]:
    return [
        *([f"addresses.port={port}"] if port is not None else []),
        *([f"run.envrunners={envrunners}"] if envrunners is not None else []),
    ]


envrunners_option = click.option(
    "--envrunners",
    type=click.IntRange(min=1),
    default=None,
    help="env-runners to start (default: run.envrunners; 'auto' starts one)",
)
dashboard_option = click.option(
    "--dashboard", is_flag=True, help="also start `dynamicrl dashboard` (its URL and token are printed once)"
)
port_option = click.option(
    "--port",
    type=click.IntRange(1, 65532),
    default=None,
    help="the run's first port (addresses.port): controller N, bus N+1 and N+2, data N+3",
)


@click.command("run")
@click.argument("config_path", metavar="[CONFIG]", required=False)
@overrides_argument
@envrunners_option
@port_option
@dashboard_option
def run(
    config_path: str | None, overrides: tuple[str, ...], envrunners: int | None, port: int | None, dashboard: bool
) -> None:
    """Start a whole run: controller, learner, env-runners and logger, under honcho, with a live console.

    CONFIG is a YAML file, or one of the packaged configs (e.g. configs/env/mujoco_ant.yaml; default
    $DYNAMICRL_CONFIG, else configs/defaults.yaml: CartPole). Works from any directory: the run
    directory is ./runs/<run id>. Ctrl-C stops the run after a last checkpoint, like `honcho start`.

    Example: dynamicrl run configs/env/mujoco_hopper.yaml run.seed=3 --port 6000
    """
    if config_path is not None and "=" in config_path and not Path(config_path).is_file():
        overrides = (config_path, *overrides)  # `dynamicrl run ppo.lr=1e-3`: no config named, an override
        config_path = None
    path = config_path or os.environ.get("DYNAMICRL_CONFIG") or DEFAULT_CONFIG
    _start(path, (*overrides, *_port_overrides(port, envrunners)), envrunners, {}, dashboard)


@click.command("resume-run")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@overrides_argument
@click.option(
    "--total-env-steps",
    type=click.IntRange(min=1),
    default=None,
    help="a new budget, past the checkpoint: train the run longer than it planned (a finished run too)",
)
@port_option
@dashboard_option
def resume_run(
    run_dir: str, overrides: tuple[str, ...], total_env_steps: int | None, port: int | None, dashboard: bool
) -> None:
    """Continue a run from its latest good checkpoint, from any directory, as `dynamicrl run` starts one.

    Starts as many env-runners as the checkpoint holds; the run directory, metrics.csv,
    TensorBoard and patches.jsonl continue where the checkpoint stood, bitwise. With
    --total-env-steps the run trains on to that budget, and an annealed learning rate follows the
    line to the new end (ppo.anneal_env_steps aside). A finished run needs --total-env-steps.
    A checkpoint never makes this import code: a run trained with a plugin needs it passed again
    (plugins=[MODULE]); the error says which.

    Example: dynamicrl resume-run runs/cartpole-ppo-20261202-040244-dc3d --total-env-steps 300000
    """
    from dynamicrl.core import checkpoints
    from dynamicrl.core.tunables import budget_problem

    try:
        path = checkpoints.latest_good(Path(run_dir) / "checkpoints", report=lambda m: click.echo(m, err=True))
        manifest, controller, parts = checkpoints.read(path)
        if total_env_steps is not None:
            checkpoints.check_budget(total_env_steps, manifest, path)
    except checkpoints.CheckpointError as exc:
        raise click.ClickException(str(exc)) from None
    budget = total_env_steps or _budget(controller, parts)
    if budget_problem(budget, manifest["iteration"], manifest["env_step"]):
        raise click.ClickException(
            f"{run_dir} is finished: its checkpoint {path.name} is at {manifest['env_step']} of "
            f"{budget} env steps; to train it longer: dynamicrl resume-run {run_dir} --total-env-steps N "
            f"(N > {manifest['env_step']})"
        )
    envrunners = sum(1 for s in manifest["services"] if s.startswith("envrunner"))
    more = "" if total_env_steps is None else f", on to {total_env_steps} env steps"
    click.echo(
        f"resuming {run_dir} from {path.name} (iteration {manifest['iteration']}, {envrunners} env-runner(s){more})",
        err=True,
    )
    # the run's config comes from the checkpoint; the overrides place this start (addresses, timing)
    overrides = (*overrides, *_port_overrides(port, None))
    if total_env_steps is not None:
        overrides = (*overrides, f"resume_total_env_steps={total_env_steps}")
    extra = {"DYNAMICRL_RESUME": str(Path(run_dir).resolve())}
    os.environ.update(extra)  # so that loading the config here sees the resume, as each service will

    def plugins_passed(local: Config) -> None:
        """Before any process starts: a checkpoint's plugins are data; each must be passed (the controller
        checks again); the learner's state must fit the model the checkpoint's config builds (the
        learner checks again, and stops the run if it does not)."""
        from dynamicrl.core.settings import missing_plugins, plugins_text

        missing = missing_plugins(controller.get("config"), local.plugins)
        if missing:
            wanted = plugins_text(missing)
            raise click.ClickException(
                f"{path}: this checkpoint was trained with plugin(s) {wanted[1:-1]}, which are never imported from "
                f"a checkpoint: pass plugins={wanted} (dynamicrl resume-run {run_dir} plugins={wanted})"
            )
        try:
            checkpoints.check_model(path, controller, parts, tuple(local.plugins))
        except checkpoints.CheckpointError as exc:
            raise click.ClickException(str(exc)) from None

    _start(
        os.environ.get("DYNAMICRL_CONFIG") or DEFAULT_CONFIG, overrides, envrunners, extra, dashboard, plugins_passed
    )


def _budget(controller: dict[str, Any], parts: dict[str, Any]) -> int:
    """The budget in force at the checkpoint: the learner's (a live patch may have moved it), else the config's."""
    learner = parts.get(controller.get("learner", ""))
    saved = learner.meta.get("tunables", {}) if learner is not None else {}
    return int(saved.get("run.total_env_steps", controller["config"]["run"]["total_env_steps"]))


COMMANDS = (run, resume_run)
