"""The ``dynamicrl`` command: the group, and where its commands live.

- control_cmd: requests to the live run's controller (status, pause, resume, params, patch,
  history, checkpoint, stop), each a thin function over ControlClient;
- checkpoint_cmd: offline, on a run's checkpoints (inspect, evaluate, resume-run);
- watch, provider, protocol_cmd: `dynamicrl watch`, `provider`/`rule`, `protocol`;
- dynamicrl.services.launch: `dynamicrl service`.

Nothing here imports torch at module level: ``dynamicrl status`` must answer
fast, and only ``dynamicrl service learner|envrunner`` needs torch.
"""

from __future__ import annotations

import click

from dynamicrl.clients.cli import checkpoint_cmd, control_cmd
from dynamicrl.clients.cli.options import _load, config_option, json_option, overrides_argument, timeout_option
from dynamicrl.clients.cli.protocol_cmd import protocol_group
from dynamicrl.clients.cli.provider import provider_group, rule_group
from dynamicrl.clients.cli.watch import watch_command
from dynamicrl.services.launch import service

__all__ = ["_load", "config_option", "json_option", "main", "overrides_argument", "timeout_option"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dynamicrl")
def main() -> None:
    """DynamicRL: interactive reinforcement learning on a ZeroMQ bus.

    Start a run with `honcho start` (or `dynamicrl service NAME` per process),
    then watch and steer it with the commands below.
    """


for _command in (
    *control_cmd.COMMANDS,
    *checkpoint_cmd.COMMANDS,
    service,
    protocol_group,
    watch_command,
    provider_group,
    rule_group,
):
    main.add_command(_command)
