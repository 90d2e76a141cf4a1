"""The bus, for browsers: one subscriber, a bounded buffer of numbered events, any number of readers.

One thread reads the bus through a :class:`Monitor` (validated events, holes counted and reported
to the controller like any monitor's) and appends each event, already JSON, to a ring buffer
under an id that counts up for the dashboard's lifetime. Readers (the SSE streams) keep their own
cursor into that buffer: a reader that stalls only falls behind, it never blocks the bus thread
or another reader, and the events it lost when the buffer moved past it are counted and reported
to it as a gap. That is also how a browser resumes after a dropped connection: its
``Last-Event-ID`` is a cursor.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

from sse_starlette import ServerSentEvent

from dynamicrl.clients.monitor import Monitor
from dynamicrl.protocol import topics
from dynamicrl.protocol.codec import ProtocolVersionMismatch, Received
from dynamicrl.protocol.messages import RunState, RunStateChanged

log = logging.getLogger(__name__)

#: Events kept for readers that fall behind or reconnect.
BUFFER = 4096
PREFIXES = (topics.METRICS, topics.CONTROL)


@dataclass(frozen=True)
class Event:
    id: int
    kind: str  # "bus" or "gap"
    data: str  # JSON
    frame: bytes  # the whole SSE event (id, event, data), encoded once for every reader


@dataclass
class Batch:
    """What a reader gets next: the events after its cursor, and how many it can no longer get."""

    events: list[Event]
    missed: int  # events that left the buffer before this reader read them
    after: int  # the reader's cursor


class EventHub:
    def __init__(self, bus_out: str, report_to: str | None, name: str, buffer: int = BUFFER) -> None:
        self.bus_out, self.report_to, self.name = bus_out, report_to, name
        self.started = int(time.time())  # ids of another dashboard's lifetime are recognised as such
        self.buffer: deque[Event] = deque(maxlen=buffer)
        self.last_id = 0
        self.lock = threading.Lock()
        self.readers = 0
        #: events that readers lost because they fell behind the buffer, over all readers
        self.dropped = 0
        #: bus messages this dashboard knows it lost (sequence holes), and the last run state it saw
        self.missed_on_bus = 0
        self.last_state: RunState | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._wake_scheduled = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read_bus, name="dashboard-bus", daemon=True)

    # -- the bus thread ----------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop, self._wakeup = loop, asyncio.Event()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _read_bus(self) -> None:
        monitor = Monitor(self.bus_out, PREFIXES, report_to=self.report_to, name=self.name, on_gap=self._bus_gap)
        try:
            while not self._stop.is_set():
                try:
                    received = monitor.receive(timeout=0.25)
                except ProtocolVersionMismatch as exc:
                    log.warning("dashboard: %s", exc)
                    continue
                if received is not None:
                    if isinstance(received.message, RunStateChanged):
                        self.last_state = received.message.state
                    self.append("bus", _as_dict(received))
        finally:
            monitor.close()

    def _bus_gap(self, sender: str, count: int) -> None:
        self.missed_on_bus += count
        self.append("gap", {"on_bus": True, "sender": sender, "missed": count})

    def append(self, kind: str, payload: dict) -> None:
        """Number the event and keep it as JSON and as an SSE frame (encoded once, however many read it)."""
        with self.lock:
            self.last_id += 1
            event_id = self.event_id(self.last_id)
            data = json.dumps({"id": event_id, **payload})
            frame = ServerSentEvent(data=data, event=kind, id=event_id).encode()
            self.buffer.append(Event(self.last_id, kind, data, frame))
            if self._wake_scheduled or self._loop is None:
                return
            self._wake_scheduled = True
        self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:  # on the event loop: wake every reader once per burst
        with self.lock:
            self._wake_scheduled = False
        assert self._wakeup is not None
        self._wakeup.set()
        self._wakeup = asyncio.Event()

    # -- readers (on the event loop) ---------------------------------------------------------

    def cursor(self, last_event_id: str | None) -> tuple[int, bool]:
        """Where a reader starts: after its Last-Event-ID (``<started>-<n>``), else after the newest event.
        True with it when the id is another dashboard's (restarted since): the reader gets all there is."""
        if last_event_id:
            started, _, n = last_event_id.partition("-")
            if started == str(self.started) and n.isdigit():
                return min(int(n), self.last_id), False
            return 0, True
        return self.last_id, False

    def oldest(self) -> int:
        with self.lock:
            return self.buffer[0].id if self.buffer else self.last_id + 1

    def stats(self) -> dict:
        return {
            "readers": self.readers,
            "events": self.last_id,
            "buffered": len(self.buffer),
            "buffer": self.buffer.maxlen,
            "dropped_by_readers": self.dropped,
            "missed_on_bus": self.missed_on_bus,
            "state": self.last_state.value if self.last_state is not None else None,
        }

    def event_id(self, n: int) -> str:
        return f"{self.started}-{n}"

    def after(self, cursor: int, limit: int = 256) -> Batch:
        with self.lock:
            oldest = self.buffer[0].id if self.buffer else self.last_id + 1
            missed = max(0, oldest - cursor - 1)
            start = max(cursor + 1, oldest)
            skip = start - oldest
            events = [self.buffer[i] for i in range(skip, min(len(self.buffer), skip + limit))]
            self.dropped += missed
        return Batch(events, missed, cursor)

    async def wait(self, cursor: int, timeout: float) -> None:
        """Until an event after ``cursor`` exists (or ``timeout``)."""
        assert self._wakeup is not None
        wakeup = self._wakeup
        if self.last_id > cursor:
            return
        try:
            await asyncio.wait_for(wakeup.wait(), timeout)
        except asyncio.TimeoutError:  # not the builtin before Python 3.11
            pass


def _as_dict(received: Received) -> dict:
    envelope = received.envelope
    return {
        "topic": received.message.topic(),
        "sender": envelope.sender,
        "ts": envelope.ts,
        "body": received.message.model_dump(mode="json"),
    }
