"""Monitor: watch a run's bus from Python, as typed and validated events.

```python
from dynamicrl.clients.monitor import Monitor
from dynamicrl.protocol.messages import TrainMetrics

with Monitor("tcp://127.0.0.1:5552", prefixes=("metrics.", "control.")) as monitor:
    for event in monitor.events(timeout=60):          # ends after 60 s
        if isinstance(event.message, TrainMetrics):
            print(event.envelope.sender, event.message.iteration, event.message.return_mean)
    print("missed", monitor.missed, "undecodable", monitor.rejected)
```

A :class:`Monitor` is one SUB socket connected to the bus's XPUB side
(``addresses.bus_out``). What it yields are :class:`Received` (the envelope and
the message model), fully validated by the codec. It never raises for a bad
frame: garbage, unknown types and schema violations are logged (rate-limited)
and counted in ``rejected``. It does raise :class:`ProtocolVersionMismatch` for
a message of another major protocol version, since then the bus (or that peer)
speaks a contract this code does not know; the monitor stays usable afterwards.

PUB/SUB loses messages silently (a late subscription, a full queue); every
sender numbers its messages, so the monitor counts the holes per sender in
``missed_by_sender`` (total: ``missed``). ZeroMQ reconnects by itself, so a
monitor survives a controller restart: it just sees the new run's messages (a
new ``run_id``; sequence numbers start again from 0, which is not a gap).

Nobody else sees those holes: the bus drops silently. With ``report_to`` (the
controller's command address, ``addresses.controller``) the monitor sends its
counts to the controller as ``control.monitor_report`` at most every
``report_every_s`` (from :meth:`Monitor.receive`, so only while you read) and
when it closes, and ``dynamicrl status`` lists them under ``monitors``. A report
that fails (no controller, timeout) is logged once and never raised; it waits
at most ``REPORT_TIMEOUT_S``.

A subscription takes a moment to reach the bus: what is published before that
is not received. For the current state of the run, ask for it after
subscribing: :meth:`Monitor.snapshot` (the "clone" pattern: subscribe first,
then ask, so nothing falls between the two).

Not thread-safe (one ZeroMQ socket): use a monitor from one thread.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence

import zmq

from dynamicrl.protocol import PROTOCOL_VERSION, security
from dynamicrl.protocol.codec import ProtocolError, ProtocolVersionMismatch, Received, decode
from dynamicrl.protocol.messages import ErrorReply, MonitorReport, StatusReply
from dynamicrl.protocol.sockets import SMALL_MESSAGE_BYTES, GapCounter, Requester, connect, make_socket

log = logging.getLogger(__name__)

#: Receive high-water mark of a monitor's SUB socket (the bus's XPUB keeps 10,000 per subscriber too).
MONITOR_HWM = 10_000
#: Longest single blocking wait, so Ctrl-C and deadlines are honoured promptly.
_POLL_SLICE_S = 0.25
#: At most one log line per kind of trouble per this many seconds (a flood must not flood the log).
_LOG_EVERY_S = 1.0
#: Longest wait for the controller to acknowledge a report (one attempt, no retry).
REPORT_TIMEOUT_S = 0.5
#: After a failed report, the next attempt comes no sooner than this (a dead controller costs little).
_REPORT_RETRY_S = 10.0
_instances = itertools.count(1)


class Monitor:
    """Subscribe to ``prefixes`` of the bus at ``endpoint`` and yield validated events.

    ``prefixes``: topic prefixes (``"metrics."``, ``"control.state"``; ``""`` is
    everything). ``hwm``: receive queue length before ZeroMQ drops (counted as
    ``missed`` once later messages arrive). ``on_gap(sender, count)`` and
    ``on_reject(error)`` are called when messages are found missing or a frame
    is refused, besides the log line. ``ctx``: a ZeroMQ context to share (by
    default the monitor makes and terminates its own). ``report_to``: the
    controller's command address to report received and missed counts to, every
    ``report_every_s`` and on close, as ``name`` (default ``monitor.<pid>``; one
    entry per name in ``dynamicrl status``). None (the default): no reports.
    """

    def __init__(
        self,
        endpoint: str,
        prefixes: Sequence[str] = ("",),
        *,
        hwm: int = MONITOR_HWM,
        ctx: zmq.Context | None = None,
        on_gap: Callable[[str, int], None] | None = None,
        on_reject: Callable[[ProtocolError], None] | None = None,
        report_to: str | None = None,
        report_every_s: float = 2.0,
        name: str | None = None,
    ) -> None:
        if isinstance(prefixes, str):  # Monitor(url, "metrics.") means one prefix, not 8 letters
            prefixes = (prefixes,)
        k = next(_instances)
        self.name = name or f"monitor.{os.getpid()}" + (f".{k}" if k > 1 else "")
        if not 0 < len(self.name) <= 128:
            raise ValueError(f"a monitor name has 1 to 128 characters, not {len(self.name)}")
        self.endpoint = endpoint
        self.prefixes = tuple(prefixes)
        self._own_ctx = ctx is None
        self.ctx = security.context() if ctx is None else ctx
        self.socket = make_socket(self.ctx, zmq.SUB, hwm=hwm, maxmsgsize=SMALL_MESSAGE_BYTES)
        for prefix in self.prefixes:
            self.socket.setsockopt(zmq.SUBSCRIBE, prefix.encode())
        connect(self.socket, endpoint)
        self.on_gap, self.on_reject = on_gap, on_reject
        #: valid events received (yielded or buffered)
        self.received = 0
        #: frames refused as garbage (undecodable, unknown type, invalid), not counting version mismatches
        self.rejected = 0
        #: messages of another major protocol version (each one raised ProtocolVersionMismatch)
        self.mismatched = 0
        #: holes in the senders' sequence numbers (per sender, run and topic): messages known lost
        self.gaps = GapCounter()
        self._pending: deque[Received] = deque()
        self._logged: dict[str, tuple[float, int]] = {}
        self.report_every_s = report_every_s
        self._reporter = (
            None
            if report_to is None
            else Requester(self.ctx, report_to, f"client.{os.getpid()}", timeout_s=REPORT_TIMEOUT_S, retries=0)
        )
        self._next_report = time.monotonic()  # the first report goes with the first receive
        #: reports the controller acknowledged
        self.reports_sent = 0
        #: why the last report failed; None once one succeeds
        self.report_error: str | None = None
        self.closed = False

    # -- receiving ---------------------------------------------------------------------------

    @property
    def missed_by_sender(self) -> dict[str, int]:
        """Messages known lost, per sender name."""
        return self.gaps.by_sender

    @property
    def missed(self) -> int:
        """Messages known lost, all senders together."""
        return self.gaps.missed

    def receive(self, timeout: float | None = None) -> Received | None:
        """The next valid event, or None once ``timeout`` seconds pass without one (None: wait forever).

        Bad frames met meanwhile are counted and skipped; a message of another
        major version raises :class:`ProtocolVersionMismatch`. With ``report_to``,
        a due report is sent from here (it may add up to ``REPORT_TIMEOUT_S``).
        """
        if self._pending:
            self._report_if_due()
            return self._pending.popleft()
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        while True:
            self._report_if_due()
            wait = _POLL_SLICE_S if deadline is None else min(_POLL_SLICE_S, max(deadline - time.monotonic(), 0.0))
            if self.socket.poll(int(wait * 1000)):
                event = self._take(self.socket.recv_multipart(copy=False))
                if event is not None:
                    return event
            elif deadline is not None and time.monotonic() >= deadline:
                return None

    def events(self, timeout: float | None = None, *, idle_timeout: float | None = None) -> Iterator[Received]:
        """Yield events until ``timeout`` seconds have passed since the call (None: forever),
        or until none has come for ``idle_timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = idle_timeout
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                wait = left if wait is None else min(wait, left)
            event = self.receive(wait)
            if event is None:
                return
            yield event

    def __iter__(self) -> Iterator[Received]:
        """Every event, forever (until an exception, Ctrl-C or :meth:`close`)."""
        return self.events()

    def run(
        self,
        callback: Callable[[Received], object],
        *,
        until: Callable[[Received], bool] | None = None,
        timeout: float | None = None,
    ) -> Received | None:
        """Call ``callback(event)`` for each event; stop after the first event for which
        ``until(event)`` is true (and return it), or after ``timeout`` seconds (and return None)."""
        for event in self.events(timeout):
            callback(event)
            if until is not None and until(event):
                return event
        return None

    def snapshot(self, control_endpoint: str, *, timeout_s: float = 2.0, live_timeout_s: float = 1.0) -> StatusReply:
        """The controller's ``StatusReply``, asked for after this monitor's subscription is live.

        If no event has arrived yet, waits up to ``live_timeout_s`` for one (with
        ``control.`` subscribed, a state beacon comes every 0.5 s) and keeps it for
        the next :meth:`receive`, so events after the snapshot are not missed.
        Raises ``RequestTimeout`` when no controller answers within the timeout
        (two attempts) and ``ControlError`` when it refuses.
        """
        from dynamicrl.clients.control import ControlClient

        if self.received == 0 and not self._pending:
            first = self.receive(live_timeout_s)
            if first is not None:
                self._pending.appendleft(first)
        with ControlClient(control_endpoint, timeout_s=timeout_s) as client:
            return client.status()

    def report(self, final: bool = False) -> bool:
        """Send the counts to the controller now (needs ``report_to``); True when it acknowledged.

        Never raises for a missing or failing controller: the first failure is logged as a
        warning (the next ones at debug level, until a report goes through again).
        """
        if self._reporter is None:
            return False
        now = time.monotonic()
        self._next_report = now + self.report_every_s
        report = MonitorReport(
            name=self.name,
            topics=list(self.prefixes),
            received=self.received,
            missed=self.missed,
            missed_by_sender=dict(self.missed_by_sender),
            rejected=self.rejected + self.mismatched,
            final=final,
        )
        try:
            reply = self._reporter.request(report)
            if isinstance(reply, ErrorReply):
                raise ProtocolError(f"the controller refused the report: {reply.code.value}: {reply.message}")
        except Exception as exc:  # a report must never break the caller's loop
            (log.debug if self.report_error else log.warning)(
                "could not report to the controller at %s: %s (trying again in %g s)",
                self._reporter.endpoint,
                exc,
                max(self.report_every_s, _REPORT_RETRY_S),
            )
            self.report_error = str(exc) or type(exc).__name__
            self._next_report = now + max(self.report_every_s, _REPORT_RETRY_S)
            return False
        self.reports_sent += 1
        self.report_error = None
        return True

    # -- internals ---------------------------------------------------------------------------

    def _report_if_due(self) -> None:
        if self._reporter is not None and time.monotonic() >= self._next_report:
            self.report()

    def _take(self, frames: list) -> Received | None:
        try:
            event = decode(frames)
        except ProtocolVersionMismatch as exc:
            self.mismatched += 1
            log.error("%s; this monitor speaks protocol %s", exc, PROTOCOL_VERSION)
            raise
        except ProtocolError as exc:
            self.rejected += 1
            self._warn("reject", "skipped an undecodable bus message: %s", exc)
            if self.on_reject is not None:
                self.on_reject(exc)
            return None
        self.received += 1
        gap = self.gaps.see(event)
        if gap:
            sender = event.envelope.sender
            self._warn("gap", "missed %d message(s) from %s on the bus", gap, sender)
            if self.on_gap is not None:
                self.on_gap(sender, gap)
        return event

    def _warn(self, kind: str, text: str, *args: object) -> None:
        now = time.monotonic()
        last, quiet = self._logged.get(kind, (float("-inf"), 0))
        if now - last < _LOG_EVERY_S:
            self._logged[kind] = (last, quiet + 1)
            return
        if quiet:
            text += f" (and {quiet} more like it in the last {now - last:.1f} s)"
        log.warning(text, *args)
        self._logged[kind] = (now, 0)

    # -- lifetime ----------------------------------------------------------------------------

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._reporter is not None:
            self.report(final=True)
            self._reporter.close()
        self.socket.close(linger=0)
        if self._own_ctx:
            self.ctx.term()

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


__all__ = ["MONITOR_HWM", "REPORT_TIMEOUT_S", "Monitor", "ProtocolError", "ProtocolVersionMismatch", "Received"]
