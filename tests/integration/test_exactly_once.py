"""Exactly-once commands: a retry is answered, never applied again, whatever else is asked meanwhile.

The lossy test puts a proxy between a client and a real run's controller that drops a fifth of
the replies, so the client retries (same request id, a new connection) a fifth of its commands
(1,000: 940 patches, 30 pauses with their resumes),
while a second client polls status as fast as it can (a dashboard, a script), the traffic that
pushed a patch's reply out of the old shared 256-reply cache. Every accepted patch must be in the
journal exactly once.
"""

from __future__ import annotations

import random
import threading
import uuid

import msgpack
import pytest
import zmq
from helpers import Run, wait_until
from helpers_members import raw_request

from dynamicrl.clients.control import ControlClient, ControlError
from dynamicrl.protocol import security
from dynamicrl.protocol.codec import Session, decode
from dynamicrl.protocol.messages import (
    ErrorCode,
    ErrorReply,
    ParamsRequest,
    PatchReply,
    PatchRequest,
    PauseRequest,
    ResumeRequest,
    StatusReply,
    StatusRequest,
)
from dynamicrl.protocol.sockets import bind, connect

pytestmark = pytest.mark.e2e

ENDLESS = ["env.num_envs=2", "algo.num_steps=16", "run.total_env_steps=100000000", "logger.console=false"]
PATCHES, PAUSES = 940, 30  # 1,000 commands: 940 patches, 30 pause + resume pairs
DROP = 0.2


class LossyProxy(threading.Thread):
    """REQ clients -> this ROUTER -> one DEALER per client -> the controller; a reply is dropped with
    probability ``DROP`` (the request arrived and was acted on: only the answer is lost)."""

    def __init__(self, controller: str) -> None:
        super().__init__(daemon=True)
        self.controller = controller
        self.ctx = security.context()
        self.front = self.ctx.socket(zmq.ROUTER)
        self.front.setsockopt(zmq.LINGER, 0)
        self.address = bind(self.front, "tcp://127.0.0.1:0")
        self.closing = False
        self.dropped = 0

    def run(self) -> None:
        rng = random.Random(16)
        backs: dict[bytes, zmq.Socket] = {}
        poller = zmq.Poller()
        poller.register(self.front, zmq.POLLIN)
        try:
            while not self.closing:
                for sock, _ in poller.poll(50):
                    if sock is self.front:
                        client, *request = self.front.recv_multipart()  # [id, b"", topic, payload]
                        if client not in backs:
                            backs[client] = self.ctx.socket(zmq.DEALER)
                            backs[client].setsockopt(zmq.LINGER, 0)
                            connect(backs[client], self.controller)
                            poller.register(backs[client], zmq.POLLIN)
                        backs[client].send_multipart(request)
                    else:
                        reply = sock.recv_multipart()
                        if rng.random() < DROP:
                            self.dropped += 1
                            continue
                        client = next(c for c, s in backs.items() if s is sock)
                        self.front.send_multipart([client, *reply])
        finally:
            for sock in [self.front, *backs.values()]:
                sock.close(linger=0)
            self.ctx.term()


def test_retries_through_a_lossy_link_apply_each_command_once(tmp_path):
    with Run(tmp_path, ENDLESS) as run:
        run.start()
        run.wait_iteration(1, timeout=120)
        proxy = LossyProxy(run.endpoint)
        proxy.start()
        polls = 0
        polling = True

        def poll_status() -> None:
            nonlocal polls
            with ControlClient(run.endpoint, timeout_s=5.0, retries=0) as client:
                while polling:
                    client.status()
                    polls += 1

        poller = threading.Thread(target=poll_status, daemon=True)
        poller.start()
        accepted: list[str] = []
        values: dict[str, float] = {}
        commands = ["patch"] * PATCHES + ["pause"] * PAUSES
        random.Random(3).shuffle(commands)
        try:
            with (
                # short timeouts: a lost reply costs little, and a slow one is retried while still in
                # flight (the retry joins the pending request), as often as a lost one
                ControlClient(proxy.address, timeout_s=0.06, retries=30) as quick,
                ControlClient(proxy.address, timeout_s=0.5, retries=12) as slow,
            ):
                for i, command in enumerate(commands):
                    if command == "pause":
                        slow.call(PauseRequest())
                        slow.call(ResumeRequest())
                        continue
                    lr = 1e-4 + i * 1e-9
                    try:
                        reply = quick.call(PatchRequest(changes={"ppo.lr": lr}, author="lossy", wait=False))
                    except ControlError as exc:  # refused as a whole (e.g. while a pause is released)
                        assert exc.reply.code is ErrorCode.CONFLICT, exc
                        continue
                    assert isinstance(reply, PatchReply)
                    accepted.append(reply.patch_id)
                    values[reply.patch_id] = lr
        finally:
            polling = False
            poller.join(timeout=10)
            proxy.closing = True
            proxy.join(timeout=10)
        assert proxy.dropped >= 0.1 * len(commands), proxy.dropped  # the link really lost replies
        assert polls > 1000, polls  # and read-only traffic really ran between the retries
        assert len(set(accepted)) == len(accepted) >= PATCHES - 3 * PAUSES

        def all_journaled() -> list[dict] | None:
            run.check_alive()
            entries = [e for e in run.journal() if e["author"] == "lossy"]
            return entries if len(entries) >= len(accepted) else None

        entries = wait_until(
            all_journaled, timeout=60, interval=0.5, message="accepted patches missing from the journal"
        )
        assert sorted(e["patch_id"] for e in entries) == sorted(accepted)  # each exactly once
        assert all(e["changes"]["ppo.lr"]["new"] == values[e["patch_id"]] for e in entries)
        assert run.params()["ppo.lr"] == values[accepted[-1]]


def _raw(address: str, frames: list) -> tuple:
    received = decode(raw_request(address, frames, timeout=5))
    return received.envelope, received.message


def test_an_id_reused_for_another_request_is_refused(controller):
    request_id = uuid.uuid4().hex
    _, first = _raw(controller.controller, Session("c").encode(StatusRequest(), msg_id=request_id))
    assert isinstance(first, StatusReply)
    envelope, other = _raw(controller.controller, Session("c").encode(ParamsRequest(), msg_id=request_id))
    assert isinstance(other, ErrorReply) and other.code is ErrorCode.BAD_MESSAGE, other
    assert "was used for another request" in other.message and envelope.parent == request_id
    _, again = _raw(controller.controller, Session("c").encode(StatusRequest(), msg_id=request_id))
    assert again == first  # the first request's retry still gets its own reply


def test_a_refused_request_names_its_id_when_it_can_be_read(controller):
    frames = Session("c").encode(StatusRequest(), msg_id="readable-id")
    payload = msgpack.unpackb(frames[1], raw=False)
    payload["body"] = {"unknown": 1}
    envelope, reply = _raw(controller.controller, [frames[0], msgpack.packb(payload)])
    assert isinstance(reply, ErrorReply) and reply.code is ErrorCode.BAD_MESSAGE, reply
    assert envelope.parent == "readable-id"
