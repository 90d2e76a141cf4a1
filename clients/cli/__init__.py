"""The ``dynamicrl`` command: the group, and where its commands live.

- run_cmd: start a whole run, or continue one (run, resume-run), through clients/launcher.py;
- control_cmd: requests to the live run's controller (status, pause, resume, params, patch,
  history, checkpoint, stop), each a thin function over ControlClient;
- checkpoint_cmd: offline, on a run's checkpoints (inspect, evaluate);
- watch, dashboard_cmd, provider, protocol_cmd: `dynamicrl watch`, `dashboard`, `provider`/`rule`, `protocol`;
- dynamicrl.services.launch: `dynamicrl service`.

Each command is named in ``COMMANDS`` as "module:attr" and imported only when it runs (or
``--help`` lists them): ``dynamicrl status`` loads the status command's module and what it
needs, not torch, not the other commands; only ``dynamicrl service learner|envrunner`` needs torch.
"""

from __future__ import annotations

import atexit
import gc

import click

from dynamicrl.clients.cli.options import _load, config_option, json_option, overrides_argument, timeout_option
from dynamicrl.core.algorithms import load_class
from dynamicrl.core.suggest import did_you_mean

__all__ = ["_load", "config_option", "json_option", "main", "overrides_argument", "timeout_option"]


#: Every command, by the section `dynamicrl --help` lists it in: its name -> "module:attr" of its click command.
SECTIONS = {
    "Run": {
        "run": "dynamicrl.clients.cli.run_cmd:run",
        "resume-run": "dynamicrl.clients.cli.run_cmd:resume_run",
    },
    "Watch and control": {
        "status": "dynamicrl.clients.cli.control_cmd:status",
        "watch": "dynamicrl.clients.cli.watch:watch_command",
        "dashboard": "dynamicrl.clients.cli.dashboard_cmd:dashboard",
        "pause": "dynamicrl.clients.cli.control_cmd:pause",
        "resume": "dynamicrl.clients.cli.control_cmd:resume",
        "params": "dynamicrl.clients.cli.control_cmd:params",
        "patch": "dynamicrl.clients.cli.control_cmd:patch",
        "history": "dynamicrl.clients.cli.control_cmd:history",
        "stop": "dynamicrl.clients.cli.control_cmd:stop",
    },
    "Checkpoints and evaluation": {
        "checkpoint": "dynamicrl.clients.cli.control_cmd:checkpoint",
        "inspect": "dynamicrl.clients.cli.checkpoint_cmd:inspect",
        "evaluate": "dynamicrl.clients.cli.checkpoint_cmd:evaluate",
    },
    "Services and streams": {
        "service": "dynamicrl.services.launch:service",
        "provider": "dynamicrl.clients.cli.provider:provider_group",
        "rule": "dynamicrl.clients.cli.provider:rule_group",
        "protocol": "dynamicrl.clients.cli.protocol_cmd:protocol_group",
    },
}
COMMANDS = {name: target for section in SECTIONS.values() for name, target in section.items()}


class LazyGroup(click.Group):
    """A group whose commands are imported from ``COMMANDS`` when asked for (click's "lazily loading subcommands")."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return load_class(COMMANDS[cmd_name]) if cmd_name in COMMANDS else None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The commands in their sections, each with its one-line summary."""
        width = formatter.width - 6 - max(len(name) for name in COMMANDS)
        for title, section in SECTIONS.items():
            rows = [(name, load_class(target).get_short_help_str(limit=width)) for name, target in section.items()]
            with formatter.section(title):
                formatter.write_dl(rows)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            name, command, rest = super().resolve_command(ctx, args)
        except click.UsageError as exc:  # "No such command 'stauts'." (did you mean status?)
            hint = did_you_mean(args[0], COMMANDS) if args and args[0] not in COMMANDS else ""
            exc.message += f" ({hint})" if hint else ""
            raise
        if name != "service":  # a service's exit still collects (and finalizes) all it made
            # a client command ends when it has printed: spare its exit a garbage-collector pass over every object
            # its imports made (about 30 ms of the 0.2 s `dynamicrl status` takes)
            atexit.register(gc.freeze)
        return name, command, rest


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120})
@click.version_option(package_name="dynamicrl")
def main() -> None:
    """DynamicRL: interactive reinforcement learning on a ZeroMQ bus.

    Start a run with `dynamicrl run` (CartPole; `dynamicrl run configs/env/mujoco_ant.yaml` for Ant),
    then watch and steer it from a second terminal with the commands below.
    """
