"""Stopping: `dynamicrl stop`, Ctrl-C (SIGTERM to every process, as honcho sends it) and SIGTERM to
one member all checkpoint at the next boundary, then every service exits 0; a start that cannot go
on stops every service with one clear reason."""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from helpers import Run, log_text, run_cli, wait_exit

from dynamicrl.core import checkpoints

pytestmark = pytest.mark.e2e


@contextmanager
def running(tmp_path, *extra: str) -> Iterator[tuple[list[str], list, int]]:
    """(overrides, [controller, learner, envrunner, logger], iteration reached) of a CartPole run that
    never finishes by itself, once it is past iteration 2; every process is stopped at the end."""
    with Run(tmp_path, ["run.total_env_steps=100000000", *extra]) as run:
        run.start()
        status = run.wait_iteration(2, timeout=120)
        yield run.overrides, run.procs, status.ltime.iteration


def last_checkpoint(tmp_path) -> checkpoints.Path:
    (run_dir,) = (tmp_path / "runs").iterdir()
    return checkpoints.latest_good(run_dir / "checkpoints")


def test_stop_checkpoints_then_stops_everything(tmp_path):
    with running(tmp_path, "checkpoint.at_end=false") as (overrides, procs, iteration):
        out = run_cli("stop", "--json", *overrides, cwd=tmp_path, timeout=90)
        assert out.returncode == 0, out.stderr
        reply = json.loads(out.stdout)
        assert checkpoints.verify(checkpoints.Path(reply["checkpoint"]))["iteration"] > iteration
        for proc in procs:
            assert proc.wait(timeout=30) == 0, log_text(proc)
        assert "stop requested" in log_text(procs[0])


def test_a_replay_naming_services_not_in_the_run_refuses_to_start(tmp_path):
    """patches= replays a journal by service name: one naming an env-runner this run does not have
    must stop the run at start with one clear reason (exit 1), not replay half of it."""
    journal = tmp_path / "other-run.jsonl"
    entry = {
        "patch_id": "aaaaaaaaaaaa",
        "author": "test",
        "service": "envrunner.7",
        "changes": {"envrunner.reward_scale": {"old": 1.0, "new": 0.5}},
        "ltime": {"iteration": 2, "env_step": 512},
        "minibatch": None,
        "time": 0.0,
    }
    journal.write_text(json.dumps(entry) + "\n")
    with Run(tmp_path, [f"patches={journal}"]) as run:
        procs = run.start().procs
        assert procs[0].wait(timeout=120) == 1, log_text(procs[0])
        assert "names services not in this run: envrunner.7" in log_text(procs[0])
        assert wait_exit(procs[1:], timeout=30), "members outlived the refused start"


def test_sigterm_to_one_member_stops_the_run_after_a_checkpoint(tmp_path):
    """SIGTERM to an env-runner alone: the run cannot go on without it, so it asks the controller for
    the stop `dynamicrl stop` makes, and nothing since the last checkpoint is lost."""
    with running(tmp_path) as (_, procs, iteration):
        procs[2].send_signal(signal.SIGTERM)
        for proc in procs:
            assert proc.wait(timeout=30) == 0, log_text(proc)
        last = last_checkpoint(tmp_path)
        assert checkpoints.verify(last)["iteration"] > iteration
        expected = rf"stop requested by envrunner\.\d+ after checkpoint {re.escape(str(last))}"
        assert re.search(expected, log_text(procs[0])), log_text(procs[0])


def test_a_signalled_member_without_a_controller_stops_by_itself(tmp_path):
    """A member of a running run waits for the controller's stop after SIGTERM (the controller takes a
    last checkpoint first), but only ``timing.signal_grace_s``: with the controller gone it still exits."""
    with running(tmp_path, "timing.signal_grace_s=1") as (_, (controller, learner, envrunner, logger), _):
        controller.kill()
        controller.wait(timeout=10)
        envrunner.send_signal(signal.SIGTERM)
        assert envrunner.wait(timeout=30) == 0, log_text(envrunner)
        assert "SIGTERM, and no stop from the controller in 1 s" in log_text(envrunner)
        assert learner.poll() is None and logger.poll() is None, "only the signalled member stops"


def test_ctrl_c_after_the_learner_died_stops_at_once(tmp_path):
    """The learner killed, then SIGTERM to the rest (what honcho does next): no checkpoint can be
    taken, and the controller must not wait for one (honcho SIGKILLs 5 s after the first exit)."""
    with running(tmp_path) as (_, (controller, learner, *rest), _):
        learner.kill()
        learner.wait(timeout=10)
        for proc in (controller, *rest):
            proc.send_signal(signal.SIGTERM)
        assert wait_exit([controller, *rest], timeout=30)
        assert [p.returncode for p in (controller, *rest)] == [0, 0, 0]
        assert "no checkpoint: the learner cannot be reached" in log_text(controller)
