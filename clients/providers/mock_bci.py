"""A deterministic synthetic EEG-like stream, for trying BCI-driven rules without hardware.

Each channel is a sum of theta (6 Hz), alpha (10 Hz) and beta (20 Hz) sinusoids
(per-channel frequency jitter and phase) whose amplitudes drift slowly (sinusoidal
envelopes of periods of tens of seconds), plus Gaussian noise, in microvolts. The
"engagement" index is the classic beta / (alpha + theta) band-power ratio over the
last ``window_s`` seconds, averaged over channels. Everything comes from one
``numpy.random.Generator(PCG64(seed))`` and the sample index, never the clock:
the same seed gives the same samples, chunk after chunk.
"""

from __future__ import annotations

import logging
import signal
import time
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_CHANNELS = ("Fz", "C3", "Cz", "C4", "Pz", "O1", "O2", "Oz")
BANDS = {"theta": (4.0, 8.0), "alpha": (8.0, 13.0), "beta": (13.0, 30.0)}
_CENTRES = {"theta": 6.0, "alpha": 10.0, "beta": 20.0}


@dataclass
class MockBCI:
    """Generates chunks of ``channels`` channels at ``rate`` Hz; ``next_chunk(n)`` is deterministic."""

    seed: int = 0
    rate: float = 250.0
    channels: int = 8
    window_s: float = 2.0
    noise_uv: float = 2.0

    def __post_init__(self) -> None:
        if self.channels < 1 or self.rate <= 0:
            raise ValueError("need at least one channel and a positive rate")
        rng = np.random.Generator(np.random.PCG64(self.seed))
        self.rng = rng
        c = self.channels
        self.freqs = {b: f + rng.uniform(-0.5, 0.5, c) for b, f in _CENTRES.items()}
        self.phases = {b: rng.uniform(0, 2 * np.pi, c) for b in _CENTRES}
        self.base_amp = {"theta": rng.uniform(4, 8, c), "alpha": rng.uniform(6, 12, c), "beta": rng.uniform(2, 5, c)}
        # slow envelopes: periods of 8-40 s, so engagement swings through high and low within a minute
        self.env_period = {b: rng.uniform(8, 40, c) for b in _CENTRES}
        self.env_phase = {b: rng.uniform(0, 2 * np.pi, c) for b in _CENTRES}
        self.index = 0  # samples generated so far
        self._window = np.zeros((0, c), np.float32)
        names = list(DEFAULT_CHANNELS[:c]) + [f"ch{i}" for i in range(len(DEFAULT_CHANNELS), c)]
        self.channel_names = names

    def next_chunk(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The next ``n`` samples: (times in seconds since the stream's start float64 [n], float32 [n, channels])."""
        t = (self.index + np.arange(n)) / self.rate
        tt = t[:, None]
        signal_uv = np.zeros((n, self.channels))
        for band in _CENTRES:
            envelope = 1.0 + 0.8 * np.sin(2 * np.pi * tt / self.env_period[band] + self.env_phase[band])
            signal_uv += self.base_amp[band] * envelope * np.sin(2 * np.pi * self.freqs[band] * tt + self.phases[band])
        signal_uv += self.rng.normal(0.0, self.noise_uv, (n, self.channels))
        self.index += n
        samples = signal_uv.astype(np.float32)
        keep = max(int(self.window_s * self.rate), 1)
        self._window = np.concatenate([self._window, samples])[-keep:]
        return t, samples

    def band_powers(self) -> dict[str, float]:
        """Mean power per band over the window (all channels averaged), from an FFT."""
        x = self._window.astype(np.float64)
        if len(x) < 8:
            return {b: 0.0 for b in BANDS}
        x = (x - x.mean(axis=0)) * np.hanning(len(x))[:, None]
        spectrum = np.abs(np.fft.rfft(x, axis=0)) ** 2
        freqs = np.fft.rfftfreq(len(x), 1.0 / self.rate)
        return {b: float(spectrum[(freqs >= lo) & (freqs < hi)].sum(axis=0).mean()) for b, (lo, hi) in BANDS.items()}

    def engagement(self) -> float:
        """beta / (alpha + theta) over the window (0 before any sample)."""
        p = self.band_powers()
        denominator = p["alpha"] + p["theta"]
        return p["beta"] / denominator if denominator > 0 else 0.0


def run(
    bus_in: str,
    *,
    stream: str = "mock-bci",
    seed: int = 0,
    rate: float = 250.0,
    channels: int = 8,
    chunk: int = 25,
    duration: float | None = None,
    realtime: bool = True,
) -> int:
    """Publish the mock stream on ``bus_in`` until ``duration`` seconds (None: until SIGTERM/SIGINT).

    Timestamps are ``start + sample_index / rate`` (wall clock at start). Returns chunks sent.
    """
    from .base import Provider

    source = MockBCI(seed=seed, rate=rate, channels=channels)
    stop = {"now": False}

    def _stop(_signum, _frame):
        stop["now"] = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop)
    start_wall, start = time.time(), time.monotonic()
    with Provider(bus_in, stream, source.channel_names, rate) as provider:
        log.info(
            "mock-bci: publishing %d channels at %.0f Hz on %s (topic %s, seed %d)",
            channels,
            rate,
            bus_in,
            provider.topic,
            seed,
        )
        while not stop["now"]:
            if duration is not None and source.index / rate >= duration:
                break
            t, samples = source.next_chunk(chunk)
            provider.publish(
                start_wall + t,
                samples,
                {"engagement": source.engagement(), **{f"power_{b}": v for b, v in source.band_powers().items()}},
            )
            if realtime:
                ahead = start + source.index / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        sent = provider.chunk
    log.info("mock-bci: stopped after %d chunk(s)", sent)
    return sent


__all__ = ["BANDS", "MockBCI", "run"]
