"""Lab Streaming Layer bridge: resolve an LSL stream, pull chunks, republish them as ExternalSample.

Needs pylsl (``pip install 'dynamicrl[lsl]'``; its wheels ship liblsl). The bus
stream name defaults to the LSL stream's name (made topic-safe). Timestamps are
LSL's (``pylsl.local_clock()`` base, corrected by ``time_correction`` when
``correct_clock``). ``derived`` can compute scalars from a rolling window
(e.g. an engagement index); by default none are sent.
"""

from __future__ import annotations

import logging
import re
import signal
import time
from collections.abc import Callable, Mapping

import numpy as np

log = logging.getLogger(__name__)


class LSLUnavailable(RuntimeError):
    """pylsl (or its liblsl) cannot be loaded here."""


def import_pylsl():
    try:
        import pylsl
    except (ImportError, RuntimeError, OSError) as exc:  # pylsl raises RuntimeError when liblsl is missing
        raise LSLUnavailable(f"pylsl is not usable here ({exc}); pip install 'dynamicrl[lsl]'") from None
    return pylsl


def safe_stream_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".-") or "lsl"
    return cleaned[:64]


def resolve(name: str | None = None, type_: str | None = None, timeout: float = 5.0):
    """The first LSL StreamInfo whose name (or else type) matches; LookupError if none within ``timeout``."""
    pylsl = import_pylsl()
    if (name is None) == (type_ is None):
        raise ValueError("give exactly one of name or type")
    prop, value = ("name", name) if name is not None else ("type", type_)
    found = pylsl.resolve_byprop(prop, value, 1, timeout)
    if not found:
        raise LookupError(f"no LSL stream with {prop}={value!r} within {timeout} s")
    return found[0]


def channel_labels(info, count: int) -> list[str]:
    """Channel labels from the stream's XML description, or ch0..chN-1."""
    labels: list[str] = []
    try:
        ch = info.desc().child("channels").child("channel")
        while not ch.empty() and len(labels) < count:
            labels.append(ch.child_value("label") or f"ch{len(labels)}")
            ch = ch.next_sibling()
    except Exception:  # a malformed description is not worth failing for
        labels = []
    return labels if len(labels) == count else [f"ch{i}" for i in range(count)]


class LSLBridge:
    """Pull chunks from one LSL inlet and publish them through a :class:`Provider`."""

    def __init__(
        self,
        bus_in: str,
        info,
        *,
        stream: str | None = None,
        max_chunk: int = 1024,
        correct_clock: bool = True,
        derived: Callable[[np.ndarray, np.ndarray], Mapping[str, float]] | None = None,
    ) -> None:
        from .base import Provider

        pylsl = import_pylsl()
        self.inlet = pylsl.StreamInlet(info, max_chunklen=max_chunk, recover=True)
        full = self.inlet.info(timeout=5.0)
        count = full.channel_count()
        self.stream = stream or safe_stream_name(full.name())
        self.provider = Provider(
            bus_in, self.stream, channel_labels(full, count), full.nominal_srate(), sender=f"provider.lsl.{self.stream}"
        )
        self.max_chunk, self.correct_clock, self.derived = max_chunk, correct_clock, derived
        self.samples_in = 0

    def pump(self, timeout: float = 0.2) -> int:
        """Pull what is waiting (up to ``timeout`` s for the first sample) and publish it; samples moved."""
        data, stamps = self.inlet.pull_chunk(timeout=timeout, max_samples=self.max_chunk)
        if not stamps:
            return 0
        samples = np.asarray(data, dtype=np.float32).reshape(len(stamps), -1)
        timestamps = np.asarray(stamps, dtype=np.float64)
        if self.correct_clock:
            timestamps = timestamps + self.inlet.time_correction(timeout=1.0)
        extra = dict(self.derived(timestamps, samples)) if self.derived else {}
        self.provider.publish(timestamps, samples, extra)
        self.samples_in += len(stamps)
        return len(stamps)

    def close(self) -> None:
        try:
            self.inlet.close_stream()
        finally:
            self.provider.close()


def run(
    bus_in: str,
    *,
    name: str | None = None,
    type_: str | None = None,
    stream: str | None = None,
    resolve_timeout: float = 10.0,
    duration: float | None = None,
) -> int:
    """Bridge the first matching LSL stream until ``duration`` s (None: until SIGTERM/SIGINT); samples moved."""
    info = resolve(name, type_, resolve_timeout)
    bridge = LSLBridge(bus_in, info, stream=stream)
    stop = {"now": False}

    def _stop(_signum, _frame):
        stop["now"] = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop)
    log.info(
        "lsl: bridging %r (%d channels at %.1f Hz) to %s as %s",
        info.name(),
        info.channel_count(),
        info.nominal_srate(),
        bus_in,
        bridge.provider.topic,
    )
    deadline = None if duration is None else time.monotonic() + duration
    try:
        while not stop["now"] and (deadline is None or time.monotonic() < deadline):
            bridge.pump()
    finally:
        bridge.close()
    return bridge.samples_in


__all__ = ["LSLBridge", "LSLUnavailable", "channel_labels", "import_pylsl", "resolve", "run", "safe_stream_name"]
