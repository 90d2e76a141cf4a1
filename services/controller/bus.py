"""XSUB <-> XPUB forwarding, driven by its owner's poll loop.

The proxy runs inside the controller's loop rather than ``zmq.proxy`` in a
thread, so the controller sees every bus message it forwards (it keeps the
latest train metrics for ``status``) without a subscription of its own.
XPUB drops for a subscriber whose queue is full, so a slow monitor never
slows a publisher.

It is also the bus's gate. Upstream, only subscription frames pass (anything else a subscriber
sends would reach every publisher, where nobody reads it). Downstream, a message passes only
when the key that sent it may say it: a member's key publishes under its own name, a client's
(a stream, a rule) only ``external.*`` topics. What is stopped is counted in ``dropped``.
"""

from __future__ import annotations

import time

import zmq

from dynamicrl.protocol import security
from dynamicrl.protocol.codec import MAX_ARRAY_FRAMES, claimed
from dynamicrl.protocol.sockets import SMALL_MESSAGE_BYTES, bind, make_socket
from dynamicrl.protocol.topics import EXTERNAL

BUS_HWM = 10_000
#: At most this many messages forwarded per ``pump``: a publisher faster than the forwarding must not
#: keep the owner's loop (the controller's commands, its timers) waiting behind an endless flood.
PUMP_BATCH = 1_000
#: ... and for at most this long each way.
PUMP_BUDGET_S = 0.02
#: A message of more frames than the codec accepts is dropped unread by anyone downstream.
MAX_FRAMES = 2 + MAX_ARRAY_FRAMES
#: Longest topic prefix a subscriber may ask for (every topic is far shorter).
MAX_TOPIC_BYTES = 256
_EXTERNAL = EXTERNAL.encode()


class BusProxy:
    def __init__(self, ctx: zmq.Context, bus_in: str, bus_out: str) -> None:
        self.xsub = make_socket(ctx, zmq.XSUB, hwm=BUS_HWM, maxmsgsize=SMALL_MESSAGE_BYTES)
        self.xpub = make_socket(ctx, zmq.XPUB, hwm=BUS_HWM, maxmsgsize=SMALL_MESSAGE_BYTES)
        self.in_endpoint = bind(self.xsub, bus_in)
        self.out_endpoint = bind(self.xpub, bus_out)
        self.forwarded = 0
        self.dropped = 0

    def tap(self, prefix: str) -> None:
        """Pull ``prefix`` through the proxy even when no subscriber wants it, so the owner sees it."""
        self.xsub.send(b"\x01" + prefix.encode())

    def register(self, poller: zmq.Poller) -> None:
        poller.register(self.xsub, zmq.POLLIN)
        poller.register(self.xpub, zmq.POLLIN)

    def pump(self, events: dict) -> list[list[zmq.Frame]]:
        """Forward what is waiting both ways, for at most ``PUMP_BATCH`` messages or ``PUMP_BUDGET_S``
        each way (many-frame messages cost more than their count); return what went downstream."""
        passed = []
        if self.xpub in events:  # (un)subscriptions travel upstream to publishers
            deadline = time.monotonic() + PUMP_BUDGET_S
            for _ in range(PUMP_BATCH):
                if time.monotonic() > deadline or not self.xpub.poll(0):
                    break
                upstream = self.xpub.recv_multipart()
                if len(upstream) == 1 and 0 < len(upstream[0]) <= 1 + MAX_TOPIC_BYTES and upstream[0][0] in (0, 1):
                    self.xsub.send_multipart(upstream)
                else:
                    self.dropped += 1
        if self.xsub in events:
            deadline = time.monotonic() + PUMP_BUDGET_S
            for _ in range(PUMP_BATCH):
                if time.monotonic() > deadline or not self.xsub.poll(0):
                    break
                frames = self.xsub.recv_multipart(copy=False)
                if len(frames) > MAX_FRAMES or not self.may_publish(frames):
                    self.dropped += 1
                    continue
                self.xpub.send_multipart(frames, copy=False)
                self.forwarded += 1
                passed.append(frames)
        return passed

    @staticmethod
    def may_publish(frames: list[zmq.Frame]) -> bool:
        """The sender's key allows this message: a client's only on ``external.*``, a member's only
        under its own name (curve off: anything)."""
        peer = security.peer_of(frames[0])
        if peer is None:
            return True
        if peer.role == security.CLIENT:
            return frames[0].bytes.startswith(_EXTERNAL)
        return claimed(frames, "sender") == peer.name

    def drain(self, idle_s: float = 0.1, limit_s: float = 0.3) -> int:
        """Forward what is still on its way (the owner's last messages) until ``idle_s`` of quiet."""
        poller = zmq.Poller()
        self.register(poller)
        forwarded = 0
        deadline = time.monotonic() + limit_s
        while (left := deadline - time.monotonic()) > 0:
            events = dict(poller.poll(int(min(idle_s, left) * 1000)))
            if not events:
                break
            forwarded += len(self.pump(events))
        return forwarded

    def close(self) -> None:
        self.xsub.close()
        self.xpub.close()
