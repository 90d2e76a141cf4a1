"""Monitors' losses reach `dynamicrl status` (issue #6): the Monitor SDK and `dynamicrl watch` report
what they received and missed (`control.monitor_report`) to a real controller; a real loss from a
flood; a report by hand from a plain REQ (docs/protocol.md only); malformed reports; expiry."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid

import msgpack
import pytest
import zmq
from helpers import CLI, controller_status, log_text, run_cli, start_controller, stop, user_env, wait_until
from helpers_plain import plain_curve

from dynamicrl.clients.monitor import Monitor
from dynamicrl.protocol import security
from dynamicrl.protocol.messages import EpisodeStats, MonitorStatus
from dynamicrl.protocol.sockets import Publisher

#: How many messages the lossy test floods while its monitor does not read: far more than every
#: queue on the way can hold (publisher 1000, bus XSUB and XPUB 10,000 each, TCP buffers, the
#: monitor's 10), so some are certainly dropped.
FLOOD = 60_000


@pytest.fixture(scope="module")
def forgetful(tmp_path_factory):
    """A controller that forgets a monitor after 1 s without a report."""
    with start_controller(tmp_path_factory.mktemp("report-expiry"), overrides=["timing.monitor_expiry_s=1"]) as running:
        yield running


def _listed(address: str, name: str) -> MonitorStatus | None:
    status = controller_status(address, timeout_s=2.0)
    assert status is not None, f"no controller answered at {address}"
    return next((m for m in status.monitors if m.name == name), None)


def _plain_request(address: str, type_name: str, body: dict, request_id: str | None = None) -> tuple[str, dict]:
    """One request over a plain REQ, built from docs/protocol.md; returns (reply type, reply payload)."""
    sock: zmq.Socket = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    plain_curve(sock)
    sock.connect(address)
    try:
        payload = {
            "v": "1.3",
            "type": type_name,
            "sender": f"plain-monitor.{os.getpid()}",
            "seq": 0,
            "run_id": None,
            "ts": time.time(),
            "id": request_id or uuid.uuid4().hex,
            "parent": None,
            "ltime": None,
            "body": body,
        }
        sock.send_multipart([type_name.encode(), msgpack.packb(payload, use_bin_type=True)])
        assert sock.poll(5000), "no reply within 5 s"
        topic, reply, *_ = sock.recv_multipart()
        return topic.decode(), msgpack.unpackb(reply, raw=False)
    finally:
        sock.close()


# -- (a) a reporting monitor shows up in status -------------------------------------------------------------


def test_a_reporting_monitor_is_listed_by_status(controller, tmp_path):
    with Monitor(
        controller.bus_out, ("control.",), report_to=controller.controller, report_every_s=0.2, name="probe.listed"
    ) as monitor:

        def listed_with_beacons():
            monitor.receive(timeout=0.3)  # control.state beacons every 0.5 s; reports go from here
            entry = _listed(controller.controller, "probe.listed")
            return entry if entry is not None and entry.received > 0 else None

        entry = wait_until(listed_with_beacons, timeout=20, interval=0, message="the monitor never showed up")
        assert entry.topics == ["control."] and entry.missed == 0 and entry.rejected == 0 and not entry.closed
        assert monitor.reports_sent >= 1 and monitor.report_error is None

        as_json = run_cli("status", "--json", f"addresses.controller={controller.controller}", cwd=tmp_path)
        assert as_json.returncode == 0, as_json.stderr
        (row,) = [m for m in json.loads(as_json.stdout)["monitors"] if m["name"] == "probe.listed"]
        assert row["received"] > 0 and row["missed"] == 0 and row["topics"] == ["control."]

        text = run_cli("status", f"addresses.controller={controller.controller}", cwd=tmp_path)
        assert text.returncode == 0, text.stderr
        assert "monitors:" in text.stdout and "missed    0 bus message(s) in all" in text.stdout, text.stdout
        (line,) = [ln for ln in text.stdout.splitlines() if "probe.listed" in ln]
        assert "topics control." in line and "missed 0" in line, line
        received = monitor.received
    entry = _listed(controller.controller, "probe.listed")  # close sent a final report
    assert entry.closed and entry.received == received


# -- (b) losses reach status ----------------------------------------------------------------------------------


def test_a_monitor_that_lost_messages_reports_them(controller, ctx, tmp_path):
    member = security.context(role="envrunner", name="flooder.report")  # only a member may publish metrics
    publisher = Publisher(member, controller.bus_in, "flooder.report")
    message = EpisodeStats(rank=0, env_steps=1, returns=[0.5] * 10, lengths=[1] * 10)
    marker = EpisodeStats(rank=1, env_steps=1, returns=[], lengths=[])
    try:
        with Monitor(
            controller.bus_out,
            ("metrics.episode",),
            hwm=10,
            report_to=controller.controller,
            report_every_s=0.2,
            name="probe.lossy",
        ) as monitor:

            def subscribed():
                publisher.publish(message)
                return monitor.receive(timeout=0.2)

            wait_until(subscribed, timeout=15, interval=0, message="the subscription never went live")
            for _ in range(FLOOD):  # the monitor does not read meanwhile: queues fill, the bus drops
                publisher.publish(message)

            def marker_arrived():  # read again; the first message after the hole reveals it
                publisher.publish(marker)
                return any(e.message.rank == 1 for e in monitor.events(idle_timeout=0.5))

            wait_until(marker_arrived, timeout=60, interval=0, message="the marker after the flood never arrived")
            missed = monitor.missed
            assert missed > 0 and monitor.missed_by_sender == {"flooder.report": missed}
            print(f"flood of {FLOOD}: {monitor.received} received, {missed} missed")
    finally:
        publisher.close()
        member.term()
    entry = _listed(controller.controller, "probe.lossy")  # the final report, sent on close
    assert entry.closed and entry.missed == missed and entry.missed_by_sender == {"flooder.report": missed}
    text = run_cli("status", f"addresses.controller={controller.controller}", cwd=tmp_path)
    (line,) = [ln for ln in text.stdout.splitlines() if "probe.lossy" in ln]
    assert f"missed {missed} " in line and f"(flooder.report {missed})" in line, line
    assert "missed 0 bus message(s) in all" not in text.stdout
    assert f"({missed} in all)" in log_text(controller.proc)  # the controller logs each increase


def test_a_report_by_hand_from_a_plain_req(controller, tmp_path):
    body = {
        "name": "plain.third-party",
        "topics": ["metrics."],
        "received": 120,
        "missed": 7,
        "missed_by_sender": {"learner.1": 5, "envrunner.1": 2},
        "rejected": 1,
    }
    topic, reply = _plain_request(controller.controller, "control.monitor_report", body)
    assert topic == "control.monitor_report_reply" and reply["body"] == {"expiry_s": 30.0}, reply
    entry = _listed(controller.controller, "plain.third-party")
    assert (entry.received, entry.missed, entry.rejected) == (120, 7, 1)
    assert entry.missed_by_sender == {"learner.1": 5, "envrunner.1": 2} and entry.topics == ["metrics."]
    text = run_cli("status", f"addresses.controller={controller.controller}", cwd=tmp_path)
    (line,) = [ln for ln in text.stdout.splitlines() if "plain.third-party" in ln]
    assert "received 120" in line and "missed 7 " in line and "(learner.1 5, envrunner.1 2)" in line, line
    assert "1 undecodable" in line


# -- (c) malformed reports --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"name": "bad.1", "received": "many"}, "received"),
        ({"name": "bad.2", "received": 3, "missed": -1}, "missed"),
        ({"received": 3}, "name"),
        ({"name": "bad.4", "received": 3, "missed_by_sender": {"learner.1": "x"}}, "missed_by_sender"),
        ({"name": "bad.5", "received": 3, "colour": "blue"}, "colour"),
        ({"name": "", "received": 3}, "name"),
    ],
)
def test_a_malformed_report_gets_bad_message(controller, body, problem):
    request_id = uuid.uuid4().hex
    topic, reply = _plain_request(controller.controller, "control.monitor_report", body, request_id)
    assert topic == "control.error", reply
    assert reply["body"]["code"] == "bad_message" and problem in reply["body"]["message"], reply
    assert reply["parent"] == request_id  # the id was readable, so the refusal names it
    status = controller_status(controller.controller)
    assert status is not None and controller.proc.poll() is None
    assert not [m for m in status.monitors if m.name.startswith("bad.")]


# -- (d) a monitor that stops reporting is forgotten ----------------------------------------------------------


def test_a_silent_monitor_is_forgotten(forgetful):
    monitor = Monitor(
        forgetful.bus_out, ("control.",), report_to=forgetful.controller, report_every_s=0.2, name="probe.silent"
    )
    try:

        def reported():
            monitor.receive(timeout=0.3)
            return _listed(forgetful.controller, "probe.silent")

        wait_until(reported, timeout=20, interval=0, message="the monitor never showed up")
        # it stops reading, so it stops reporting: gone after timing.monitor_expiry_s (1 s)
        wait_until(
            lambda: _listed(forgetful.controller, "probe.silent") is None,
            timeout=20,
            interval=0.1,
            message="the silent monitor was never forgotten",
        )
        assert "forgot monitor probe.silent: no report for" in log_text(forgetful.proc)
    finally:
        monitor.close()  # a final report: listed again, as closed, until it expires too
    entry = _listed(forgetful.controller, "probe.silent")
    assert entry is None or entry.closed
    wait_until(
        lambda: _listed(forgetful.controller, "probe.silent") is None,
        timeout=20,
        interval=0.1,
        message="the closed monitor was never forgotten",
    )


def test_reports_to_no_controller_never_raise(controller):
    """A report that gets no answer is logged once; receiving goes on, each attempt bounded."""
    from helpers import free_port

    with Monitor(
        controller.bus_out,
        ("control.",),
        report_to=f"tcp://127.0.0.1:{free_port()}",
        report_every_s=0.1,
        name="probe.orphan",
    ) as monitor:
        events = list(monitor.events(timeout=2.0))
        assert events and monitor.reports_sent == 0 and "no reply" in monitor.report_error
    assert _listed(controller.controller, "probe.orphan") is None


# -- dynamicrl watch reports by default -------------------------------------------------------------------------


def test_watch_reports_unless_told_not_to(controller, tmp_path):
    addresses = [f"addresses.controller={controller.controller}", f"addresses.bus_out={controller.bus_out}"]
    reporting = subprocess.Popen(
        [*CLI, "watch", "--topic", "control.", "--timeout", "2", *addresses],
        cwd=tmp_path,
        env=user_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _out, err = reporting.communicate(timeout=60)
    finally:
        if reporting.poll() is None:
            stop(reporting)
    assert reporting.returncode == 0, err
    assert f"reported to {controller.controller}" in err, err
    entry = _listed(controller.controller, f"watch.{reporting.pid}")
    assert entry is not None and entry.closed and entry.received > 0 and entry.topics == ["control."]

    quiet = run_cli("watch", "--no-report", "--topic", "control.", "--timeout", "1", *addresses, cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert "report" not in quiet.stderr, quiet.stderr
    status = controller_status(controller.controller)
    assert [m.name for m in status.monitors if m.name.startswith("watch.")] == [f"watch.{reporting.pid}"]
