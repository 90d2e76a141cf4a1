"""Watching a real controller's bus: a third party's plain pyzmq + msgpack monitor and publisher
(written from docs/protocol.md alone), the Monitor SDK (typed events, gaps, garbage, a flood,
another major version, a controller restart) and `dynamicrl watch`."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
import uuid
from collections.abc import Callable

import msgpack
import pytest
import zmq
import zmq.auth
from helpers import CLI, controller_status, free_ports, log_text, start_controller, stop, user_env, wait_until
from helpers_plain import plain_curve

from dynamicrl.clients.monitor import Monitor, ProtocolVersionMismatch, Received
from dynamicrl.protocol import security
from dynamicrl.protocol.codec import MAX_PAYLOAD_BYTES
from dynamicrl.protocol.messages import EpisodeStats, LogicalTime, RunState, RunStateChanged, TrainMetrics
from dynamicrl.protocol.sockets import Publisher

# -- a third party's side: pyzmq + msgpack only, following docs/protocol.md (no dynamicrl here) --------------

PLAIN_VERSION = "1.2"  # docs/protocol.md, "Version"
ENVELOPE_FIELDS = {"v", "type", "sender", "seq", "run_id", "ts", "id", "parent", "ltime", "body"}


def _no_ext(code, data):
    raise ValueError(f"msgpack extension type {code} is not allowed")


class PlainMonitor:
    """SUB on the bus's XPUB side; yields each message as the payload map (envelope + body)."""

    def __init__(self, ctx: zmq.Context, bus_out: str, prefixes: list[bytes]) -> None:
        self.sub = ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.MAXMSGSIZE, 1 << 30)
        for prefix in prefixes:
            self.sub.setsockopt(zmq.SUBSCRIBE, prefix)
        plain_curve(self.sub)
        self.sub.connect(bus_out)
        self.last_seq: dict[str, int] = {}
        self.missed = 0
        self.refused = 0

    def next(self, timeout_s: float) -> dict | None:
        """The next message that follows the contract, or None after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            if not self.sub.poll(int(left * 1000)):
                return None
            topic, payload, *_arrays = self.sub.recv_multipart()
            try:
                msg = msgpack.unpackb(payload, raw=False, strict_map_key=True, ext_hook=_no_ext)
            except Exception:
                self.refused += 1
                continue
            if (
                not isinstance(msg, dict)
                or set(msg) != ENVELOPE_FIELDS
                or not isinstance(msg["v"], str)
                or msg["v"].split(".")[0] != PLAIN_VERSION.split(".")[0]
                or topic != msg["type"].encode()
                or not isinstance(msg["body"], dict)
            ):
                self.refused += 1
                continue
            sender, seq = msg["sender"], msg["seq"]
            if sender in self.last_seq and seq > self.last_seq[sender] + 1:
                self.missed += seq - self.last_seq[sender] - 1
            self.last_seq[sender] = seq
            return msg
        return None

    def close(self) -> None:
        self.sub.close(linger=0)


class PlainPublisher:
    """PUB on the bus's XSUB side, building the payload map by hand."""

    def __init__(self, ctx: zmq.Context, bus_in: str, sender: str) -> None:
        self.pub = ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        plain_curve(self.pub, "envrunner", sender)  # a member's key: a client may publish only external.*
        self.pub.connect(bus_in)
        self.sender = sender
        self.seq = 0

    def payload(self, type_name: str, body: dict, *, seq: int | None = None, v: object = PLAIN_VERSION) -> bytes:
        if seq is None:
            seq, self.seq = self.seq, self.seq + 1
        header = {
            "v": v,
            "type": type_name,
            "sender": self.sender,
            "seq": seq,
            "run_id": None,
            "ts": time.time(),
            "id": uuid.uuid4().hex,
            "parent": None,
            "ltime": None,
            "body": body,
        }
        return msgpack.packb(header, use_bin_type=True)

    def publish(self, type_name: str, body: dict, **options) -> None:
        self.pub.send_multipart([type_name.encode(), self.payload(type_name, body, **options)])

    def send_raw(self, frames: list[bytes]) -> None:
        self.pub.send_multipart(frames)

    def close(self) -> None:
        self.pub.close(linger=0)


# -- helpers ---------------------------------------------------------------------------------------------------


def _until_received(
    monitor: Monitor, publish: Callable[[], None], wanted: Callable[[Received], bool], timeout: float = 15
) -> Received:
    """Publish until an event ``wanted`` arrives (a new subscription takes a moment to reach a publisher)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        publish()
        for event in monitor.events(timeout=0.2):
            if wanted(event):
                return event
    raise AssertionError(f"nothing wanted arrived within {timeout} s")


def _from(sender: str) -> Callable[[Received], bool]:
    return lambda event: event.envelope.sender == sender


@pytest.fixture
def member():
    """Contexts holding a member's key (only a member may publish metrics, under its own name),
    destroyed after the test."""
    made: list[zmq.Context] = []

    def make(name: str) -> zmq.Context:
        made.append(security.context(role="envrunner", name=name))
        return made[-1]

    yield make
    for context in made:
        context.destroy(linger=0)


def _episode_body(rank: int = 0, env_steps: int = 128) -> dict:
    return {"rank": rank, "env_steps": env_steps, "returns": [21.0, 35.5], "lengths": [21, 35]}


# -- a plain subscriber and a plain publisher talk with the project -----------------------------------------


def test_plain_monitor_decodes_beacons_and_published_metrics(controller, ctx, member):
    plain = PlainMonitor(ctx, controller.bus_out, [b"control.state", b"metrics.train"])
    publisher = Publisher(member("learner.plain-test"), controller.bus_in, "learner.plain-test", run_id="run-plain")
    try:

        def beacon():
            msg = plain.next(1.0)
            return msg if msg is not None and msg["type"] == "control.state" else None

        msg = wait_until(beacon, timeout=10, interval=0, message="no control.state beacon")
        assert msg["sender"] == "controller" and isinstance(msg["seq"], int) and isinstance(msg["run_id"], str)
        assert msg["body"] == {"state": "starting", "reason": msg["body"]["reason"]}

        metrics = TrainMetrics(
            iteration=7,
            env_steps=1792,
            sps=1234.5,
            return_mean=21.5,
            episodes=3,
            values={"policy_loss": 0.25, "value_loss": 1.5},
            hyperparameters={"ppo.lr": 2.5e-4},
        )

        def metrics_arrive():
            publisher.publish(metrics, ltime=LogicalTime(iteration=7, env_step=1792))
            while (got := plain.next(0.2)) is not None:
                if got["type"] == "metrics.train" and got["sender"] == "learner.plain-test":
                    return got
            return None

        got = wait_until(metrics_arrive, timeout=15, interval=0, message="metrics.train never reached the plain SUB")
        assert got["v"].split(".")[0] == "1" and got["run_id"] == "run-plain" and got["parent"] is None
        assert got["ltime"] == {"iteration": 7, "env_step": 1792}
        assert got["body"] == {
            "iteration": 7,
            "env_steps": 1792,
            "sps": 1234.5,
            "return_mean": 21.5,
            "length_mean": None,
            "episodes": 3,
            "values": {"policy_loss": 0.25, "value_loss": 1.5},
            "hyperparameters": {"ppo.lr": 2.5e-4},
        }
        assert plain.refused == 0
    finally:
        publisher.close()
        plain.close()


def test_sdk_monitor_types_what_a_plain_publisher_sends(controller, ctx):
    plain = PlainPublisher(ctx, controller.bus_in, "plain.publisher")
    try:
        with Monitor(controller.bus_out, ("metrics.episode",)) as monitor:
            event = _until_received(
                monitor, lambda: plain.publish("metrics.episode", _episode_body(rank=2)), _from("plain.publisher")
            )
            assert isinstance(event.message, EpisodeStats)
            assert event.message == EpisodeStats(rank=2, env_steps=128, returns=[21.0, 35.5], lengths=[21, 35])
            assert event.envelope.v == PLAIN_VERSION and event.envelope.run_id is None
            assert monitor.rejected == 0 and monitor.received >= 1
    finally:
        plain.close()


def test_monitor_counts_gaps_per_sender(controller, ctx, caplog):
    plain = PlainPublisher(ctx, controller.bus_in, "gapper")
    gaps: list[tuple[str, int]] = []
    try:
        with Monitor(controller.bus_out, "metrics.episode", on_gap=lambda s, n: gaps.append((s, n))) as monitor:
            # seq 0 until one arrives (a repeated seq is a restart, not a gap), then 1 and 5: 3 lost
            first = lambda: plain.publish("metrics.episode", _episode_body(), seq=0)  # noqa: E731
            _until_received(monitor, first, _from("gapper"))
            with caplog.at_level(logging.WARNING, logger="dynamicrl.clients.monitor"):
                for seq in (1, 5):
                    plain.publish("metrics.episode", _episode_body(env_steps=seq), seq=seq)
                seen: list[int] = []
                monitor.run(
                    lambda e: seen.append(e.envelope.seq) if e.envelope.sender == "gapper" else None,
                    until=lambda _e: 5 in seen,
                    timeout=10,
                )
            assert seen[-2:] == [1, 5] and set(seen[:-2]) <= {0}, seen
            assert monitor.missed_by_sender.get("gapper") == 3 and monitor.missed == 3
            assert gaps == [("gapper", 3)]
            assert "missed 3 message(s) from gapper" in caplog.text
    finally:
        plain.close()


def _dropped_bus(address: str) -> int:
    status = controller_status(address)
    assert status is not None and status.security is not None
    return status.security.dropped_bus


def _collect_seqs(monitor: Monitor, sender: str, n: int, timeout: float = 10) -> list[int]:
    seqs: list[int] = []
    monitor.run(
        lambda e: seqs.append(e.envelope.seq) if e.envelope.sender == sender else None,
        until=lambda _e: len(seqs) >= n,
        timeout=timeout,
    )
    return seqs


# -- abuse: garbage, a flood, another major version -----------------------------------------------------------


def test_garbage_on_the_bus_is_counted_and_skipped(controller, ctx, caplog):
    plain = PlainPublisher(ctx, controller.bus_in, "garbage-probe")
    refused: list[Exception] = []
    try:
        with Monitor(controller.bus_out, on_reject=refused.append) as monitor:
            _until_received(monitor, lambda: plain.publish("metrics.episode", _episode_body()), _from("garbage-probe"))
            # the bus drops what does not say who sent it (it checks the sender against the key) ...
            unsigned = [
                [b"metrics.episode", b"\xc1 not msgpack"],
                [b"junk"],
                [b"metrics.episode", b"x" * (MAX_PAYLOAD_BYTES + 1)],
            ]
            # ... and forwards the rest, which the monitor refuses
            garbage = {
                "unknown topic": (
                    [b"external.test", plain.payload("external.test", {"x": 1})],
                    "unknown message type 'external.test'",
                ),
                "version not a string": (
                    [b"metrics.episode", plain.payload("metrics.episode", _episode_body(), v=1)],
                    "version 1",
                ),
                "schema violation": ([b"metrics.episode", plain.payload("metrics.episode", {"rank": -1})], "rank"),
            }
            dropped = _dropped_bus(controller.controller)
            with caplog.at_level(logging.WARNING, logger="dynamicrl.clients.monitor"):
                for frames in [*unsigned, *(frames for frames, _problem in garbage.values())]:
                    plain.send_raw(frames)
                plain.publish("metrics.episode", _episode_body(rank=9))
                marker = monitor.run(
                    lambda _e: None,
                    until=lambda e: e.envelope.sender == "garbage-probe" and e.message.rank == 9,
                    timeout=15,
                )
            assert marker is not None, "the valid message after the garbage never arrived"
            assert monitor.rejected == len(garbage) == len(refused)
            for (name, (_frames, problem)), error in zip(garbage.items(), refused):
                assert problem in str(error), (name, str(error))
            assert "skipped an undecodable bus message" in caplog.text
            assert monitor.mismatched == 0
            assert _dropped_bus(controller.controller) == dropped + len(unsigned)
    finally:
        plain.close()
    assert controller_status(controller.controller) is not None, "the controller stopped answering after the garbage"
    assert controller.proc.poll() is None


def test_a_flood_is_accounted_for_and_the_controller_keeps_answering(controller, ctx, member):
    publisher = Publisher(member("flooder"), controller.bus_in, "flooder")
    message = EpisodeStats(rank=0, env_steps=1, returns=[1.0], lengths=[1])
    received: list[int] = []
    try:
        with Monitor(controller.bus_out, ("metrics.episode",)) as monitor:
            first = _until_received(monitor, lambda: publisher.publish(message), _from("flooder"))
            received.append(first.envelope.seq)
            started = time.monotonic()
            for _ in range(20_000):
                publisher.publish(message)
            marker = EpisodeStats(rank=1, env_steps=1, returns=[], lengths=[])

            def take(event: Received) -> None:
                if event.envelope.sender == "flooder":
                    received.append(event.envelope.seq)

            last = None
            deadline = time.monotonic() + 60
            while last is None and time.monotonic() < deadline:
                publisher.publish(marker)
                last = monitor.run(
                    take, until=lambda e: e.envelope.sender == "flooder" and e.message.rank == 1, timeout=1.0
                )
            assert last is not None, "the marker after the flood never arrived"
            elapsed = time.monotonic() - started
            span = received[-1] - received[0] + 1
            missed = monitor.missed_by_sender.get("flooder", 0)
            # every message between the first and the last one seen is either received or counted missed
            assert len(received) + missed == span, (len(received), missed, span)
            assert received == sorted(received) and span >= 20_001
            print(f"flood: {len(received)} received, {missed} missed in {elapsed:.1f} s")
    finally:
        publisher.close()
    status = controller_status(controller.controller)
    assert status is not None and status.state is RunState.STARTING
    assert controller.proc.poll() is None
    assert "Traceback" not in log_text(controller.proc)


FLOODER = """
import sys, zmq
from dynamicrl.protocol import security
from dynamicrl.protocol.messages import TrainMetrics
from dynamicrl.protocol.sockets import Publisher
publisher = Publisher(security.context(role="learner", name="flooder.status"), sys.argv[1], "flooder.status")
frames = [bytes(f) for f in publisher.session.encode(TrainMetrics(iteration=777, env_steps=1, sps=1.0, episodes=0,
                                                                  values={}))]
while True:  # one encoded message, as fast as zmq takes it, until the test kills the flooder; the
    publisher.socket.send_multipart(frames)  # controller always takes metrics.train (status shows it)
"""


def test_the_controller_answers_commands_during_an_endless_flood(controller, tmp_path):
    log_path = tmp_path / "flooder.log"
    with open(log_path, "wb") as log_file:
        flooder = subprocess.Popen(
            [sys.executable, "-c", FLOODER, controller.bus_in], stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        # The flooder's messages reaching the controller show in status (its latest train metrics).
        wait_until(
            lambda: (
                (s := controller_status(controller.controller, timeout_s=5)) is not None
                and s.ltime is not None
                and s.ltime.iteration == 777
            ),
            timeout=30,
            message="the flood never reached the controller",
        )
        for _ in range(3):  # still flooding: every request is answered within the client's timeout
            assert controller_status(controller.controller, timeout_s=5) is not None, "no answer during the flood"
        assert flooder.poll() is None, log_path.read_text()
    finally:
        stop(flooder)
    assert controller.proc.poll() is None


def test_another_major_version_raises(controller, ctx):
    plain = PlainPublisher(ctx, controller.bus_in, "future.peer")
    try:
        with Monitor(controller.bus_out, ("metrics.episode",)) as monitor:
            _until_received(monitor, lambda: plain.publish("metrics.episode", _episode_body()), _from("future.peer"))
            plain.publish("metrics.episode", _episode_body(), v="2.0")
            with pytest.raises(ProtocolVersionMismatch) as caught:
                monitor.run(lambda _e: None, timeout=10)
            assert caught.value.version == "2.0" and caught.value.sender == "future.peer"
            assert "version '2.0'" in str(caught.value)
            assert monitor.mismatched == 1 and monitor.rejected == 0
            # the monitor is still usable: the caller decides whether to go on
            plain.publish("metrics.episode", _episode_body(rank=5))
            event = monitor.receive(timeout=10)
            assert event is not None and event.message.rank == 5
    finally:
        plain.close()


# -- a controller restart -----------------------------------------------------------------------------------


def test_monitor_survives_a_controller_restart(tmp_path):
    ports = free_ports(4)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    first = start_controller(tmp_path / "a", ports)
    second = None
    try:
        with Monitor(first.bus_out, ("control.state",)) as monitor:

            def beacon_of(run_id: str | None) -> Callable[[], Received | None]:
                def check():
                    event = monitor.receive(timeout=0.5)
                    if event is None or not isinstance(event.message, RunStateChanged):
                        return None
                    return event if run_id is None or event.envelope.run_id != run_id else None

                return check

            before = wait_until(beacon_of(None), timeout=10, interval=0, message="no beacon from the first controller")
            snapshot = monitor.snapshot(first.controller)
            assert snapshot.run_id == before.envelope.run_id and snapshot.state is RunState.STARTING

            assert stop(first.proc) == 0, log_text(first.proc)
            last_words = [e.message.state for e in monitor.events(idle_timeout=1.0)]  # then the bus is gone: no error
            assert last_words[-1] is RunState.STOPPED, last_words
            second = start_controller(tmp_path / "b", ports)
            after = wait_until(
                beacon_of(before.envelope.run_id),
                timeout=30,
                interval=0,
                message="the monitor never heard the restarted controller",
            )
            assert after.envelope.sender == "controller" and after.envelope.run_id != before.envelope.run_id
            assert monitor.missed == 0 and monitor.rejected == 0  # a new run's seq restarts: not a gap
    finally:
        for running in (first, second):
            if running is not None:
                stop(running.proc)


# -- dynamicrl watch ----------------------------------------------------------------------------------------


def test_watch_prints_a_line_for_published_train_metrics(controller, ctx, tmp_path, member):
    env = user_env(PYTHONUNBUFFERED="1")
    command = [
        *CLI,
        "watch",
        "--topic",
        "metrics.train",
        "--count",
        "1",
        "--timeout",
        "20",
        f"addresses.bus_out={controller.bus_out}",
    ]
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    publisher = Publisher(member("learner.watch-test"), controller.bus_in, "learner.watch-test")
    metrics = TrainMetrics(
        iteration=42,
        env_steps=10_752,
        sps=2048.0,
        return_mean=187.25,
        episodes=4,
        values={"policy_loss": -0.0125, "value_loss": 3.5, "entropy": 0.61, "lr": 1e-4},
    )
    try:
        deadline = time.monotonic() + 40
        while proc.poll() is None and time.monotonic() < deadline:
            publisher.publish(metrics)
            time.sleep(0.2)
        out, err = proc.communicate(timeout=10)
    finally:
        publisher.close()
        if proc.poll() is None:
            stop(proc)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{out}\nstderr:\n{err}"
    lines = out.splitlines()
    assert len(lines) == 1, out
    line = lines[0]
    for part in (
        "train",
        "iter 42",
        "steps 10752",
        "return 187.2",
        "sps 2048",
        "policy_loss -0.0125",
        "value_loss 3.5",
        "entropy 0.61",
    ):
        assert part in line, f"{part!r} not in {line!r}"
    assert "Traceback" not in err
