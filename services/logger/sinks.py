"""Where metrics go: metrics.csv, TensorBoard event files and the console.

TensorBoard events are written with tensorboard's own event-file writer and
protobufs, so the logger needs neither torch nor TensorFlow.
"""

from __future__ import annotations

import csv
import math
import os
import time
from pathlib import Path
from typing import IO, cast

from tensorboard.compat.proto.event_pb2 import Event, SessionLog
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from dynamicrl.protocol.messages import ParamValue, TrainMetrics

CSV_HEAD = ["iteration", "env_steps", "sps", "return_mean", "length_mean", "episodes", "time"]


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


class TensorBoardSink:
    """Scalars under ``train/`` (returns, SPS) and ``algo/`` (losses, lr...), stepped by env steps."""

    def __init__(self, logdir: Path) -> None:
        self.writer = EventFileWriter(str(logdir), flush_secs=5)

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
        values = [
            Summary.Value(tag=tag, simple_value=float(v))
            for tag, v in scalars.items()
            if v is not None and math.isfinite(float(v))
        ]
        self.writer.add_event(Event(wall_time=time.time(), step=metrics.env_steps, summary=Summary(value=values)))

    def purge_from(self, step: int) -> None:
        """Tell TensorBoard to discard events at or after ``step`` from earlier files (a resumed run)."""
        self.writer.add_event(Event(wall_time=time.time(), step=step, session_log=SessionLog(status=SessionLog.START)))

    def text(self, tag: str, text: str, step: int) -> None:
        from tensorboard.compat.proto.summary_pb2 import SummaryMetadata
        from tensorboard.compat.proto.tensor_pb2 import TensorProto

        meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="text"))
        tensor = TensorProto(dtype=7, string_val=[text.encode()], tensor_shape={"dim": [{"size": 1}]})
        self.writer.add_event(
            Event(
                wall_time=time.time(),
                step=step,
                summary=Summary(value=[Summary.Value(tag=tag, metadata=meta, tensor=tensor)]),
            )
        )

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


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
