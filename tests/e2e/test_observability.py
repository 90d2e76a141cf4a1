"""What a person watching a run sees: system metrics, TensorBoard markers, the logger's console.

One CartPole run (module-scoped) is paused and resumed, patched for two owners at once (``ppo.ent_coef``,
applied by the learner, and ``envrunner.reward_scale``, by the env-runner), stopped with a checkpoint
and continued by `dynamicrl resume-run` to a few iterations further. Then:

* `dynamicrl status --json` gave every service's CPU and memory, and sys.csv has rows for every service
  of both halves;
* the real `tensorboard` (its default fast loader, the Rust data server) serves every text marker the
  loggers wrote, read back over its HTTP API, and the ``sys/`` scalars;
* the logger printed an iteration line at most every ``logger.every_s`` (here: only the first and the
  last), and every patch application as one readable line, once, on its console.

Every process is started on free ports and stopped by pid with bounded waits.
"""

from __future__ import annotations

import csv
import html
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import Run, free_port, log_text, read_metrics, stop, wait_until
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from dynamicrl.core.patch_text import entry_line
from dynamicrl.protocol.messages import (
    JournalEntry,
    ParamValue,
    PatchRequest,
    PatchStatus,
    PauseRequest,
    ResumeRequest,
    StopReply,
    StopRequest,
)

pytestmark = pytest.mark.e2e

SERVICES = {"controller", "learner.1", "envrunner.1", "logger.1"}
ITERATION_LINE = re.compile(r"iter +(\d+) +steps")


@dataclass
class Observed:
    run_dir: Path
    status: dict[str, Any]  # `dynamicrl status --json` mid-run
    patch_id: str
    stopped_at: int  # the last iteration before resume-run
    resumed_at: float  # wall clock when resume-run started
    logs: tuple[str, str]  # honcho's output: the first half, and resume-run's


@pytest.fixture(scope="module")
def observed(tmp_path_factory) -> Iterator[Observed]:
    tmp = tmp_path_factory.mktemp("observed")
    # no pause previews: the Procfile's previewer then joins nothing, and the process set is SERVICES
    with Run(tmp, ["run.total_env_steps=100000000", "logger.every_s=1000", "video.pause_previews=false"]) as run:
        first = run.honcho()
        run.wait_iteration(2, timeout=120)
        status = run.cli("status", "--json")
        assert status.returncode == 0, status.stderr
        run.call(PauseRequest())
        run.call(ResumeRequest())
        changes: dict[str, ParamValue] = {"ppo.ent_coef": 0.01, "envrunner.reward_scale": 0.5}
        patched = run.call(PatchRequest(changes=changes, author="e2e"))
        assert patched.status is PatchStatus.APPLIED, patched
        run.wait_iteration(run.status().ltime.iteration + 1)  # the stop's markers land past the patch's
        stopped = run.call(StopRequest(checkpoint=True), timeout_s=60)
        assert isinstance(stopped, StopReply) and stopped.checkpoint, stopped
        assert first.wait(60) == 0, run.logs()
        run_dir = run.run_dir
        last = read_metrics(run_dir)[-1]
        budget = int(last["env_steps"]) + 5 * run.per_iteration
        resumed_at = time.time()
        resumed = run.resume_run(run_dir, "--total-env-steps", str(budget))
        assert resumed.wait(150) == 0, f"resume-run failed:\n{run.logs()}"
        logs = (first.log(), resumed.log())
        yield Observed(run_dir, status.json, patched.patch_id, int(last["iteration"]), resumed_at, logs)


def test_status_and_sys_csv_have_every_services_cpu_and_memory(observed):
    services = {s["service"]: s for s in observed.status["services"]}
    assert set(services) == SERVICES - {"controller"}
    for name, row in services.items():
        assert row["cpu_percent"] is not None and row["cpu_percent"] >= 0, (name, row)
        assert row["rss_mb"] is not None and row["rss_mb"] > 10, (name, row)  # a Python process is bigger
    with (observed.run_dir / "sys.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["time", "service", "cpu_percent", "rss_mb", "iteration", "env_step"]
    resumed = [float(r["time"]) > observed.resumed_at for r in rows]
    for half in (resumed.index(False), resumed.index(True)):  # both runs' processes, each of them
        assert {r["service"] for r, later in zip(rows, resumed) if later == resumed[half]} == SERVICES
    for r in rows:
        assert float(r["cpu_percent"]) >= 0 and float(r["rss_mb"]) > 10, r
    # the learner works hardest: over the run it used more CPU than the logger
    total = {name: sum(float(r["cpu_percent"]) for r in rows if r["service"] == name) for name in SERVICES}
    assert total["learner.1"] > total["logger.1"], total


def written_markers(run_dir: Path) -> dict[str, list[tuple[int, str]]]:
    """Every text record in the run's event files, in the order TensorBoard reads them (file by file)."""
    markers: dict[str, list[tuple[int, str]]] = {}
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "text":
                    markers.setdefault(value.tag, []).append((event.step, value.tensor.string_val[0].decode()))
    return markers


def read_journal(run_dir: Path) -> list[JournalEntry]:
    return [JournalEntry.model_validate_json(line) for line in (run_dir / "patches.jsonl").read_text().splitlines()]


class TensorBoard:
    """The `tensorboard` command on ``logdir`` (default loader), bound to 127.0.0.1 on a free port."""

    def __init__(self, logdir: Path, log_path: Path) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        command = Path(sys.executable).with_name("tensorboard")
        port = self.url.rsplit(":", 1)[1]
        with log_path.open("w") as log:
            self.proc = subprocess.Popen(
                [str(command), "--logdir", str(logdir), "--host", "127.0.0.1", "--port", port],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.proc.log_path = log_path  # type: ignore[attr-defined]  # for log_text

    def get(self, path: str) -> Any:
        assert self.proc.poll() is None, f"tensorboard exited:\n{log_text(self.proc)}"
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as reply:
                return json.load(reply)
        except (urllib.error.URLError, ConnectionError):
            return None  # not serving yet

    def markers(self, tag: str) -> list[tuple[int, str]]:
        rows = self.get(f"/data/plugin/text/text?run=.&tag={tag}") or []
        # each entry comes rendered as HTML (Markdown): back to the plain text
        return [(r["step"], html.unescape(re.sub(r"<[^>]+>", "", r["text"])).strip()) for r in rows]


def test_tensorboards_default_loader_shows_every_marker(observed, tmp_path):
    written = written_markers(observed.run_dir)
    states, patches = [text for _, text in written["events/state"]], [t for _, t in written["events/patch"]]
    for prefix in ("pausing: ", "paused: ", "running: resumed by ", "stopping: stop requested"):
        assert any(t.startswith(prefix) for t in states), (prefix, states)
    assert sum(t.startswith("running: ") and "member" in t for t in states) == 2, states  # the start and the resume
    journal = read_journal(observed.run_dir)
    assert {e.service for e in journal if e.patch_id == observed.patch_id} == {"learner.1", "envrunner.1"}
    assert patches == [entry_line(e) for e in journal]

    tensorboard = TensorBoard(observed.run_dir, tmp_path / "tensorboard.log")
    try:
        wait_until(
            lambda: set(written) <= set((tensorboard.get("/data/plugin/text/tags") or {}).get(".", [])),
            timeout=60,
            message=f"tensorboard never listed the text tags:\n{log_text(tensorboard.proc)}",
        )
        for tag, markers in written.items():  # loaded once it serves them all (it reloads every 5 s)
            deadline = time.monotonic() + 30
            while (served := tensorboard.markers(tag)) != markers and time.monotonic() < deadline:
                time.sleep(0.5)
            assert served == markers, f"{tag}: tensorboard serves {served}\nthe event files have {markers}"
        scalars = tensorboard.get("/data/plugin/scalars/tags")["."]
        assert {f"sys/{name}/{what}" for name in SERVICES for what in ("cpu", "rss_mb")} <= set(scalars)
        assert "fast data loading" in log_text(tensorboard.proc)  # the default loader, not the slow Python one
    finally:
        stop(tensorboard.proc)


def test_the_console_prints_iterations_at_most_every_every_s_and_patches_as_one_line(observed):
    """With ``logger.every_s`` longer than the run, the logger prints the first iteration and the last."""
    first, resumed = ([line for line in log.splitlines() if "logger.1" in line] for log in observed.logs)
    final = int(read_metrics(observed.run_dir)[-1]["iteration"])
    assert [int(n) for n in ITERATION_LINE.findall("\n".join(first))] == [1, observed.stopped_at]
    assert [int(n) for n in ITERATION_LINE.findall("\n".join(resumed))] == [observed.stopped_at + 1, final]

    journal = read_journal(observed.run_dir)
    for entry in journal:  # each application once on the run's console: the logger's line
        assert sum(line.endswith(entry_line(entry)) for line in observed.logs[0].splitlines()) == 1, entry_line(entry)
        assert any(line.endswith(entry_line(entry)) for line in first), entry_line(entry)
