"""External streams steering a real run: a controller, learner, env-runner and logger on CartPole,
the mock BCI provider and the engagement rule as `dynamicrl` subprocesses, garbage from a
misbehaving provider, and the Lab Streaming Layer bridge against a real LSL outlet."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq
from helpers import (
    base_overrides,
    controller_status,
    endpoint,
    free_ports,
    log_text,
    logs,
    start_module,
    start_service,
    stop_all,
    wait_until,
)

from dynamicrl.clients.monitor import Monitor
from dynamicrl.protocol import security
from dynamicrl.protocol.codec import Session
from dynamicrl.protocol.messages import ExternalSample, RunState
from dynamicrl.protocol.sockets import connect


def start_cli(args: list[str], tmp_path: Path, name: str) -> subprocess.Popen:
    """`dynamicrl ARGS` with output in tmp_path/<name>.log (``proc.log_path``)."""
    return start_module("dynamicrl.clients.cli", args, tmp_path, name)


def _garbage(stream_topic: bytes) -> list[list[bytes]]:
    """What a broken provider might send: noise, bad msgpack, unknown types, another major version,
    a valid ExternalSample under the wrong topic, arrays that do not match the body."""
    good = [
        bytes(f)
        for f in Session("provider.broken").encode(
            ExternalSample(
                stream="mock-bci",
                channels=["a", "b"],
                rate=10.0,
                timestamps=np.arange(3.0),
                samples=np.zeros((3, 2), np.float32),
            )
        )
    ]
    payload = msgpack.unpackb(good[1], raw=False)

    def repack(**changes) -> bytes:
        return msgpack.packb({**payload, **changes}, use_bin_type=True)

    return [
        [os.urandom(64)],
        [stream_topic, b"\xc1 not msgpack"],
        [b"metrics.train", b"\xc1 not msgpack either"],  # the logger subscribes to this one
        [b"external.test", repack(type="external.test")],  # unknown type
        [stream_topic, repack(v="9.0"), *good[2:]],  # another major version
        [b"metrics.train", repack(v="9.0", type="metrics.train")],
        [b"external.sample", good[1], *good[2:]],  # right message, wrong topic
        [stream_topic, good[1], good[2]],  # an array frame missing
        [stream_topic, good[1], good[2], b"\x00" * 5],  # an array of the wrong size
    ]


@pytest.mark.e2e
def test_engagement_rule_patches_a_live_run_through_the_controller(tmp_path):
    ports = free_ports(4)
    control, bus_in, bus_out = endpoint(ports[0]), endpoint(ports[1]), endpoint(ports[2])
    overrides = [
        *base_overrides(tmp_path, ports),
        "run.envrunners=1",
        "run.total_env_steps=400000",
        "env.num_envs=4",
        "logger.tensorboard=false",
    ]
    services = [start_service(name, overrides, tmp_path) for name in ("controller", "learner", "envrunner", "logger")]
    clients: list[subprocess.Popen] = []
    procs = services
    try:
        provider = start_cli(
            ["provider", "mock-bci", "--seed", "3", "--rate", "250", "--channels", "4", "--chunk", "25", *overrides],
            tmp_path,
            "provider",
        )
        rule = start_cli(
            [
                "rule",
                "engagement",
                "--param",
                "ppo.ent_coef",
                "--low",
                "0.3",
                "--min",
                "0.0",
                "--max",
                "0.05",
                "--step",
                "0.005",
                "--every-iterations",
                "3",
                *overrides,
            ],
            tmp_path,
            "rule",
        )
        # a rule whose every patch the controller refuses (ent_coef <= 1): logged, and it keeps running
        bad_rule = start_cli(
            [
                "rule",
                "engagement",
                "--param",
                "ppo.ent_coef",
                "--low",
                "0.3",
                "--min",
                "2",
                "--max",
                "3",
                "--step",
                "1",
                "--every-iterations",
                "2",
                "--author",
                "rule:bad",
                *overrides,
            ],
            tmp_path,
            "bad-rule",
        )
        clients = [provider, rule, bad_rule]
        procs = [*services, *clients]

        def alive():
            dead = [p for p in procs if p.poll() is not None]
            assert not dead, f"a process exited early:\n{logs(procs, tail=2500)}"

        def running():
            alive()
            status = controller_status(control)
            return status if status and status.state is RunState.RUNNING and status.ltime else None

        wait_until(running, timeout=120, interval=0.3, message="the run never started iterating")

        # the provider's stream is on the bus, under its own topic
        with Monitor(bus_out, "external.mock-bci") as monitor:
            event = monitor.receive(15)
            assert event is not None and isinstance(event.message, ExternalSample), "no external.mock-bci chunk"
            assert event.message.samples.shape[1] == 4 and "engagement" in event.message.derived
            assert event.envelope.sender.startswith("provider.mock-bci")

        # garbage from a broken provider (with a member's key, so its readable garbage may reach the logger):
        # what does not say who sent it is dropped by the bus, the rest by the logger; training goes on
        ctx = security.context(role="envrunner", name="provider.broken")
        pub = ctx.socket(zmq.PUB)
        pub.setsockopt(zmq.LINGER, 0)
        connect(pub, bus_in)
        try:

            def garbage_arrived() -> bool:  # resent until the PUB's connection is up and the logger saw it
                for frames in _garbage(b"external.mock-bci"):
                    pub.send_multipart(frames)
                return "dropped a bad bus message" in log_text(services[3])

            wait_until(garbage_arrived, timeout=30, interval=0.1, message="the logger never saw the garbage")
        finally:
            pub.close(linger=0)
            ctx.term()

        journal = Path(running().run_dir) / "patches.jsonl"

        def rule_entries():
            alive()
            if not journal.exists():
                return None
            entries = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
            return [e for e in entries if e["author"] == "rule:engagement"] or None

        entries = wait_until(rule_entries, timeout=120, interval=0.5, message="no patch by rule:engagement")
        for entry in entries:
            new = entry["changes"]["ppo.ent_coef"]["new"]
            assert 0.0 <= new <= 0.05 and new > entry["changes"]["ppo.ent_coef"]["old"]
        assert not any(e["author"] == "rule:bad" for e in json.loads(f"[{','.join(journal.read_text().split())}]"))

        # training keeps running after the patch, and the refusing rule is still there, refusing
        before = running().ltime.iteration
        wait_until(
            lambda: running().ltime.iteration >= before + 3,
            timeout=60,
            interval=0.3,
            message="training stopped after the rule's patch",
        )
        wait_until(
            lambda: log_text(bad_rule).count("refused") >= 2,
            timeout=60,
            interval=0.5,
            message=f"the refusing rule did not keep trying:\n{log_text(bad_rule)}",
        )
        alive()
        assert "dropped a bad bus message" in log_text(services[3]), log_text(services[3])[-2000:]
        status = running()
        assert status.security is not None and status.security.dropped_bus > 0, status.security
        assert status.state is RunState.RUNNING
        assert "rule: engagement" in log_text(rule)
    finally:
        stop_all([*clients, *services], timeout=15)


# -- the Lab Streaming Layer bridge ------------------------------------------------------------------


def _pylsl():
    pylsl = pytest.importorskip("pylsl", reason="pylsl is not installed (pip install 'dynamicrl[lsl]')")
    try:
        pylsl.StreamOutlet(pylsl.StreamInfo(f"probe-{uuid.uuid4().hex[:6]}", "probe", 1, 10, "float32", "probe"))
    except Exception as exc:  # the wheel loads but liblsl cannot run here
        pytest.skip(f"liblsl cannot create an outlet on this machine: {exc}")
    return pylsl


def test_lsl_bridge_republishes_a_real_outlet(tmp_path):
    pylsl = _pylsl()
    name = f"dynrl-test-{uuid.uuid4().hex[:8]}"
    info = pylsl.StreamInfo(name, "EEG", 3, 100.0, "float32", name)
    chans = info.desc().append_child("channels")
    for label in ("Fz", "Cz", "Pz"):
        chans.append_child("channel").append_child_value("label", label)
    outlet = pylsl.StreamOutlet(info)
    stop = threading.Event()

    def push():
        k = 0
        while not stop.is_set():
            outlet.push_chunk([[float(k + i), float(-(k + i)), 0.5] for i in range(10)])
            k += 10
            time.sleep(0.1)

    pusher = threading.Thread(target=push, daemon=True)
    pusher.start()
    ports = free_ports(4)
    overrides = base_overrides(tmp_path, ports)
    controller = start_service("controller", overrides, tmp_path)  # its bus is all the bridge needs
    bridge = None
    try:
        wait_until(lambda: controller_status(endpoint(ports[0])), timeout=30, message="controller never answered")
        bridge = start_cli(
            ["provider", "lsl", "--name", name, "--resolve-timeout", "20", "--duration", "60", *overrides],
            tmp_path,
            "lsl",
        )
        with Monitor(endpoint(ports[2]), f"external.{name}") as monitor:
            got = []
            for event in monitor.events(timeout=40):
                assert isinstance(event.message, ExternalSample)
                got.append(event.message)
                if sum(len(m.timestamps) for m in got) >= 30:
                    break
        assert got, f"nothing bridged:\n{log_text(bridge)}"
        first = got[0]
        assert first.stream == name and first.channels == ["Fz", "Cz", "Pz"] and first.rate == 100.0
        samples = np.concatenate([m.samples for m in got])
        assert samples.dtype == np.float32 and samples.shape[1] == 3
        assert np.array_equal(samples[:, 1], -samples[:, 0]) and np.all(samples[:, 2] == 0.5)
        assert np.all(np.diff(samples[:, 0]) == 1.0)  # in order, nothing lost between chunks
        assert [m.chunk for m in got] == list(range(got[0].chunk, got[0].chunk + len(got)))
        stamps = np.concatenate([m.timestamps for m in got])
        assert stamps.dtype == np.float64 and np.all(np.diff(stamps) >= 0)
    finally:
        stop.set()
        stop_all([p for p in (bridge, controller) if p is not None], timeout=10)
        pusher.join(timeout=2)
