"""No code is loaded from data: real processes never import a plugin a reply or a checkpoint names.

Each plugin here is a module that writes a marker file when it is imported, on the processes'
PYTHONPATH, so importing it is the attack (the module could do anything):

* a stand-in controller (a ROUTER thread with the controller's key) answers a real logger's
  registration with a config naming the plugin: the logger does not import it, exits 2 with one line
  saying which plugin to pass; started with the plugin in its own command line, it imports it itself
  and is accepted (it goes on to heartbeat);
* ``dynamicrl evaluate`` on a checkpoint whose controller.json names the plugin does not import it
  and says to pass ``--plugin``; passing it evaluates;
* ``dynamicrl resume-run`` on such a run does not import it and says to pass ``plugins=[...]``,
  before starting any process; the controller's ``load_resume`` refuses it the same way, and with
  the plugin in the controller's own config resumes with it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from helpers import base_overrides, endpoint, free_ports, log_text, run_cli, start_service, stop, wait_until
from helpers_members import StandInController

from dynamicrl.core import checkpoints
from dynamicrl.core.settings import DEFAULT_CONFIG, ConfigError, load_config
from dynamicrl.protocol.messages import Heartbeat, RegisterRequest

PLUGIN = "dynamicrl_marker_plugin"
AS_HONCHO = {"HONCHO_PROCESS_NAME": "logger.1"}  # its name, as honcho starts it


@pytest.fixture
def plugin(tmp_path):
    """(PYTHONPATH holding the marker plugin before this worktree's, the marker file it writes on import)."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    marker = tmp_path / "plugin-was-imported"
    (folder / f"{PLUGIN}.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('imported')\n")
    return os.pathsep.join([str(folder), *filter(None, [os.environ.get("PYTHONPATH")])]), marker


@pytest.fixture
def stand_in(tmp_path):
    ports = free_ports(4)
    overrides = base_overrides(tmp_path, ports)
    config = load_config(DEFAULT_CONFIG, overrides).to_dict() | {"plugins": [PLUGIN]}
    controller = StandInController(endpoint(ports[0]), config, str(tmp_path / "run"))
    controller.start()
    assert controller.bound.wait(10)
    yield controller, overrides
    controller.closing = True
    controller.join(timeout=10)


def test_a_logger_does_not_import_a_plugin_the_reply_names(tmp_path, plugin, stand_in):
    pythonpath, marker = plugin
    controller, overrides = stand_in
    logger = start_service("logger", overrides, tmp_path, env={"PYTHONPATH": pythonpath, **AS_HONCHO})
    try:
        assert logger.wait(timeout=60) == 2, log_text(logger)
    finally:
        stop(logger)
    lines = log_text(logger).strip().splitlines()
    assert lines == [
        f"error: logger.1: the run's config from the controller at {controller.address} needs plugin(s) {PLUGIN}, "
        f"which this process did not import (plugins are imported only from its own config): "
        f"pass plugins=[{PLUGIN}] in its config file or on its command line"
    ], lines
    assert not marker.exists()
    assert ("logger.1", RegisterRequest.TYPE) in controller.received


def test_a_logger_given_the_plugin_on_its_command_line_imports_it_and_joins(tmp_path, plugin, stand_in):
    pythonpath, marker = plugin
    controller, overrides = stand_in
    logger = start_service(
        "logger", [*overrides, f"plugins=[{PLUGIN}]"], tmp_path, env={"PYTHONPATH": pythonpath, **AS_HONCHO}
    )
    try:
        wait_until(marker.exists, timeout=60, message=log_text(logger))  # its own config imported it
        wait_until(  # registered, then heartbeats while it waits for the bus
            lambda: ("logger.1", Heartbeat.TYPE) in controller.received,
            timeout=30,
            message=f"{controller.received} {log_text(logger)}",
        )
        assert logger.poll() is None, log_text(logger)
    finally:
        stop(logger)
    assert "plugin" not in log_text(logger), log_text(logger)


# -- checkpoints --------------------------------------------------------------------------------------
def write_checkpoint(run_dir: Path, plugins: list[str]) -> Path:
    """A real PPO CartPole checkpoint (an untrained policy) under ``run_dir``, its config naming ``plugins``."""
    import gymnasium as gym

    from dynamicrl.core.algorithms.ppo.algorithm import PPOAlgorithm

    config = load_config(DEFAULT_CONFIG, [f"run.dir={run_dir}"])
    env = gym.make(config.env.id)
    algorithm = PPOAlgorithm(config.algo, env.observation_space, env.action_space, seed=0, num_iterations=10)
    env.close()
    arrays, meta = algorithm.state()
    learner = checkpoints.Part("learner", arrays, {**meta, "iteration": 1, "env_steps": 256})
    runner = checkpoints.Part("envrunner.1", {"obs": np.zeros((4, 4))}, {"iteration": 1, "env_steps": 256})
    controller = {
        "run_id": "plugin-run",
        "config": config.to_dict() | {"plugins": plugins},
        "learner": "learner",
        "journal_entries": 0,
    }
    return checkpoints.write(run_dir / "checkpoints", 1, 256, [learner, runner], controller, keep=3)


def test_evaluate_does_not_import_a_plugin_the_checkpoint_names(tmp_path, plugin):
    pythonpath, marker = plugin
    checkpoint = write_checkpoint(tmp_path / "run", [PLUGIN])
    env = {"PYTHONPATH": pythonpath}

    out = run_cli("evaluate", str(checkpoint), "-n", "1", cwd=tmp_path, env=env, timeout=120)
    assert out.returncode == 1 and out.stdout == "", out
    assert out.stderr.strip() == (
        f"Error: {checkpoint}: this checkpoint was trained with plugin(s) {PLUGIN}, which are never imported "
        f"from a checkpoint: pass --plugin {PLUGIN}"
    )
    assert not marker.exists()

    out = run_cli("evaluate", str(checkpoint), "-n", "1", "--plugin", PLUGIN, cwd=tmp_path, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "episode 0 (seed 0): return" in out.stdout, out.stdout
    assert marker.read_text() == "imported"  # the user's --plugin imported it


def test_resume_does_not_import_a_plugin_the_checkpoint_names(tmp_path, plugin):
    from dynamicrl.services.controller.checkpointing import load_resume

    pythonpath, marker = plugin
    run_dir = tmp_path / "run"
    checkpoint = write_checkpoint(run_dir, [PLUGIN])
    wanted = f"pass plugins=[{PLUGIN}] (dynamicrl resume-run {run_dir} plugins=[{PLUGIN}])"

    out = run_cli("resume-run", str(run_dir), cwd=tmp_path, env={"PYTHONPATH": pythonpath}, timeout=60)
    assert out.returncode == 1, out
    assert out.stderr.strip().splitlines()[-1] == (
        f"Error: {checkpoint}: this checkpoint was trained with plugin(s) {PLUGIN}, which are never imported "
        f"from a checkpoint: {wanted}"
    ), out.stderr
    assert not marker.exists() and not (run_dir / "controller.log").exists()

    local = load_config(DEFAULT_CONFIG, [f"resume={run_dir}"])  # the controller's own config, without the plugin
    with pytest.raises(ConfigError) as refused:
        load_resume(run_dir, local)
    assert str(refused.value).endswith(wanted), refused.value
    assert not marker.exists()

    local = local.model_copy(update={"plugins": [PLUGIN]})  # as if its command line had imported it
    resumed = load_resume(run_dir, local)
    assert resumed.config.plugins == [PLUGIN] and resumed.run_id == "plugin-run"
    assert not marker.exists()  # load_resume imported nothing itself
