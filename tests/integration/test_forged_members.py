"""Members that lie (or are not members at all), against a real controller: refused, and the run unaffected.

One controller for the module (``FakeRun``: the test plays its learner, env-runner and logger over
real sockets). Each test makes one attack of issue #16 the way the issue made it, then shows it
refused: the state, the roster, the params and the journal are as they were, and the run still
pauses, patches and answers."""

from __future__ import annotations

import time

import pytest
from helpers import wait_until
from helpers_members import FakeRun, reply, request

from dynamicrl.protocol.messages import (
    ApplyPatch,
    BarrierReached,
    ErrorCode,
    ErrorReply,
    Goodbye,
    PatchApplied,
    PatchReply,
    PatchRequest,
    PauseCommand,
    PauseReply,
    PauseRequest,
    RegisterReply,
    ResumeReply,
    ResumeRequest,
    Role,
    RunState,
    TrainingDone,
)


def unaffected(run: FakeRun) -> None:
    status = run.status()
    assert status.state is RunState.RUNNING, f"{status.state.value}:\n{run.log()[-3000:]}"
    assert {s.service for s in status.services if s.health.value != "gone"} >= {"learner.1", "envrunner.1"}
    assert run.controller.proc.poll() is None


def pause(run: FakeRun, forge=lambda pause_id: None) -> PauseReply:
    """A client's pause, the workers reporting at the barrier (``forge`` first, with the pause's id); resumed."""
    waiting = request(run.ctx, run.address, PauseRequest())
    command = run.learner.expect(PauseCommand)
    assert run.envrunner.expect(PauseCommand).pause_id == command.pause_id
    forge(command.pause_id)
    for member in (run.learner, run.envrunner):
        member.send(BarrierReached(pause_id=command.pause_id, position=member.position(7)))
    answer = reply(waiting)
    assert isinstance(answer, PauseReply), f"{answer}\n{run.log()[-3000:]}"
    assert isinstance(run.call(ResumeRequest()), ResumeReply)
    return answer


@pytest.mark.parametrize("name", ["/tmp/abs_escape_member", "../../../escape_rel_member", ".hidden", "a\\b"])
def test_a_name_that_is_a_path_is_refused_naming_the_field(run, tmp_path, name):
    intruder = run.peer(f"intruder-{abs(hash(name))}")
    answer = intruder.register(Role.LOGGER, service=name)
    assert isinstance(answer, ErrorReply) and answer.code is ErrorCode.BAD_MESSAGE, answer
    assert "service" in answer.message and "pattern" in answer.message, answer.message
    # what the issue did next: a checkpoint part under that name; it writes nothing anywhere
    intruder.send(intruder.part("auto-1", {"iteration": 99999999, "env_steps": 0}, service=name))
    time.sleep(0.2)
    assert name not in {s.service for s in run.status().services}
    assert not (run.run_dir / "checkpoints").exists()
    assert not list(run.run_dir.parent.parent.rglob("escape_rel_member*"))
    unaffected(run)


def test_the_names_the_project_uses_still_register(run):
    for name in ("previewer.1", "logger.2"):
        member = run.peer(name)
        answer = member.register(Role.PREVIEWER if name.startswith("previewer") else Role.LOGGER)
        assert isinstance(answer, RegisterReply), answer
        member.send(Goodbye(service=name, reason="test done"))
    unaffected(run)


def test_a_goodbye_naming_another_member_is_refused(run):
    intruder = run.peer("intruder-goodbye")
    intruder.send(Goodbye(service="envrunner.1", reason="forged"))
    run.logger.send(Goodbye(service="envrunner.1", reason="forged by a member"))
    time.sleep(0.3)
    assert run.health()["envrunner.1"] != "gone"
    unaffected(run)
    assert "refused membership.goodbye" in run.log()


def test_training_done_from_anyone_but_the_learner_is_refused(run):
    run.peer("intruder-done").send(TrainingDone(ltime=run.learner.position(100).ltime))
    run.envrunner.send(TrainingDone(ltime=run.learner.position(100).ltime))
    time.sleep(0.3)
    unaffected(run)
    assert run.log().count("refused membership.training_done") >= 2


def test_a_forged_barrier_report_does_not_count(run):
    intruder = run.peer("intruder-barrier")

    def forge(pause_id: str) -> None:
        intruder.send(BarrierReached(pause_id=pause_id, position=intruder.position(123, service="envrunner.1")))
        # a member reporting for another one
        run.logger.send(BarrierReached(pause_id=pause_id, position=run.logger.position(123, service="envrunner.1")))
        time.sleep(0.3)
        assert run.status().state is RunState.PAUSING  # still waiting for the real env-runner

    answer = pause(run, forge)
    positions = {p.service: p.ltime.iteration for p in answer.positions}
    assert positions["envrunner.1"] == 7 and 123 not in positions.values(), positions
    assert set(positions) <= {"learner.1", "envrunner.1", "logger.1"}
    unaffected(run)


def test_a_forged_patch_applied_is_not_journaled(run):
    run.beat()
    journal, before = run.journal(), run.params()
    accepted = run.call(PatchRequest(changes={"ppo.lr": 1e-4}, wait=False))
    assert isinstance(accepted, PatchReply), accepted
    sent = run.learner.expect(ApplyPatch)
    lr = before["ppo.lr"]
    intruder = run.peer("intruder-patch")
    forged = [
        # an outsider, as the issue did: a new lr, clip_coef to null, an unknown name
        (intruder, "learner.1", {"ppo.lr": (lr, 0.9)}),
        (intruder, "learner.1", {"ppo.clip_coef": (0.2, None), "ppo.bogus": (1, 2)}),
        # the env-runner, which the patch was not sent to, and speaking as the learner
        (run.envrunner, "envrunner.1", {"ppo.lr": (lr, 0.9)}),
        (run.envrunner, "learner.1", {"ppo.lr": (lr, 0.9)}),
        # the learner itself: a name the patch did not send it, and a value the patch's validation refuses
        (run.learner, "learner.1", {"ppo.clip_coef": (0.2, None)}),
        (run.learner, "learner.1", {"ppo.lr": (lr, 5.0)}),
    ]
    for sender, service, changes in forged:
        position = sender.position(3, service=service)
        sender.send(PatchApplied(patch_id=sent.patch_id, position=position, changes=changes))
    run.learner.send(PatchApplied(patch_id="0123456789ab", position=run.learner.position(3), changes={}))
    time.sleep(0.3)
    assert run.journal() == journal
    assert run.params() == {**before, "ppo.lr": 1e-4}  # the accepted patch only
    # the real application is journaled, once
    run.learner.send(
        PatchApplied(patch_id=sent.patch_id, position=run.learner.position(3), changes={"ppo.lr": (lr, 1e-4)})
    )
    wait_until(lambda: run.journal() != journal, timeout=5)
    (entry,) = run.journal()[len(journal) :].splitlines()
    assert '"ppo.lr"' in entry and "0.9" not in entry and "bogus" not in entry
    assert run.params() == {**before, "ppo.lr": 1e-4}
    unaffected(run)


def test_a_late_logger_that_never_gets_ready_does_not_block_pauses(run):
    late = run.peer("logger.late")
    assert isinstance(late.register(Role.LOGGER), RegisterReply)
    late.close()  # never ready, and its connection gone
    time.sleep(1.5)  # timing.missing_after_s is 1 s here
    answer = pause(run)
    assert "logger.late" not in {p.service for p in answer.positions}
    answer = pause(run)  # and every later one
    unaffected(run)
