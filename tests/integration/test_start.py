"""A member waiting for the run to start (the others are slow to come) keeps heartbeating, so the
controller never reports it missing: a patch or a status in the first seconds of a run sees it."""

from __future__ import annotations

import time

from helpers import base_overrides, controller_status, free_ports, start_controller, start_service, stop, wait_until

from dynamicrl.protocol.messages import Health, RunState

MISSING_AFTER_S = 1.0  # timing.missing_after_s for this test: the wait below lasts several times that


def test_a_member_waiting_for_the_start_is_never_missing(tmp_path):
    ports = free_ports(4)
    overrides = ["run.envrunners=2", f"timing.missing_after_s={MISSING_AFTER_S}"]
    controller = start_controller(tmp_path, ports, overrides=overrides)
    # env-runner rank 0 only: the run waits for the learner and the second env-runner, which never come
    envrunner = start_service(
        "envrunner", [*base_overrides(tmp_path, ports), *overrides], tmp_path, args=["--rank", "0"]
    )
    try:

        def ready():  # registered and done starting up: from now on it only waits
            status = controller_status(controller.controller, timeout_s=5)
            return status is not None and any(
                s.service == "envrunner.1" and s.health is Health.OK for s in status.services
            )

        wait_until(ready, timeout=60, message="envrunner.1 never became ready")
        deadline = time.monotonic() + 4 * MISSING_AFTER_S
        while time.monotonic() < deadline:  # a condition that must keep holding while it waits
            status = controller_status(controller.controller, timeout_s=5)
            assert status is not None and status.state is RunState.STARTING
            (member,) = [s for s in status.services if s.service == "envrunner.1"]
            assert member.health is Health.OK, f"reported {member.health.value} after {member.last_seen_s:.1f} s"
            time.sleep(0.2)
        assert envrunner.poll() is None
    finally:
        stop(envrunner)
        stop(controller.proc)
