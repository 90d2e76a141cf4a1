"""A real controller process fed garbage: it answers BAD_MESSAGE, keeps forwarding
the bus, keeps answering status, and a client with no controller fails fast."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import pytest
import zmq
from helpers import (
    base_overrides,
    controller_status,
    endpoint,
    free_port,
    free_ports,
    log_text,
    start_service,
    stop,
    user_env,
    wait_until,
)

from dynamicrl.clients.control import ControlClient
from dynamicrl.protocol import security
from dynamicrl.protocol.codec import MAX_PAYLOAD_BYTES, ProtocolError, Session, decode
from dynamicrl.protocol.messages import (
    ErrorCode,
    ErrorReply,
    RunState,
    RunStateChanged,
    StatusReply,
    StatusRequest,
    TrainMetrics,
)
from dynamicrl.protocol.sockets import connect

REPLY_TIMEOUT_MS = 5000


class Sockets:
    """Sockets for one test, all closed at teardown (kept referenced until then); a client's key
    unless ``member`` names the learner whose key it holds (only a member may publish metrics)."""

    def __init__(self) -> None:
        self.ctx = security.context()
        self.members: dict[str, security.Context] = {}
        self.open: list[zmq.Socket] = []

    def __call__(self, kind: int, endpoint: str, member: str | None = None) -> zmq.Socket:
        ctx = self.ctx
        if member is not None:
            ctx = self.members.setdefault(member, security.context(role="learner", name=member))
        sock = ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        self.open.append(sock)
        if kind == zmq.SUB:
            sock.setsockopt(zmq.SUBSCRIBE, b"")
        connect(sock, endpoint)
        return sock

    def close(self) -> None:
        for sock in self.open:
            sock.close(linger=0)
        for ctx in [self.ctx, *self.members.values()]:
            ctx.term()


@pytest.fixture
def sockets():
    made = Sockets()
    yield made
    made.close()


def request_raw(sockets: Sockets, address: str, frames: list[bytes]) -> list[bytes]:
    """Send ``frames`` on a fresh REQ socket and return the raw reply frames."""
    sock = sockets(zmq.REQ, address)
    sock.send_multipart(frames)
    assert sock.poll(REPLY_TIMEOUT_MS), f"no reply within {REPLY_TIMEOUT_MS} ms"
    return sock.recv_multipart()


def _valid_status_frames(**changes) -> list[bytes]:
    frames = [bytes(f) for f in Session("garbage-test").encode(StatusRequest())]
    payload = msgpack.unpackb(frames[1])
    payload.update(changes)
    return [frames[0], msgpack.packb(payload)]


def _garbage_requests() -> dict[str, tuple[list[bytes], str]]:
    rng = random.Random(1234)
    status = [bytes(f) for f in Session("garbage-test").encode(StatusRequest())]
    big = _valid_status_frames(padding="x" * (MAX_PAYLOAD_BYTES + 1))
    return {
        "one random frame": ([rng.randbytes(100)], "got 1 frame"),
        "random payload": ([StatusRequest.TYPE.encode(), b"\xc1" + rng.randbytes(200)], "undecodable"),
        "truncated msgpack": ([status[0], status[1][: len(status[1]) // 2]], "undecodable"),
        "wrong version": (_valid_status_frames(v="2.0"), "version '2.0'"),
        "unknown type": (
            [b"nope.nothing", _valid_status_frames(type="nope.nothing")[1]],
            "unknown message type 'nope.nothing'",
        ),
        "oversized payload": (big, f"exceeds {MAX_PAYLOAD_BYTES}"),
        "schema violation": (_valid_status_frames(body={"surprise": 1}), "surprise"),
    }


@pytest.mark.parametrize("case", list(_garbage_requests()))
def test_garbage_request_gets_bad_message_reply(controller, sockets, case):
    frames, problem = _garbage_requests()[case]
    reply = decode(request_raw(sockets, controller.controller, frames))
    assert isinstance(reply.message, ErrorReply), reply.message
    assert reply.message.code is ErrorCode.BAD_MESSAGE
    assert problem in reply.message.message, reply.message.message
    assert controller.proc.poll() is None


def _is_beacon(frames: list[bytes]) -> bool:
    if frames[0] != RunStateChanged.TYPE.encode():
        return False
    try:
        return isinstance(decode(frames).message, RunStateChanged)
    except ProtocolError:
        return False


def _metrics_iteration(frames: list[bytes]) -> int | None:
    if frames[0] != TrainMetrics.TYPE.encode():
        return None
    try:
        return decode(frames, expect=[TrainMetrics]).message.iteration
    except ProtocolError:
        return None


def _status_with_iteration(address: str, iteration: int) -> StatusReply | None:
    status = controller_status(address)
    if status is not None and status.ltime is not None and status.ltime.iteration == iteration:
        return status
    return None


def test_garbage_on_the_bus_is_dropped_and_forwarding_goes_on(controller, sockets):
    sub = sockets(zmq.SUB, controller.bus_out)

    def receive(timeout_ms: int) -> list[bytes] | None:
        return sub.recv_multipart() if sub.poll(timeout_ms) else None

    def beacon_arrives() -> bool:
        frames = receive(200)
        return frames is not None and _is_beacon(frames)

    # the subscription is live once the controller's own state beacon comes through
    wait_until(beacon_arrives, timeout=10, interval=0)

    pub = sockets(zmq.PUB, controller.bus_in, member="garbage-publisher")
    session = Session("garbage-publisher")

    def metrics(iteration: int) -> list[bytes]:
        message = TrainMetrics(iteration=iteration, env_steps=iteration, sps=1.0, episodes=0, values={})
        return [bytes(f) for f in session.encode(message)]

    # a PUB drops until its subscription arrives: send probes until one gets through
    def probe_arrives() -> bool:
        pub.send_multipart(metrics(1))
        while (frames := receive(50)) is not None:
            if _metrics_iteration(frames) == 1:
                return True
        return False

    wait_until(probe_arrives, timeout=10, interval=0, message="nothing from the test publisher got through")

    rng = random.Random(5)
    garbage = [
        [TrainMetrics.TYPE.encode(), b"\xc1 not msgpack"],  # a topic the controller decodes
        [TrainMetrics.TYPE.encode(), msgpack.packb({"v": "1.0", "type": TrainMetrics.TYPE})],
        [TrainMetrics.TYPE.encode(), msgpack.packb({"v": "9.0", "type": TrainMetrics.TYPE, "body": {}})],
        [b"junk"],  # a single frame
        [b"", rng.randbytes(64), b"extra frame"],  # empty topic
        [RunStateChanged.TYPE.encode(), msgpack.packb([1, 2])],  # the beacon's topic
        [TrainMetrics.TYPE.encode(), b"x" * (MAX_PAYLOAD_BYTES + 1)],  # oversized
        [
            bytes(f)
            for f in Session("learner.1").encode(TrainMetrics(iteration=7, env_steps=7, sps=1.0, episodes=0, values={}))
        ],
    ]
    forged = sockets(zmq.PUB, controller.bus_in)  # a client's key: it may publish only external.*
    dropped = _status(controller.controller).security.dropped_bus
    for frames in garbage:
        pub.send_multipart(frames)
    final = metrics(4242)

    def sent_by_a_client() -> bool:  # resent until its connection is up and the bus dropped it
        forged.send_multipart(metrics(99))
        return _status(controller.controller).security.dropped_bus > dropped + len(garbage)

    wait_until(sent_by_a_client, timeout=10, interval=0.05, message="the bus let a client's metrics through")
    pub.send_multipart(final)

    received: list[list[bytes]] = []

    def final_arrives() -> bool:
        while (frames := receive(50)) is not None:
            if not _is_beacon(frames):  # the controller's beacons interleave; leave them out
                received.append(frames)
            if frames == final:
                return True
        return False

    wait_until(final_arrives, timeout=10, interval=0, message="the bus stopped forwarding after garbage")
    # nothing without a sender, under another name, or from a client went on (late probes may)
    assert received[-1] == final and all(_metrics_iteration(frames) in (1, 4242) for frames in received), received

    # the controller kept working: beacons still flow, and its tap took the valid metrics
    wait_until(beacon_arrives, timeout=10, interval=0)
    wait_until(lambda: _status_with_iteration(controller.controller, 4242), timeout=10)
    assert controller.proc.poll() is None


def _status(address: str):
    status = controller_status(address)
    assert status is not None and status.security is not None
    return status


def test_retried_request_gets_the_same_reply(controller, sockets):
    request = [bytes(f) for f in Session("retrying-client").encode(StatusRequest(), msg_id="retry-42")]
    first = decode(request_raw(sockets, controller.controller, request))
    assert isinstance(first.message, StatusReply)
    assert first.envelope.parent == "retry-42"

    # change what a fresh status would say: publish metrics and wait until status shows them
    # (publishers only send what someone downstream subscribed to, hence the SUB)
    sockets(zmq.SUB, controller.bus_out)
    pub = sockets(zmq.PUB, controller.bus_in, member="retry-test-publisher")
    session = Session("retry-test-publisher")
    iteration = 777_777

    def fresh_status_changed():
        pub.send_multipart(
            session.encode(TrainMetrics(iteration=iteration, env_steps=1, sps=2.0, episodes=0, values={}))
        )
        return _status_with_iteration(controller.controller, iteration)

    wait_until(fresh_status_changed, timeout=10)
    assert first.message.ltime is None or first.message.ltime.iteration != iteration

    second = decode(request_raw(sockets, controller.controller, request))  # the same id, another socket
    assert second.envelope.parent == "retry-42"
    assert second.message.model_dump() == first.message.model_dump()


def test_controller_still_serves_after_the_garbage(controller):
    with ControlClient(controller.controller, timeout_s=5, retries=0) as client:
        status = client.status()
    assert status.state is RunState.STARTING
    assert status.services == []
    assert controller.proc.poll() is None
    assert "Traceback" not in log_text(controller.proc)


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("dynamicrl")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from dynamicrl.clients.cli import main; main()"]


def test_status_without_a_controller_fails_fast(tmp_path):
    address = endpoint(free_port())
    started = time.monotonic()
    result = subprocess.run(
        [*_cli(), "status", "--timeout", "1", f"addresses.controller={address}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=15,
        env=user_env(PYTHONUNBUFFERED="1"),
    )
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "no controller" in output and address in output, output
    assert "Traceback" not in output
    assert elapsed < 5, f"took {elapsed:.1f} s"


def test_controller_exits_cleanly_on_sigterm(tmp_path):
    ports = free_ports(4)
    proc = start_service("controller", base_overrides(tmp_path, ports), tmp_path)
    try:
        wait_until(lambda: proc.poll() is not None or controller_status(endpoint(ports[0])), timeout=20)
        assert proc.poll() is None, log_text(proc)
    finally:
        code = stop(proc, timeout=10)
    assert code == 0, f"exit code {code}:\n{log_text(proc)}"
    assert "stopped" in log_text(proc)
    assert list((tmp_path / "runs").glob("*/config.yaml")), "no run directory with config.yaml"
