"""Steering a live run end to end: pause/resume, live patches, scheduled patches, faults, replay.

Every service is a real process started on its own (controller, learner, env-runners,
logger) on free ports; the run is driven through the `dynamicrl` CLI as a user would
(`--json` for the replies), with `ControlClient` for the fast polling in between. Every
wait is a bounded poll; the only timed observations are the "nothing moves while paused"
holds, which check repeatedly over a fixed window.

One 2-env-runner run is shared by the tests of ``TestTwoEnvRunners`` (class-scoped, so
it is stopped before the other tests start runs of their own and never competes with
them for the CPU); the tests in it leave the run running and unpaused.
"""

from __future__ import annotations

import getpass
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest
import zmq
from helpers import CLI, Run, endpoint, free_port, log_text, read_metrics, user_env, wait_exit, wait_until

from dynamicrl.core.tunables import allowed
from dynamicrl.protocol import security
from dynamicrl.protocol.codec import ProtocolError, decode
from dynamicrl.protocol.messages import (
    Health,
    PatchEvent,
    PatchRequest,
    PatchStatus,
    Role,
    RunState,
    RunStateChanged,
)
from dynamicrl.protocol.sockets import connect

pytestmark = pytest.mark.e2e

#: never spent during a test: the shared run must not finish by itself
ENDLESS = "run.total_env_steps=100000000"
#: short enough to test faults quickly; dead_after_s large so a stopped env-runner does not end the run
FAULT_TIMING = ["timing.missing_after_s=1.0", "timing.pause_timeout_s=1.5", "timing.dead_after_s=120"]
#: metrics.csv columns that depend on wall-clock time, not on the training
WALL_CLOCK_COLUMNS = {"time", "sps"}


# -- watching the bus and the metrics ------------------------------------------------------------
class BusMonitor:
    """A plain SUB on the bus: ``control.patch`` events, and ``control.state`` to prove it is live."""

    def __init__(self, bus_out: str) -> None:
        self.ctx = security.context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SUBSCRIBE, PatchEvent.TYPE.encode())
        self.sock.setsockopt(zmq.SUBSCRIBE, RunStateChanged.TYPE.encode())
        connect(self.sock, bus_out)
        self.events: list[PatchEvent] = []
        wait_until(
            lambda: any(isinstance(m, RunStateChanged) for m in self._receive(100)),
            10,
            message=f"no control.state beacon on {bus_out}: the subscription never went live",
        )

    def _receive(self, timeout_ms: int) -> list:
        messages = []
        while self.sock.poll(timeout_ms):
            timeout_ms = 0
            try:
                message = decode(self.sock.recv_multipart()).message
            except ProtocolError as exc:
                raise AssertionError(f"undecodable bus message: {exc}") from None
            if isinstance(message, PatchEvent):
                self.events.append(message)
            messages.append(message)
        return messages

    def patch_events(self, patch_id: str, count: int, timeout: float = 10) -> list[PatchEvent]:
        def enough():
            self._receive(50)
            found = [e for e in self.events if e.entry.patch_id == patch_id]
            return found if len(found) >= count else None

        return wait_until(enough, timeout, message=f"fewer than {count} control.patch events for {patch_id}")

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()

    def __enter__(self) -> BusMonitor:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


def hold(check: Callable[[], None], seconds: float, interval: float = 0.1) -> None:
    """Run ``check`` (which asserts) repeatedly for ``seconds``: a condition that must keep holding."""
    deadline = time.monotonic() + seconds
    while True:
        check()
        if time.monotonic() >= deadline:
            return
        time.sleep(interval)


def csv_value(text: str) -> float | None:
    return None if text == "" else float(text)


def same(value: Any, text: str) -> bool:
    """A param value equals its metrics.csv cell (a bool is written True/False)."""
    if isinstance(value, bool):
        return text == str(value)
    return csv_value(text) is None if value is None else csv_value(text) == pytest.approx(float(value), rel=1e-9)


def position_key(p: dict) -> tuple:
    return (p["ltime"]["iteration"], p["ltime"]["env_step"], p["minibatch"])


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="class")
def two(tmp_path_factory):
    """The shared run: 2 env-runners, endless budget, short fault timings."""
    with Run(tmp_path_factory.mktemp("two"), [ENDLESS, *FAULT_TIMING], envrunners=2) as run:
        run.start().wait_iteration(2, timeout=120)
        yield run


@pytest.fixture
def run2(two):
    """The shared run for one test; it must be running (not paused) when the test ends."""
    yield two
    state = two.status().state
    if state is RunState.PAUSED:
        two.cli("resume", "--json")
    assert state is RunState.RUNNING, f"the test left the shared run {state.value}"


# -- 1. pause / resume ------------------------------------------------------------------------
def check_pause_resume(run: Run) -> None:
    run.wait_iteration(2)
    resumed = run.cli("resume", "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.json["already"] is True, "resume of a running run must say already"

    members = {s.service: s for s in run.status().services}
    (learner,) = run.names(Role.LEARNER)
    runners = run.names(Role.ENVRUNNER)
    assert len(runners) == run.envrunners

    paused = run.cli("pause", "--json")
    assert paused.returncode == 0, paused.stderr
    reply = paused.json
    assert reply["already"] is False
    positions = {p["service"]: p for p in reply["positions"]}
    assert set(positions) == set(members), "pause must report a position for every service"

    at = positions[learner]
    assert isinstance(at["minibatch"], int) and at["minibatch"] >= 0, f"learner position without a minibatch: {at}"
    iteration = at["ltime"]["iteration"]
    assert iteration >= 2
    assert at["ltime"]["env_step"] == iteration * run.per_iteration
    for name in runners:
        p = positions[name]
        assert p["minibatch"] is None
        version, env_step = p["ltime"]["iteration"], p["ltime"]["env_step"]
        # sync mode: a runner collects with the learner's latest weights, or has not yet received them
        assert version in (iteration - 1, iteration), f"{name} at {p}, learner at {at}"
        assert version * run.per_rollout <= env_step <= (version + 1) * run.per_rollout, f"{name} at {p}"

    # paused: the run's clock catches up with the learner's position (metrics in flight), then stands still
    def caught_up():
        s, rows = run.status(), run.metrics()
        return (
            s.state is RunState.PAUSED
            and s.ltime is not None
            and s.ltime.iteration == iteration
            and rows
            and int(rows[-1]["iteration"]) == iteration
            and s
        )

    status = wait_until(
        caught_up,
        10,
        message=f"paused at iteration {iteration}, but status/metrics.csv "
        f"disagree: {run.status()}, {len(run.metrics())} rows",
    )
    rows, size = len(run.metrics()), run.metrics_size()

    def still() -> None:
        s = run.status()
        assert s.state is RunState.PAUSED
        assert s.ltime == status.ltime, f"ltime moved while paused: {status.ltime} -> {s.ltime}"
        assert run.metrics_size() == size and len(run.metrics()) == rows, "metrics.csv grew while paused"

    hold(still, 1.5)

    # each paused service's heartbeats report the position it stopped at
    for s in run.status().services:
        if s.role in (Role.LEARNER, Role.ENVRUNNER):
            assert s.ltime.model_dump() == positions[s.service]["ltime"], f"{s.service} moved while paused"

    again = run.cli("pause", "--json")
    assert again.returncode == 0, again.stderr
    assert again.json["already"] is True
    assert {p["service"]: p for p in again.json["positions"]} == positions

    resumed = run.cli("resume", "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.json["already"] is False
    assert resumed.json["paused_s"] >= 1.5

    def progressed():
        s = run.status()
        return (
            s.state is RunState.RUNNING
            and s.ltime.iteration > iteration
            and len(run.metrics()) > rows
            and run.metrics_size() > size
        )

    wait_until(progressed, 30, message=f"no progress after resume:\n{run.logs()}")
    resumed = run.cli("resume", "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.json["already"] is True


def test_pause_resume_one_envrunner(runs):
    check_pause_resume(runs("one", [ENDLESS]).start())


class TestTwoEnvRunners:
    def test_pause_resume(self, run2):
        check_pause_resume(run2)

    # -- 2. bad patches ---------------------------------------------------------------------
    @pytest.mark.parametrize(
        "changes, bad, expected, allowed_for",
        [
            (["ppo.lrr=1"], "ppo.lrr=1", ["unknown hyperparameter", "did you mean ppo.lr?", "tunable: "], None),
            (["lr=1e-4"], "lr=0.0001", ["unknown hyperparameter", "did you mean ppo.lr?", "tunable: "], None),
            (["ppo.lr=abc"], "ppo.lr='abc'", ["valid number"], "ppo.lr"),
            (["ppo.update_epochs=2.5"], "ppo.update_epochs=2.5", ["valid integer"], "ppo.update_epochs"),
            (["ppo.clip_coef=0"], "ppo.clip_coef=0", ["greater than 0"], "ppo.clip_coef"),
            (["ppo.ent_coef=5"], "ppo.ent_coef=5", ["less than or equal to 1"], "ppo.ent_coef"),
            (["ppo.hidden_sizes=[8]"], "ppo.hidden_sizes='[8]'", ["not tunable"], None),
            (["ppo.lr=1e-3", "ppo.ent_coef=5"], "ppo.ent_coef=5", ["less than or equal to 1"], "ppo.ent_coef"),
            (["run.seed=3"], "run.seed=3", ["not tunable"], None),
            (
                ["run.total_env_steps=1"],
                "run.total_env_steps=1",
                ["the run is at", "; a new budget of 1 env steps must be more"],
                None,
            ),
        ],
        ids=[
            "unknown",
            "bare-name",
            "not-a-number",
            "not-an-int",
            "below-min",
            "above-max",
            "not-tunable",
            "mixed",
            "run-not-tunable",
            "budget-behind",
        ],
    )
    def test_bad_patch_changes_nothing(self, run2, changes, bad, expected, allowed_for):
        rows = run2.param_rows()
        before, journal, history = run2.params(), run2.journal_text(), run2.cli("history", "--json").json
        result = run2.cli("patch", "--json", *changes)
        assert result.returncode != 0, f"accepted: {result.stdout}"
        assert "Traceback" not in result.stderr, result.stderr
        lines = result.stderr.strip().splitlines()
        assert lines[0].startswith("Error: rejected: patch rejected, nothing changed"), result.stderr
        problems = [line.strip() for line in lines[1:]]
        assert len(problems) == 1, f"expected one problem, got:\n{result.stderr}"
        problem = problems[0]
        assert problem.startswith(bad + ":"), f"the message must name key and value ({bad}):\n{result.stderr}"
        if allowed_for is not None:
            expected = [*expected, f"allowed: {allowed(rows[allowed_for])}"]
        for text in expected:
            assert text in problem, f"{text!r} missing from:\n{result.stderr}"
        if "tunable: " in expected:  # an unknown name lists what may be patched
            assert all(name in problem for name in rows), problem

        assert run2.params() == before
        assert run2.journal_text() == journal
        assert run2.cli("history", "--json").json == history
        # and the services still train with the old values: the next rows show them
        iteration = run2.status().ltime.iteration
        last = run2.rows_after(iteration + 2)[-1]
        for name, value in before.items():
            assert same(value, last[name]), f"{name}: {last[name]} in metrics.csv, {value} before the patch"

    # -- 3. a good patch ------------------------------------------------------------------------
    def test_patch_applies_everywhere(self, run2):
        before = run2.params()
        assert before["ppo.ent_coef"] == 0.0 and before["ppo.lr"] != 1e-4, before  # so the step shows
        with BusMonitor(run2.bus_out) as monitor:
            start = run2.status().ltime.iteration
            result = run2.cli("patch", "--json", "ppo.lr=1e-4", "ppo.ent_coef=0.01")
            assert result.returncode == 0, result.stderr
            reply = result.json
            assert reply["status"] == PatchStatus.APPLIED.value
            (learner,) = run2.names(Role.LEARNER)
            (entry,) = reply["applied"]
            assert entry["service"] == learner
            assert entry["author"] == f"cli@{getpass.getuser()}"
            assert entry["changes"] == {
                "ppo.lr": {"old": before["ppo.lr"], "new": 1e-4},
                "ppo.ent_coef": {"old": 0.0, "new": 0.01},
            }
            at = entry["ltime"]["iteration"]
            assert at >= start and entry["ltime"]["env_step"] == at * run2.per_iteration
            assert isinstance(entry["minibatch"], int)

            after = run2.params()
            assert after == {**before, "ppo.lr": 1e-4, "ppo.ent_coef": 0.01}
            journal = run2.entries(reply["patch_id"])
            assert journal == {learner: entry}
            history = run2.cli("history", "--json").json["entries"]
            assert entry in history
            (event,) = monitor.patch_events(reply["patch_id"], 1)
            assert event.entry.model_dump(mode="json") == entry

            # metrics.csv: rows up to the iteration it applied at show the old values, later rows the new
            for row in run2.rows_after(at + 3)[start:]:  # from the request on
                later = int(row["iteration"]) > at
                assert same(0.01 if later else 0.0, row["ppo.ent_coef"]), (at, row)
                assert same(1e-4 if later else before["ppo.lr"], row["ppo.lr"]), (at, row)
                if int(row["iteration"]) > at + 1:  # the optimiser's rate: annealed from the new one
                    done = (int(row["iteration"]) - 1) / run2.num_iterations
                    assert float(row["lr"]) == pytest.approx(1e-4 * (1 - done), rel=1e-9), (at, row)

            # an env-runner tunable is applied by every env-runner: one journal entry each
            old_scale = after["envrunner.reward_scale"]
            start = run2.status().ltime.iteration
            result = run2.cli("patch", "--json", "envrunner.reward_scale=0.5")
            assert result.returncode == 0, result.stderr
            reply = result.json
            assert reply["status"] == PatchStatus.APPLIED.value
            runners = run2.names(Role.ENVRUNNER)
            applied = {e["service"]: e for e in reply["applied"]}
            assert sorted(applied) == runners
            for e in applied.values():
                assert e["changes"] == {"envrunner.reward_scale": {"old": old_scale, "new": 0.5}}
            assert run2.entries(reply["patch_id"]) == applied
            events = monitor.patch_events(reply["patch_id"], len(runners))
            assert sorted(e.entry.service for e in events) == runners
        assert run2.params()["envrunner.reward_scale"] == 0.5
        # the learner trains on rank 0's rollouts with the new scale from the next rollout at the latest
        at = applied[runners[0]]["ltime"]["iteration"]
        for row in run2.rows_after(at + 3)[start:]:  # from the request on
            if int(row["iteration"]) <= at:
                assert same(old_scale, row["envrunner.reward_scale"]), (at, row)
            elif int(row["iteration"]) > at + 1:
                assert same(0.5, row["envrunner.reward_scale"]), (at, row)

    # -- 4. a scheduled patch -------------------------------------------------------------------
    def test_scheduled_patch(self, run2):
        before = run2.params()
        current = run2.status().ltime.iteration
        target = current + 100  # seconds ahead: the CLI's start-up must be well in time, on a loaded machine too
        result = run2.cli(
            "patch", "--json", "--at-iteration", str(target), "ppo.clip_coef=0.3", "envrunner.reward_scale=0.6"
        )
        assert result.returncode == 0, result.stderr
        reply = result.json
        assert reply["status"] == PatchStatus.SCHEDULED.value and reply["applied"] == []
        now = run2.status().ltime.iteration
        assert now < target, f"the run reached iteration {target} before the patch was accepted (at {now})"
        assert run2.entries(reply["patch_id"]) == {}, "a scheduled patch applied early"

        owners = run2.names(Role.LEARNER) + run2.names(Role.ENVRUNNER)
        entries = wait_until(
            lambda: (e := run2.entries(reply["patch_id"])) and len(e) == len(owners) and e,
            60,
            message=f"scheduled patch not applied by {owners}:\n{run2.journal()}",
        )
        (learner,) = run2.names(Role.LEARNER)
        assert entries[learner]["ltime"] == {"iteration": target, "env_step": target * run2.per_iteration}
        assert entries[learner]["minibatch"] == 0
        assert entries[learner]["changes"] == {"ppo.clip_coef": {"old": before["ppo.clip_coef"], "new": 0.3}}
        for name in run2.names(Role.ENVRUNNER):  # before its first env step with the weights of iteration K
            assert entries[name]["ltime"] == {"iteration": target, "env_step": target * run2.per_rollout}
            assert entries[name]["changes"] == {
                "envrunner.reward_scale": {"old": before["envrunner.reward_scale"], "new": 0.6}
            }
        for row in run2.rows_after(target + 2)[current:]:  # from the request on
            later = int(row["iteration"]) > target
            assert same(0.3 if later else before["ppo.clip_coef"], row["ppo.clip_coef"]), (target, row)
            assert same(0.6 if later else before["envrunner.reward_scale"], row["envrunner.reward_scale"]), (
                target,
                row,
            )

    # -- 5. a patch while paused --------------------------------------------------------------
    def test_patch_while_paused_applies_on_resume(self, run2):
        before = run2.params()
        paused = run2.cli("pause", "--json")
        assert paused.returncode == 0, paused.stderr
        positions = {p["service"]: p for p in paused.json["positions"]}
        result = run2.cli("patch", "--json", "ppo.vf_coef=0.4", "envrunner.reward_scale=0.75")
        assert result.returncode == 0, result.stderr
        reply = result.json
        assert reply["status"] == PatchStatus.ON_RESUME.value and reply["applied"] == []

        def not_applied() -> None:
            assert run2.status().state is RunState.PAUSED
            assert run2.entries(reply["patch_id"]) == {}, "applied while paused"

        hold(not_applied, 1.0)
        assert all(e["patch_id"] != reply["patch_id"] for e in run2.cli("history", "--json").json["entries"])

        resumed = run2.cli("resume", "--json")
        assert resumed.returncode == 0, resumed.stderr
        owners = run2.names(Role.LEARNER) + run2.names(Role.ENVRUNNER)
        entries = wait_until(
            lambda: (e := run2.entries(reply["patch_id"])) and len(e) == len(owners) and e,
            30,
            message=f"patch not applied after resume by {owners}:\n{run2.journal()}",
        )
        for name, entry in entries.items():  # exactly where each service stood paused
            assert position_key(entry) == position_key(positions[name]), (name, entry, positions[name])
        (learner,) = run2.names(Role.LEARNER)
        assert entries[learner]["changes"] == {"ppo.vf_coef": {"old": before["ppo.vf_coef"], "new": 0.4}}

    # -- 6b. a stopped env-runner -------------------------------------------------------------
    def test_stopped_envrunner(self, run2):
        timing = run2.config.timing
        runners = run2.names(Role.ENVRUNNER)
        victim, other = runners[-1], runners[0]
        pid = next(s.pid for s in run2.status().services if s.service == victim)
        before, journal = run2.params(), run2.journal_text()
        os.kill(pid, signal.SIGSTOP)
        try:

            def missing():
                health = {s.service: s.health for s in run2.status().services}
                return health[victim] is Health.MISSING and health

            health = wait_until(missing, timing.missing_after_s + 10, message=f"{victim} never reported missing")
            assert all(h is Health.OK for name, h in health.items() if name != victim), health

            result = run2.cli("patch", "--json", "envrunner.reward_scale=2.0")
            assert result.returncode != 0, result.stdout
            assert "Traceback" not in result.stderr, result.stderr
            assert victim in result.stderr and "missing" in result.stderr and other not in result.stderr, result.stderr
            assert run2.params() == before and run2.journal_text() == journal

            paused = run2.cli("pause", "--json")
            assert paused.returncode != 0, paused.stdout
            assert "timed out" in paused.stderr, paused.stderr
            assert f"no barrier report from {victim};" in paused.stderr, paused.stderr
            assert timing.pause_timeout_s <= paused.seconds < timing.pause_timeout_s + 10, paused.seconds
            status = run2.status()
            assert status.state is RunState.RUNNING, f"half-paused: {status.state.value}"
            stopped_at = status.ltime.iteration
        finally:
            os.kill(pid, signal.SIGCONT)

        def recovered():
            s = run2.status()
            health = {m.service: m.health for m in s.services}
            return s.state is RunState.RUNNING and s.ltime.iteration > stopped_at + 2 and health[victim] is Health.OK

        wait_until(recovered, 30, message=f"training did not continue after SIGCONT:\n{run2.logs()}")
        assert run2.params() == before


# -- 6a. no controller ----------------------------------------------------------------------------
def test_no_controller_fails_fast(tmp_path):
    address = f"addresses.controller={endpoint(free_port())}"
    env = user_env()
    commands = {"patch": ["patch", "ppo.lr=1e-4", "--set", address], "pause": ["pause", address]}
    started = time.monotonic()
    procs = {
        name: subprocess.Popen(
            [*CLI, *args],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, args in commands.items()
    }
    for name, proc in procs.items():
        with proc:
            _, err = proc.communicate(timeout=30)
            seconds = time.monotonic() - started
            assert proc.returncode != 0, f"{name}: exit 0 without a controller"
            assert "no controller" in err, f"{name}: {err}"
            assert "Traceback" not in err, err
            assert seconds < 8, f"{name} took {seconds:.1f} s to notice that no controller answers"


# -- 7. replay ----------------------------------------------------------------------------------
def test_replay_reapplies_the_journal(runs):
    budget = "run.total_env_steps=16384"  # 64 iterations of 256 env steps: a few seconds
    a = runs("a", [budget]).start()
    a.wait_state(RunState.RUNNING)
    num_iterations = a.num_iterations
    target = num_iterations * 5 // 8
    # ControlClient here: this run is short, and the CLI's start-up could miss it
    scheduled = a.call(
        PatchRequest(
            changes={"ppo.clip_coef": 0.1, "envrunner.reward_scale": 0.5}, at_iteration=target, author="e2e:scheduled"
        )
    )
    assert scheduled.status is PatchStatus.SCHEDULED
    a.wait_iteration(5)
    now = a.call(
        PatchRequest(changes={"ppo.lr": 1e-3, "ppo.ent_coef": 0.02, "envrunner.reward_scale": 2.0}, author="e2e:now")
    )
    assert now.status is PatchStatus.APPLIED, now
    assert max(e.ltime.iteration for e in now.applied) < target
    run_dir_a = a.run_dir
    assert wait_exit(a.procs, 60), f"run A did not finish by itself:\n{a.logs()}"
    assert [p.returncode for p in a.procs] == [0] * len(a.procs), a.logs()
    journal_a = run_dir_a / "patches.jsonl"
    entries_a = [json.loads(line) for line in journal_a.read_text().splitlines()]
    assert len(entries_a) == 4, entries_a  # two patches, each by the learner and the env-runner
    assert {e["patch_id"] for e in entries_a} == {scheduled.patch_id, now.patch_id}

    b = runs("b", [budget, f"patches={journal_a}"]).start()
    b.wait_state(RunState.RUNNING)
    run_dir_b = b.run_dir
    assert wait_exit(b.procs, 60), f"run B did not finish by itself:\n{b.logs()}"
    assert [p.returncode for p in b.procs] == [0] * len(b.procs), b.logs()
    entries_b = [json.loads(line) for line in (run_dir_b / "patches.jsonl").read_text().splitlines()]

    def replayed(entries: list[dict], prefix: str = "") -> list[tuple]:
        return sorted(
            (e["service"], json.dumps(e["changes"], sort_keys=True), position_key(e), prefix + e["author"])
            for e in entries
        )

    assert replayed(entries_b) == replayed(entries_a, prefix="replay:")

    # same seed, one env-runner, one torch thread: the same patches at the same logical times
    # must give the same training, number for number
    rows_a, rows_b = read_metrics(run_dir_a), read_metrics(run_dir_b)
    assert len(rows_a) == len(rows_b) == num_iterations
    columns = [c for c in rows_a[0] if c not in WALL_CLOCK_COLUMNS]
    differ = {}
    for column in columns:
        first = next((int(ra["iteration"]) for ra, rb in zip(rows_a, rows_b) if ra[column] != rb[column]), None)
        if first is not None:
            differ[column] = first
    assert not differ, "runs A and B differ (column: first iteration that differs): " + ", ".join(
        f"{c}: {i}" for c, i in sorted(differ.items(), key=lambda kv: kv[1])
    )


@pytest.mark.parametrize("mode", ["sync", "overlap"])
def test_a_live_budget_patch_moves_the_end(runs, mode):
    """`patch run.total_env_steps=N`, once mid-run and once landing in the last update: each time the run
    trains on to the first boundary past N, its lr annealing to 0 at the new end; the journal, params,
    status and the logger's progress follow."""
    settings = ["run.total_env_steps=10240", f"run.mode={mode}"]  # 40 iterations of 256 env steps
    run = runs(f"budget-{mode}", settings).start()
    per, first = run.per_iteration, run.num_iterations
    second, third = first + 10, first + 20
    budget = third * per - per // 2  # not a whole iteration: the run ends at the boundary past it
    run.wait_iteration(2)
    run_dir = run.run_dir  # (asked while the run is live)
    paused = run.cli("pause", "--json")  # so the patches are in well before the old end, on a loaded machine too
    assert paused.returncode == 0, paused.stderr
    early = run.call(PatchRequest(changes={"run.total_env_steps": second * per}, author="e2e"))
    assert early.status is PatchStatus.ON_RESUME, early
    # due once `second` updates are done: only the safe point after the (then) last update reaches it
    late = run.call(PatchRequest(changes={"run.total_env_steps": budget}, at_iteration=second, author="e2e"))
    assert late.status is PatchStatus.SCHEDULED, late
    assert run.params()["run.total_env_steps"] == budget
    assert run.status().total_env_steps == budget
    assert run.cli("resume", "--json").returncode == 0
    assert wait_exit(run.procs, 90), f"the run did not finish by itself:\n{run.logs()}"
    assert [p.returncode for p in run.procs] == [0] * len(run.procs), run.logs()

    (a,), (b,) = ([e for e in run.journal() if e["patch_id"] == r.patch_id] for r in (early, late))
    assert a["service"].startswith("learner") and a["minibatch"] == 0 == b["minibatch"]
    assert a["changes"] == {"run.total_env_steps": {"old": first * per, "new": second * per}}
    assert b["changes"] == {"run.total_env_steps": {"old": second * per, "new": budget}}
    at = a["ltime"]["iteration"]  # the updates done when it applied: update `at` (row at + 1) is the first
    assert 2 <= at < first and b["ltime"]["iteration"] == second
    rows = read_metrics(run_dir)
    assert [int(r["iteration"]) for r in rows] == list(range(1, third + 1))
    for row in rows:
        i = int(row["iteration"])
        planned = first if i <= at else second if i <= second else third
        assert same(first * per if i <= at else second * per if i <= second else budget, row["run.total_env_steps"]), (
            at,
            row,
        )
        assert float(row["lr"]) == pytest.approx(run.config.algo.lr * (1 - (i - 1) / planned), rel=1e-9), (at, row)
    last = [line for line in log_text(run.procs[-1]).splitlines() if line.startswith("iter ")][-1]
    assert f"({100.0 * third * per / budget:5.1f}%)" in last, last  # the logger's progress: the new budget
    if mode == "sync":  # the journal replays the budget too: the same config + journal is the same run
        replay = runs("budget-replay", [*settings, f"patches={run_dir / 'patches.jsonl'}"]).start()
        replay.wait_state(RunState.RUNNING)
        replay_dir = replay.run_dir
        assert wait_exit(replay.procs, 90), f"the replay did not finish by itself:\n{replay.logs()}"
        again = read_metrics(replay_dir)
        columns = [c for c in rows[0] if c not in WALL_CLOCK_COLUMNS]
        assert [[r[c] for c in columns] for r in again] == [[r[c] for c in columns] for r in rows]
