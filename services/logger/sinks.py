"""Where metrics go: metrics.csv, sys.csv, TensorBoard event files and the console.

TensorBoard events are written with tensorboard's own event-file writer and
protobufs, so the logger needs neither torch nor TensorFlow.
"""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, cast

from tensorboard.compat.proto.event_pb2 import Event, SessionLog
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from dynamicrl.protocol.messages import ParamValue, SystemMetrics, TrainMetrics

CSV_HEAD = ["iteration", "env_steps", "sps", "return_mean", "length_mean", "episodes", "time"]
SYS_HEAD = ["time", "service", "cpu_percent", "rss_mb", "iteration", "env_step"]


def flat(metrics: TrainMetrics) -> dict[str, ParamValue]:
    row: dict[str, ParamValue] = {
        "iteration": metrics.iteration,
        "env_steps": metrics.env_steps,
        "sps": metrics.sps,
        "return_mean": metrics.return_mean,
        "length_mean": metrics.length_mean,
        "episodes": metrics.episodes,
        "time": round(time.time(), 3),
    }
    row.update(metrics.values)
    row.update(metrics.hyperparameters)  # e.g. "ppo.lr": a patch shows as a step in the column
    return row


class CsvSink:
    """One row per iteration; the first row fixes the columns (later extras are ignored). A resumed run
    appends under the file's own header, which older code may have written with other columns."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: IO[str] | None = None
        self.writer: csv.DictWriter | None = None

    def write(self, metrics: TrainMetrics) -> None:
        row = flat(metrics)
        if self.writer is None:
            fresh = not self.path.exists() or self.path.stat().st_size == 0
            if fresh:
                columns = CSV_HEAD + sorted(k for k in row if k not in CSV_HEAD)
            else:
                with self.path.open(newline="") as existing:
                    columns = next(csv.reader(existing))
            self.file = self.path.open("a", newline="")
            self.writer = csv.DictWriter(self.file, fieldnames=columns, extrasaction="ignore")
            if fresh:
                self.writer.writeheader()
        self.writer.writerow({k: "" if v is None else v for k, v in row.items()})
        assert self.file is not None  # opened with the writer
        self.file.flush()

    def truncate_after(self, iteration: int) -> None:
        """Keep the header and the rows up to ``iteration`` (a resumed run rewrites the rest)."""
        if not self.path.exists():
            return
        lines = self.path.read_text().splitlines(keepends=True)
        kept = lines[:1] + [line for line in lines[1:] if int(line.split(",", 1)[0]) <= iteration]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(kept))
        os.replace(tmp, self.path)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


class SysCsvSink:
    """sys.csv: one row per service and sample (every ``timing.heartbeat_s``). A resumed run appends:
    the rows are the processes' history, not the training's, so none is rewritten."""

    def __init__(self, path: Path) -> None:
        fresh = not path.exists() or path.stat().st_size == 0
        self.file = path.open("a", newline="")
        self.writer = csv.writer(self.file)
        if fresh:
            self.writer.writerow(SYS_HEAD)

    def write(self, metrics: SystemMetrics) -> None:
        now, ltime = round(time.time(), 3), metrics.ltime
        at = ["", ""] if ltime is None else [ltime.iteration, ltime.env_step]
        self.writer.writerows([now, row.service, row.cpu_percent, row.rss_mb, *at] for row in metrics.services)
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class TensorBoardSink:
    """Scalars under ``train/`` (returns, SPS), ``algo/`` (losses, lr...), ``hparams/`` and ``sys/``,
    stepped by env steps; text markers under ``events/``.

    TensorBoard's default loader (its Rust data server) keeps one record per tag and step, and a record
    at a step not past the tag's last one drops every earlier record from that step on. So each text
    marker gets its own step, past the tag's previous one: the env step of the latest iteration, bumped
    by one for a second marker there (the text itself says the exact logical time).
    """

    def __init__(self, logdir: Path) -> None:
        self.writer = EventFileWriter(str(logdir), flush_secs=5)
        self.floor = 0  # on resume: the first step after the checkpoint (markers and sys samples start there)
        self.text_steps: dict[str, int] = {}  # the last step of each text tag

    def write(self, metrics: TrainMetrics) -> None:
        scalars = {"train/sps": metrics.sps, "train/iteration": metrics.iteration}
        if metrics.return_mean is not None:
            scalars["train/return_mean"] = metrics.return_mean
        if metrics.length_mean is not None:
            scalars["train/length_mean"] = metrics.length_mean
        scalars.update({f"algo/{k}": v for k, v in metrics.values.items()})
        scalars.update(
            {f"hparams/{k}": float(v) for k, v in metrics.hyperparameters.items() if isinstance(v, (int, float))}
        )
        self.scalars(scalars, metrics.env_steps)

    def system(self, metrics: SystemMetrics) -> None:
        """``sys/<service>/cpu`` and ``sys/<service>/rss_mb`` at the latest iteration's env step (the default
        loader keeps the last sample of each step; sys.csv has them all)."""
        scalars = {}
        for row in metrics.services:
            scalars[f"sys/{row.service}/cpu"] = row.cpu_percent
            scalars[f"sys/{row.service}/rss_mb"] = row.rss_mb
        self.scalars(scalars, max(metrics.ltime.env_step if metrics.ltime else 0, self.floor))

    def scalars(self, scalars: Mapping[str, float | None], step: int) -> None:
        values = [
            Summary.Value(tag=tag, simple_value=float(v))
            for tag, v in scalars.items()
            if v is not None and math.isfinite(float(v))
        ]
        self.writer.add_event(Event(wall_time=time.time(), step=step, summary=Summary(value=values)))

    def purge_from(self, step: int) -> None:
        """A resumed run: the slow loader (``--load_fast=false``) discards events at or after ``step`` from
        earlier files on this SessionLog START; the default loader ignores it, and drops a tag's records
        from a step on when a record at that step comes again. Markers from here on are at ``step`` or
        later, so both loaders keep the earlier run's up to the checkpoint, then the resumed run's."""
        self.writer.add_event(Event(wall_time=time.time(), step=step, session_log=SessionLog(status=SessionLog.START)))
        self.floor = step

    def text(self, tag: str, text: str, step: int) -> None:
        """A marker at ``step``, or just past the tag's previous marker or the floor if that is later."""
        from tensorboard.compat.proto.summary_pb2 import SummaryMetadata
        from tensorboard.compat.proto.tensor_pb2 import TensorProto

        step = self.marker_step(tag, step)
        meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="text"))
        tensor = TensorProto(dtype=7, string_val=[text.encode()], tensor_shape={"dim": [{"size": 1}]})
        self.writer.add_event(
            Event(
                wall_time=time.time(),
                step=step,
                summary=Summary(value=[Summary.Value(tag=tag, metadata=meta, tensor=tensor)]),
            )
        )

    def image(self, tag: str, encoded: bytes, width: int, height: int, step: int) -> None:
        """An encoded image (an animated GIF plays in TensorBoard's image plugin), stepped like a marker."""
        image = Summary.Image(width=width, height=height, colorspace=3, encoded_image_string=encoded)
        step = self.marker_step(tag, step)
        self.writer.add_event(
            Event(wall_time=time.time(), step=step, summary=Summary(value=[Summary.Value(tag=tag, image=image)]))
        )

    def marker_step(self, tag: str, step: int) -> int:
        """``step``, or just past the tag's previous record or the floor if that is later."""
        step = max(step, self.floor, self.text_steps.get(tag, -1) + 1)
        self.text_steps[tag] = step
        return step

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


class ConsoleSink:
    """Iteration lines at most every ``every_s`` seconds however fast the env; the last one held back
    is printed on close, so the console always ends with the final iteration."""

    def __init__(self, total_env_steps: int, every_s: float) -> None:
        self.total_env_steps, self.every_s = total_env_steps, every_s
        self.printed_at = -math.inf
        self.held: TrainMetrics | None = None

    def write(self, metrics: TrainMetrics) -> None:
        now = time.monotonic()
        if now - self.printed_at < self.every_s:
            self.held = metrics
            return
        self.printed_at, self.held = now, None
        print(console_line(metrics, self.total_env_steps), flush=True)

    def close(self) -> None:
        if self.held is not None:
            print(console_line(self.held, self.total_env_steps), flush=True)
            self.held = None


def console_line(metrics: TrainMetrics, total_env_steps: int) -> str:
    """One readable line per iteration; the budget in force is the learner's (a live patch may move it)."""
    ret = "   n/a" if metrics.return_mean is None else f"{metrics.return_mean:8.1f}"
    total = cast(int, metrics.hyperparameters.get("run.total_env_steps", total_env_steps))  # an int tunable
    pct = 100.0 * metrics.env_steps / max(total, 1)
    extra = "  ".join(
        f"{k} {metrics.values[k]:.3g}"
        for k in ("policy_loss", "value_loss", "entropy", "approx_kl")
        if k in metrics.values
    )
    return (
        f"iter {metrics.iteration:5d}  steps {metrics.env_steps:9d} ({pct:5.1f}%)  "
        f"return {ret}  sps {metrics.sps:7.0f}  {extra}"
    )
