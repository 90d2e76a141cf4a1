"""A run whose members are alive but stuck: ``status`` must not say plain ``running`` (issue #16, item 6).

A real controller (``FakeRun``: the test plays its learner, env-runner and logger) with
``timing.stall_after_s=2``. The workers keep heartbeating, so every member stays ``ok``; what the
test varies is whether their logical time moves."""

from __future__ import annotations

import time

from helpers import wait_until
from helpers_members import FakeRun, reply, request

from dynamicrl.protocol.messages import BarrierReached, PauseCommand, PauseReply, PauseRequest, ResumeRequest, RunState

STALL_AFTER_S = 2.0


def beat_for(run: FakeRun, seconds: float, iteration=lambda i: 0) -> list:
    """Heartbeat every member every 0.1 s for ``seconds`` (the workers at ``iteration(i)``); the status
    read every 0.5 s meanwhile."""
    seen, deadline, i = [], time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        for member in (run.learner, run.envrunner):
            member.beat(iteration(i))
        run.logger.beat()
        if i % 5 == 0:
            seen.append(run.status())
        i += 1
        time.sleep(0.1)
    return seen


def test_alive_members_that_do_not_advance_make_status_say_stalled(tmp_path):
    run = FakeRun(tmp_path, [f"timing.stall_after_s={STALL_AFTER_S}"])
    try:
        # advancing: never stalled, however long it goes on
        advancing = beat_for(run, 1.5 * STALL_AFTER_S, iteration=lambda i: i)
        assert [s.stalled_s for s in advancing] == [None] * len(advancing), run.log()[-2000:]

        # heartbeating but stuck: every member ok, the run running, and status says it is stalled
        def stalled():
            beat_for(run, 0.3, iteration=lambda i: 10**6)
            status = run.status()
            return status if status.stalled_s is not None else None

        status = wait_until(stalled, timeout=30, message="status never said stalled")
        assert status.state is RunState.RUNNING and status.stalled_s > STALL_AFTER_S, status
        assert {s.service: s.health.value for s in status.services} == {
            "learner.1": "ok",
            "envrunner.1": "ok",
            "logger.1": "ok",
        }
        warnings = [line for line in run.log().splitlines() if "stalled: nothing advanced" in line]
        assert len(warnings) == 1 and "learner.1 at iteration 1000000" in warnings[0], run.log()[-2000:]

        # one step forward and it is no longer stalled
        run.learner.beat(10**6 + 1)
        wait_until(lambda: run.status().stalled_s is None, timeout=10, message="still stalled after an advance")
        assert "the run advances again (learner.1 at iteration 1000001" in run.log()

        # paused, standing still is what it should do: no stall, however long the pause
        waiting = request(run.ctx, run.address, PauseRequest())
        command = run.learner.expect(PauseCommand)
        run.envrunner.expect(PauseCommand)
        for member in (run.learner, run.envrunner):
            member.send(BarrierReached(pause_id=command.pause_id, position=member.position(10**6 + 1)))
        assert isinstance(reply(waiting), PauseReply)
        paused = beat_for(run, 1.5 * STALL_AFTER_S, iteration=lambda i: 10**6 + 1)
        assert [(s.state, s.stalled_s) for s in paused] == [(RunState.PAUSED, None)] * len(paused)
        run.call(ResumeRequest())  # and the clock starts afresh: the pause's length does not count
        assert run.status().stalled_s is None
    finally:
        run.close()
