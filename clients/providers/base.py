"""Provider: publish timestamped chunks of one external stream on the bus.

```python
with Provider("tcp://127.0.0.1:5551", "my-eeg", ["Fz", "Cz"], rate=250.0) as provider:
    provider.publish(timestamps, samples, derived={"engagement": 0.4})
```

The topic is ``external.<stream>``. The envelope's ``seq`` numbers every message
the provider's socket sends (so monitors detect loss); ``chunk`` in the body is
the provider's own counter of the chunks of its stream. Publishing never blocks:
a full queue drops the chunk (receivers see the gap in its sequence numbers).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import zmq

from dynamicrl.protocol import security
from dynamicrl.protocol.messages import ExternalSample, stream_topic
from dynamicrl.protocol.sockets import Publisher


class Provider:
    """A Publisher connected to ``bus_in`` that sends :class:`ExternalSample` chunks of ``stream``."""

    def __init__(
        self,
        bus_in: str,
        stream: str,
        channels: Sequence[str],
        rate: float,
        *,
        sender: str | None = None,
        run_id: str | None = None,
        ctx: zmq.Context | None = None,
    ) -> None:
        self.topic = stream_topic(stream)  # validates the name
        self.stream, self.channels, self.rate = stream, list(channels), float(rate)
        self._own_ctx = ctx is None
        self.ctx = security.context() if ctx is None else ctx
        self.publisher = Publisher(self.ctx, bus_in, sender or f"provider.{stream}.{os.getpid()}", run_id)
        self.chunk = 0

    def message(
        self, timestamps: np.ndarray, samples: np.ndarray, derived: Mapping[str, float] | None = None
    ) -> ExternalSample:
        return ExternalSample(
            stream=self.stream,
            channels=self.channels,
            rate=self.rate,
            chunk=self.chunk,
            timestamps=np.ascontiguousarray(timestamps, dtype=np.float64).reshape(-1),
            samples=np.ascontiguousarray(samples, dtype=np.float32).reshape(-1, len(self.channels)),
            derived={k: float(v) for k, v in (derived or {}).items()},
        )

    def publish(
        self, timestamps: np.ndarray, samples: np.ndarray, derived: Mapping[str, float] | None = None
    ) -> ExternalSample:
        """Send one chunk (``n`` timestamps, ``[n, channels]`` samples); returns what was sent."""
        message = self.message(timestamps, samples, derived)
        self.publisher.publish(message)
        self.chunk += 1
        return message

    def close(self) -> None:
        self.publisher.close()
        if self._own_ctx:
            self.ctx.term()

    def __enter__(self) -> Provider:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


__all__ = ["Provider"]
