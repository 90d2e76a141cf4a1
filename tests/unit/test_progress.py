"""Progress's rule, on explicit clocks: a stall is nothing advancing for longer than the floor and
than 3 times the longest gap seen; only while running."""

from dynamicrl.protocol.messages import LogicalTime
from dynamicrl.services.controller.progress import Progress


def at(iteration: int) -> LogicalTime:
    return LogicalTime(iteration=iteration, env_step=iteration * 100)


def test_a_stall_is_measured_from_the_last_advance_of_any_worker():
    progress = Progress(stall_after_s=10)
    progress.running(now=0)
    progress.heard("learner.1", at(1), now=2)
    progress.heard("envrunner.1", at(1), now=5)
    progress.heard("learner.1", at(1), now=9)  # a heartbeat at the same place is not an advance
    assert progress.stalled_s(now=15) is None
    assert progress.stalled_s(now=15.5) == 10.5


def test_a_run_that_was_slow_before_gets_three_times_its_longest_gap():
    progress = Progress(stall_after_s=10)
    progress.running(now=0)
    progress.heard("learner.1", at(1), now=20)  # one 20 s update: slow, not stuck
    assert progress.limit_s() == 60
    assert progress.stalled_s(now=79) is None and progress.stalled_s(now=81) == 61


def test_no_stall_while_not_running_and_the_clock_restarts_on_resume():
    progress = Progress(stall_after_s=10)
    progress.running(now=0)
    progress.halted()  # paused at 1
    progress.heard("learner.1", at(1), now=50)  # moves while pausing: no gap counted
    assert progress.stalled_s(now=100) is None and progress.limit_s() == 10
    progress.running(now=100)
    assert progress.stalled_s(now=109) is None and progress.stalled_s(now=111) == 11
