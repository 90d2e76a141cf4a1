"""Checkpoint files only where they belong, and a checkpoint that fails never stalls the run.

A real controller (``FakeRun``: the test plays learner, env-runner and logger) for the attacks on
the wire; ``checkpoints.write`` and the ``dynamicrl inspect`` command for the files themselves."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli
from helpers_members import FakeRun, reply, request

from dynamicrl.core import checkpoints
from dynamicrl.protocol.messages import (
    CheckpointCommand,
    CheckpointDone,
    CheckpointReply,
    CheckpointRequest,
    ErrorCode,
    ErrorReply,
    RunState,
)


def checkpoint(run: FakeRun, iteration: int, runner_meta: dict, forge=lambda ckpt_id: None):
    """A client's checkpoint: the learner's part at ``iteration``, ``forge`` (with the id), the env-runner's
    part with ``runner_meta``; returns (reply, the learner's CheckpointDone)."""
    waiting = request(run.ctx, run.address, CheckpointRequest())
    asked = run.learner.expect(CheckpointCommand)
    per_iteration = 32 * 8  # the default config: 32 steps x 8 envs x 1 env-runner (a checkpoint must agree)
    run.learner.send(run.learner.part(asked.ckpt_id, {"iteration": iteration, "env_steps": per_iteration * iteration}))
    command = run.envrunner.expect(CheckpointCommand)
    assert command.at_iteration == iteration
    forge(command.ckpt_id)
    run.envrunner.send(run.envrunner.part(command.ckpt_id, {"iteration": iteration, **runner_meta}))
    return reply(waiting), run.learner.expect(CheckpointDone)


def test_a_precreated_id_and_bytes_in_meta_do_not_stall_the_run(run):
    planted = run.run_dir / "checkpoints" / "iter-00000005"
    planted.mkdir(parents=True)
    (planted / "planted.txt").write_text("not the controller's")
    # the part with bytes in its meta: abandoned, the learner released, the client told, the run goes on
    answer, done = checkpoint(run, 5, {"blob": b"\x00\x01"})
    assert isinstance(answer, ErrorReply) and answer.code is ErrorCode.INTERNAL, answer
    assert "abandoned" in answer.message and "meta" in answer.message and "bytes" in answer.message
    assert not done.ok and "bytes" in done.message
    assert run.status().state is RunState.RUNNING
    # the next one at the same boundary: the pre-created directory is left alone, never reused
    answer, done = checkpoint(run, 5, {})
    assert isinstance(answer, CheckpointReply) and done.ok, answer
    assert Path(answer.path).name == "iter-00000005.1"
    assert sorted(p.name for p in planted.iterdir()) == ["planted.txt"]
    checkpoints.read(Path(answer.path))
    assert run.status().state is RunState.RUNNING


def test_a_part_nobody_asked_for_is_refused(run):
    before = sorted((run.run_dir / "checkpoints").iterdir())
    # no checkpoint in progress: the env-runner's part, and a part from an outsider naming the learner
    run.envrunner.send(run.envrunner.part("auto-7", {"iteration": 7}))
    intruder = run.peer("intruder-part")
    intruder.send(intruder.part("auto-7", {"iteration": 99999999, "env_steps": 0}, service="learner.1"))
    time.sleep(0.3)
    assert sorted((run.run_dir / "checkpoints").iterdir()) == before

    def forge(ckpt_id: str) -> None:  # during a checkpoint: a member that was not asked, and an outsider
        run.logger.send(run.logger.part(ckpt_id, {"iteration": 8}))
        intruder.send(intruder.part(ckpt_id, {"iteration": 8}, service="envrunner.1"))

    answer, done = checkpoint(run, 8, {}, forge)
    assert isinstance(answer, CheckpointReply) and done.ok, answer
    _, _, parts = checkpoints.read(Path(answer.path))
    assert sorted(parts) == ["envrunner.1", "learner.1"]
    assert "refused membership.checkpoint_part" in run.log()
    assert run.status().state is RunState.RUNNING


# -- the files ------------------------------------------------------------------------------------
def write(root: Path) -> Path:
    learner = checkpoints.Part("learner.1", {"policy.w": np.arange(4, dtype=np.float32)}, {"iteration": 1})
    runner = checkpoints.Part("envrunner.1", {"obs": np.zeros(3)}, {"iteration": 1})
    controller = {"run_id": "r", "config": {}, "learner": "learner.1", "journal_entries": 0}
    return checkpoints.write(root, 1, 64, [learner, runner], controller, keep=3, kind=checkpoints.MANUAL)


def rewrite_manifest(path: Path, change) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    change(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("name", ["/etc/hostname", "../x", "/dev/zero", "sub/x.json", ".hidden"])
def test_a_manifest_naming_anything_but_its_own_files_is_refused(tmp_path, name):
    path = write(tmp_path / "checkpoints")
    (tmp_path / "checkpoints" / "x").write_text("outside")
    rewrite_manifest(path, lambda m: m["files"].update({name: "0" * 64}))
    with pytest.raises(checkpoints.CheckpointError) as refused:
        checkpoints.verify(path)
    assert repr(name)[:20] in str(refused.value) and "plain file name" in str(refused.value)


def test_a_manifest_file_that_links_out_of_the_checkpoint_is_refused(tmp_path):
    path = write(tmp_path / "checkpoints")
    (path / "zero.bin").symlink_to("/dev/zero")
    rewrite_manifest(path, lambda m: m["files"].update({"zero.bin": "0" * 64}))
    with pytest.raises(checkpoints.CheckpointError, match=r"zero\.bin"):
        checkpoints.verify(path)


def test_a_checkpoint_is_never_written_over_a_path_that_escapes(tmp_path):
    part = checkpoints.Part("../../escape", {"policy.w": np.zeros(2)}, {})
    with pytest.raises(checkpoints.CheckpointError, match="plain name"):
        checkpoints.write(tmp_path, 1, 0, [part], {"learner": "../../escape"}, keep=3)
    assert not list(tmp_path.parent.rglob("escape*"))


def test_inspect_refuses_a_checkpoint_whose_policy_hash_does_not_match(tmp_path):
    path = write(tmp_path / "checkpoints")
    assert run_cli("inspect", str(path), cwd=tmp_path).returncode == 0
    # a zeroed policy, its file checksum fixed up: only the policy hash can tell
    with open(path / "learner.1.npz", "wb") as f:
        np.savez(f, **{"policy.w": np.zeros(4, dtype=np.float32)})
    digest = checkpoints.hashlib.sha256((path / "learner.1.npz").read_bytes()).hexdigest()
    rewrite_manifest(path, lambda m: m["files"].update({"learner.1.npz": digest}))
    checkpoints.verify(path)  # every checksum matches
    result = run_cli("inspect", str(path), cwd=tmp_path)
    assert result.returncode != 0, result.stdout
    assert "learner.1.npz" in result.stderr and "policy sha256" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
