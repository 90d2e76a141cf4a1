"""`dynamicrl run`'s exit code from what honcho saw of each process (honcho's own Manager, filled in)."""

from __future__ import annotations

import signal

import pytest
from honcho.manager import Manager

from dynamicrl.clients.launcher import run_exit_code


def seen(first: int | None, **codes: int) -> Manager:
    """A Manager after its loop: each process's return code, and honcho's (the first to stop, or a signal's)."""
    manager = Manager()
    for name, code in codes.items():
        manager._processes[name.replace("_", ".")] = {"returncode": code}
    manager.returncode = first
    return manager


KILLED = -signal.SIGKILL


@pytest.mark.parametrize(
    ("manager", "code"),
    [
        (seen(0, controller_1=0, learner_1=0, previewer_1=0), 0),
        (seen(0, controller_1=1, learner_1=0, previewer_1=0), 1),  # the controller stopped the run
        (seen(130, controller_1=0, learner_1=0), 130),  # Ctrl-C
        (seen(0, controller_1=0, learner_1=1, previewer_1=0), 1),  # a member failed after the first stop
        (seen(0, controller_1=0, learner_1=0, previewer_1=KILLED), 0),  # too slow to stop, after a clean end
        (seen(0, controller_1=KILLED, learner_1=0), KILLED),  # the controller itself never stopped
        (seen(KILLED, controller_1=0, learner_1=KILLED), KILLED),  # killed first (the OOM killer): a failure
    ],
)
def test_the_run_exit_code(manager, code):
    assert run_exit_code(manager) == code
