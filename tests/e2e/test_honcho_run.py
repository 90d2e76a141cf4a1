"""The whole stack as a user runs it: `honcho start` with the repo's Procfile.

Real processes, real sockets on free ports, a real learning curve. Each test
stops what it started (by process group, bounded waits).
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import msgpack
import zmq

from dynamicrl.protocol.codec import Session, decode
from dynamicrl.protocol.messages import ErrorCode, ErrorReply
from dynamicrl.core import checkpoints
from helpers import free_ports, wait_until
from helpers_messages import sample

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SOLVED = 475.0


class Honcho:
    """`honcho start` in its own process group, with the run's config from the environment."""

    def __init__(self, tmp_path: Path, overrides: list[str], envrunners: int = 1,
                 config: str = "configs/defaults.yaml") -> None:
        ports = free_ports(4)
        self.endpoint = f"tcp://127.0.0.1:{ports[0]}"
        self.bus_in, self.data = f"tcp://127.0.0.1:{ports[1]}", f"tcp://127.0.0.1:{ports[3]}"
        self.overrides = [
            f"addresses.controller={self.endpoint}",
            f"addresses.bus_in=tcp://127.0.0.1:{ports[1]}",
            f"addresses.bus_out=tcp://127.0.0.1:{ports[2]}",
            f"addresses.data=tcp://127.0.0.1:{ports[3]}",
            f"run.root={tmp_path / 'runs'}",
            *overrides,
        ]
        self.env = {**os.environ, "DYNAMICRL_CONFIG": config, "DYNAMICRL_OVERRIDES": " ".join(self.overrides)}
        self.log_path = tmp_path / "honcho.log"
        self.runs = tmp_path / "runs"
        cmd = [sys.executable, "-m", "honcho", "-f", str(REPO / "Procfile"), "start", "-c", f"envrunner={envrunners}"]
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        self.pids: set[int] = set()

    def status(self) -> dict | None:
        """`dynamicrl status --json` as a user would call it; None while nobody answers."""
        out = subprocess.run([sys.executable, "-m", "dynamicrl.clients.cli", "status", "--json", "--timeout", "1"],
                             cwd=REPO, env=self.env, capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            return None
        reply = json.loads(out.stdout)
        self.pids |= {s["pid"] for s in reply["services"]}
        return reply

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text()

    def run_dir(self) -> Path:
        (run_dir,) = [p for p in self.runs.iterdir() if p.is_dir()]
        return run_dir

    def stop(self) -> None:
        """SIGINT like Ctrl-C, then SIGKILL whatever is left (honcho's children have their own groups)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        for pid in self.alive():
            os.kill(pid, signal.SIGKILL)

    def alive(self) -> list[int]:
        alive = []
        for pid in self.pids:
            try:
                os.kill(pid, 0)
                alive.append(pid)
            except ProcessLookupError:
                pass
        return alive


@pytest.fixture
def honcho(tmp_path):
    started: list[Honcho] = []

    def start(*args, **kwargs) -> Honcho:
        started.append(Honcho(tmp_path, *args, **kwargs))
        return started[-1]

    yield start
    for h in started:
        h.stop()


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def tensorboard_scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


GARBAGE = [
    [b"data.rollout", b"\xc1\xff not msgpack"],
    [b"data.rollout", msgpack.packb({"v": "9.0", "type": "data.rollout", "body": {}})],
    [b"just one frame"],
]


def poke_garbage(h: Honcho) -> None:
    """Feed a live run bad input: the learner answers each with an error, nothing changes."""
    ctx = zmq.Context()
    try:
        dealer = ctx.socket(zmq.DEALER)
        dealer.connect(h.data)
        stale = sample("data.rollout").model_copy(update={"rank": 0, "version": 10**6})
        for frames in [*GARBAGE, Session("intruder").encode(stale)]:
            dealer.send_multipart(frames)
        codes = []
        for _ in range(len(GARBAGE) + 1):
            assert dealer.poll(10_000), "the learner stopped answering"
            reply = decode(dealer.recv_multipart()).message
            assert isinstance(reply, ErrorReply)
            codes.append(reply.code)
        assert codes == [ErrorCode.BAD_MESSAGE] * len(GARBAGE) + [ErrorCode.REJECTED]
        pub = ctx.socket(zmq.PUB)
        pub.connect(h.bus_in)
        for _ in range(20):
            pub.send_multipart([b"metrics.train", b"\x00garbage"])
    finally:
        ctx.destroy(linger=0)


def check_learned(h: Honcho, envrunners: int, garbage: bool = False) -> None:
    """Status answered mid-run, honcho exited 0, CSV and TensorBoard agree and show CartPole solved."""
    running = wait_until(lambda: (s := h.status()) and s["ltime"] and s, timeout=180)
    roles = sorted((s["role"], s["rank"]) for s in running["services"])
    assert roles == sorted([("learner", 0), ("logger", 0)] + [("envrunner", r) for r in range(envrunners)])
    assert all(s["health"] == "ok" for s in running["services"]), running
    assert running["state"] == "running" and running["sps"] > 0
    if garbage:
        poke_garbage(h)

    assert h.wait(timeout=600) == 0, h.log()[-3000:]
    rows = read_metrics(h.run_dir())
    iterations = [int(r["iteration"]) for r in rows]
    assert iterations == list(range(1, len(rows) + 1)), "iterations missing or duplicated in metrics.csv"
    returns = [float(r["return_mean"]) for r in rows if r["return_mean"]]
    best = max(returns)
    assert best >= SOLVED, f"CartPole not solved: best return_mean {best:.1f} in {rows[-1]['env_steps']} steps"
    first_solved = next(r for r in rows if r["return_mean"] and float(r["return_mean"]) >= SOLVED)

    tb = dict(tensorboard_scalars(h.run_dir(), "train/return_mean"))
    step = int(first_solved["env_steps"])
    assert math.isclose(tb[step], float(first_solved["return_mean"]), rel_tol=1e-6)

    assert f"from {envrunners} env-runner(s)" in h.log()
    wait_until(lambda: not h.alive(), timeout=10)


def test_cartpole_learns_under_honcho(honcho):
    check_learned(honcho([]), envrunners=1, garbage=True)


def test_two_envrunners_both_contribute(honcho):
    check_learned(honcho([], envrunners=2), envrunners=2)


def test_ctrl_c_checkpoints_then_stops_every_process(honcho, tmp_path):
    """Ctrl-C: honcho SIGTERMs every process at once; the run still ends with a last checkpoint."""
    h = honcho(["run.total_env_steps=100000000"])
    status = wait_until(lambda: (s := h.status()) and s["ltime"] and s["ltime"]["iteration"] >= 2 and s, timeout=180)
    os.killpg(h.proc.pid, signal.SIGINT)
    h.wait(timeout=30)
    wait_until(lambda: not h.alive(), timeout=10)
    assert "rc=-" not in h.log(), h.log()[-2000:]  # every service exited on its own, not killed
    last = checkpoints.latest_good(h.run_dir() / "checkpoints")
    assert checkpoints.verify(last)["iteration"] > status["ltime"]["iteration"]
    assert f"after checkpoint {last}" in h.log(), h.log()[-3000:]
