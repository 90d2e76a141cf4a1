"""The logger: subscribes to the bus and writes the run directory.

It reports ready only after a controller beacon has reached it over the bus,
which proves its subscription is live; the run starts after that, so the
first iteration's metrics are not lost to the slow-joiner effect.
"""

from __future__ import annotations

import io
import logging
import time
from pathlib import Path

from dynamicrl.core.patch_text import entry_line
from dynamicrl.core.settings import Config
from dynamicrl.protocol import topics
from dynamicrl.protocol.messages import (
    CheckpointSaved,
    LogicalTime,
    PatchEvent,
    Role,
    RunStateChanged,
    SystemMetrics,
    TrainMetrics,
    VideoSaved,
)
from dynamicrl.protocol.sockets import Subscriber
from dynamicrl.services.base import Service, StartupError, StoppedBeforeStart, setup_logging

from .sinks import ConsoleSink, CsvSink, SysCsvSink, TensorBoardSink

log = logging.getLogger(__name__)

DRAIN_IDLE_S = 0.3


class Logger(Service):
    role = Role.LOGGER
    observer = True  # it keeps logging while the run is paused; a signal to it alone does not stop the run

    def run(self) -> int:
        self.register()
        cfg = self.config
        self.sub = Subscriber(self.ctx, cfg.addresses.bus_out, [topics.METRICS, topics.CONTROL])
        run_dir = Path(self.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.csv = CsvSink(run_dir / "metrics.csv") if cfg.logger.csv else None
        self.sys_csv = SysCsvSink(run_dir / "sys.csv") if cfg.logger.csv else None
        self.tb = TensorBoardSink(run_dir) if cfg.logger.tensorboard else None
        self.console = ConsoleSink(cfg.run.total_env_steps, cfg.logger.every_s) if cfg.logger.console else None
        if self.resumed_from is not None:  # drop what was logged after the checkpoint: no duplicates
            if self.csv is not None:
                self.csv.truncate_after(self.resumed_from.iteration)
            if self.tb is not None:
                self.tb.purge_from(self.resumed_from.env_step + 1)
        self.last_step = 0
        try:
            self.wait_for_beacon()
            self.ready_and_wait()
            while not self.stopping:
                self.safe_point()
                if self.wait(self.sub.socket, 100):  # wakes on a command too, not only on the bus
                    self.drain()
            self.drain_until_quiet()
        finally:
            for sink in (self.csv, self.sys_csv, self.tb, self.console):
                if sink is not None:
                    sink.close()
            self.sub.close()
            self.close()
        return 0

    def wait_for_beacon(self) -> None:
        deadline = time.monotonic() + self.config.timing.start_timeout_s
        while not self.stopping and time.monotonic() < deadline:
            if self.sub.socket.poll(100):
                received = self.sub.receive()
                if received is not None and isinstance(received.message, RunStateChanged):
                    return
            self.safe_point()
        if self.stopping:
            raise StoppedBeforeStart(f"{self.name}: stopped before the run started ({self.stop_reason})")
        raise StartupError(f"{self.name}: no controller beacon on {self.config.addresses.bus_out}")

    def drain(self) -> None:
        self.missed = self.sub.gaps.missed
        while self.sub.socket.poll(0):
            received = self.sub.receive()
            if received is not None:
                self.handle(received.message)

    def drain_until_quiet(self) -> None:
        """On stop: take what is still in flight (the last iteration's metrics) before closing."""
        while self.sub.socket.poll(int(DRAIN_IDLE_S * 1000)):
            self.drain()

    def handle(self, message) -> None:
        if isinstance(message, TrainMetrics):
            self.last_step = message.env_steps
            self.ltime = LogicalTime(iteration=message.iteration, env_step=message.env_steps)
            for sink in (self.csv, self.tb, self.console):
                if sink is not None:
                    sink.write(message)
        elif isinstance(message, SystemMetrics):
            if self.sys_csv is not None:
                self.sys_csv.write(message)
            if self.tb is not None:
                self.tb.system(message)
        elif isinstance(message, CheckpointSaved) and self.tb is not None:
            saved = message.checkpoint
            self.tb.text("events/checkpoint", f"{saved.kind} checkpoint {saved.path}", self.last_step)
        elif isinstance(message, VideoSaved) and self.tb is not None:
            self.video(message)
        elif isinstance(message, PatchEvent):
            text = entry_line(message.entry)
            if self.tb is not None:
                self.tb.text("events/patch", text, self.last_step)
            if self.config.logger.console:
                print(text, flush=True)
        # a state change: a marker; on the console it is the controller's own line
        elif isinstance(message, RunStateChanged) and message.reason and self.tb is not None:
            self.tb.text("events/state", f"{message.state.value}: {message.reason}", self.last_step)

    def video(self, saved: VideoSaved) -> None:
        """The clip's GIF (the previewer writes it beside the MP4) as an image summary, ``video/episode``."""
        assert self.tb is not None  # only called with a TensorBoard sink
        try:
            encoded = Path(saved.gif).read_bytes() if saved.gif else b""
        except OSError as exc:
            log.warning("%s: no TensorBoard image for %s: %s", self.name, saved.path, exc)
            return
        if encoded:
            from PIL import Image  # the GIF's own size (smaller than the MP4's)

            with Image.open(io.BytesIO(encoded)) as image:
                width, height = image.size
            self.tb.image("video/episode", encoded, width, height, saved.env_step)
            self.tb.text(
                "events/video",
                f"iteration {saved.iteration}: return {saved.episode_return:.1f}, length {saved.length}, {saved.path}",
                saved.env_step,
            )


def main(local: Config) -> int:
    logger = Logger(local)
    setup_logging(logger.name)
    return logger.run()
