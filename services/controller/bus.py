"""XSUB <-> XPUB forwarding, driven by its owner's poll loop.

The proxy runs inside the controller's loop rather than ``zmq.proxy`` in a
thread, so the controller sees every bus message it forwards (it keeps the
latest train metrics for ``status``) without a subscription of its own.
XPUB drops for a subscriber whose queue is full, so a slow monitor never
slows a publisher.
"""

from __future__ import annotations

import time

import zmq

from dynamicrl.protocol.sockets import bind, make_socket

BUS_HWM = 10_000
#: At most this many messages forwarded per ``pump``: a publisher faster than the forwarding must not
#: keep the owner's loop (the controller's commands, its timers) waiting behind an endless flood.
PUMP_BATCH = 1_000


class BusProxy:
    def __init__(self, ctx: zmq.Context, bus_in: str, bus_out: str) -> None:
        self.xsub = make_socket(ctx, zmq.XSUB, hwm=BUS_HWM)
        self.xpub = make_socket(ctx, zmq.XPUB, hwm=BUS_HWM)
        self.in_endpoint = bind(self.xsub, bus_in)
        self.out_endpoint = bind(self.xpub, bus_out)
        self.forwarded = 0

    def tap(self, prefix: str) -> None:
        """Pull ``prefix`` through the proxy even when no subscriber wants it, so the owner sees it."""
        self.xsub.send(b"\x01" + prefix.encode())

    def register(self, poller: zmq.Poller) -> None:
        poller.register(self.xsub, zmq.POLLIN)
        poller.register(self.xpub, zmq.POLLIN)

    def pump(self, events: dict) -> list[list[zmq.Frame]]:
        """Forward what is waiting both ways (downstream, up to ``PUMP_BATCH``); return what went downstream."""
        passed = []
        if self.xpub in events:  # (un)subscriptions travel upstream to publishers
            while self.xpub.poll(0):
                self.xsub.send_multipart(self.xpub.recv_multipart())
        if self.xsub in events:
            for _ in range(PUMP_BATCH):
                if not self.xsub.poll(0):
                    break
                frames = self.xsub.recv_multipart(copy=False)
                self.xpub.send_multipart(frames, copy=False)
                self.forwarded += 1
                passed.append(frames)
        return passed

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
