"""The whole stack as a user runs it: `honcho start` with the repo's Procfile.

Real processes, real sockets on free ports, a real learning curve. Each test
stops what it started (by process group, bounded waits).
"""

from __future__ import annotations

import math
import os
import re
import signal
from dataclasses import dataclass
from pathlib import Path

import msgpack
import pytest
import zmq
from helpers import REPO, Run, Supervised, alive, read_metrics, wait_until
from helpers_messages import sample

from dynamicrl.core import checkpoints
from dynamicrl.protocol import security
from dynamicrl.protocol.codec import Session, decode
from dynamicrl.protocol.messages import ErrorCode, ErrorReply
from dynamicrl.protocol.sockets import connect

pytestmark = pytest.mark.e2e

SOLVED = 475.0
#: The default run (150k env steps) solves CartPole by 25k env steps with one env-runner and by 43k with two:
#: a learning test stops at this budget, its learning rate annealed as over the default's 150016 steps
#: (586 iterations of 8 x 32, 293 of 2 x 8 x 32), so the first steps learn exactly as the default run does.
LEARNS = {
    1: ["run.total_env_steps=40960", "algo.anneal_env_steps=150016"],
    2: ["run.total_env_steps=61440", "algo.anneal_env_steps=150016"],
}
#: the learning runs: under `honcho start` (one env-runner) and under `dynamicrl run` (two)
LEARNERS = [("honcho", 1), ("run", 2)]


def honcho(runs, overrides: list[str], envrunners: int = 1) -> tuple[Run, Supervised]:
    """`honcho start` of a run with the default config from the environment, as many env-runners as
    register (``run.envrunners=auto``)."""
    run = runs(
        "honcho", ["run.envrunners=auto", *overrides], envrunners=envrunners, config=REPO / "configs/defaults.yaml"
    )
    return run, run.honcho()


def status(run: Run) -> dict | None:
    """`dynamicrl status --json` as a user would call it; None while nobody answers."""
    out = run.cli("status", "--json", "--timeout", "1", timeout=30)
    return out.json if out.returncode == 0 else None


def gone(supervised: Supervised) -> bool:
    """No process honcho started (that the test saw) runs any more."""
    supervised.watch()
    return not any(alive(pid) for pid in supervised.seen)


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


def poke_garbage(h: Run) -> None:
    """Feed a live run bad input: the learner answers each with an error, nothing changes."""
    ctx = security.context()
    try:
        dealer = ctx.socket(zmq.DEALER)
        connect(dealer, h.data)
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
        connect(pub, h.bus_in)
        for _ in range(20):
            pub.send_multipart([b"metrics.train", b"\x00garbage"])
    finally:
        ctx.destroy(linger=0)


@dataclass
class Learning:
    """One learning run, started by the ``learning`` fixture; ``running``: its mid-run `dynamicrl status --json`."""

    run: Run
    supervised: Supervised
    running: dict


def mid_run_status(h: Run, envrunners: int) -> dict:
    """Every member up and healthy, as `dynamicrl status --json` answers mid-run."""
    # the previewer too, which may join a moment later: it draws the pause previews (video.pause_previews)
    members = [("learner", 0), ("logger", 0), ("previewer", 0)] + [("envrunner", r) for r in range(envrunners)]
    # polled in-process (a `dynamicrl status` per poll would start an interpreter each time), then asked as a user
    h.wait_iteration(1, timeout=180)

    def all_up() -> bool:  # joined and ready (the previewer starts last, MuJoCo and all)
        services = h.status().services
        return len(services) == len(members) and all(s.health.value == "ok" for s in services)

    wait_until(all_up, timeout=90, message=f"not every service up: {h.status().services}")
    running = wait_until(lambda: status(h), timeout=30, message="`dynamicrl status` never answered")
    assert running["ltime"], running
    roles = sorted((s["role"], s["rank"]) for s in running["services"])
    assert roles == sorted(members)
    assert all(s["health"] == "ok" for s in running["services"]), running
    assert running["state"] == "running" and running["sps"] > 0
    return running


@pytest.fixture(scope="module")
def learning(tmp_path_factory):
    """The two learning runs, started together (a sync run with one env-runner leaves most of a core idle):
    `honcho start` with one env-runner, fed bad input mid-run, and `dynamicrl run --envrunners 2` from outside
    the repository. Their mid-run status is checked here, while both still train; each test checks the rest
    of one. Every process either started is stopped by pid at the end (bounded)."""
    tmp = tmp_path_factory.mktemp("learning")
    config = REPO / "configs/defaults.yaml"
    made = [Run(tmp / name, ["run.envrunners=auto", *LEARNS[n]], envrunners=n, config=config) for name, n in LEARNERS]
    try:
        one, two = made
        started = [(one, one.honcho()), (two, two.launch("--envrunners", "2"))]
        found = {}
        for run, supervised in started:
            found[run.envrunners] = Learning(run, supervised, mid_run_status(run, run.envrunners))
            if run is one:
                poke_garbage(run)
        yield found
    finally:
        for run in made:
            run.close()


def check_learned(learned: Learning) -> None:
    """Status answered mid-run (``learned.running``), honcho exited 0, CSV and TensorBoard agree and show
    CartPole solved."""
    h, supervised, envrunners = learned.run, learned.supervised, learned.run.envrunners
    assert supervised.wait(timeout=600) == 0, supervised.log()[-3000:]
    rows = read_metrics(h.run_dir)
    iterations = [int(r["iteration"]) for r in rows]
    assert iterations == list(range(1, len(rows) + 1)), "iterations missing or duplicated in metrics.csv"
    returns = [float(r["return_mean"]) for r in rows if r["return_mean"]]
    best = max(returns)
    assert best >= SOLVED, f"CartPole not solved: best return_mean {best:.1f} in {rows[-1]['env_steps']} steps"
    first_solved = next(r for r in rows if r["return_mean"] and float(r["return_mean"]) >= SOLVED)

    tb = dict(tensorboard_scalars(h.run_dir, "train/return_mean"))
    step = int(first_solved["env_steps"])
    assert math.isclose(tb[step], float(first_solved["return_mean"]), rel_tol=1e-6)

    assert f"from {envrunners} env-runner(s)" in supervised.log()
    wait_until(lambda: gone(supervised), timeout=10)


def test_cartpole_learns_under_honcho(learning):
    """`honcho start`, one env-runner, bad input mid-run."""
    check_learned(learning[1])


def test_two_envrunners_both_contribute_under_dynamicrl_run(learning):
    """`dynamicrl run --envrunners 2` from outside the repository."""
    check_learned(learning[2])


def test_ctrl_c_checkpoints_then_stops_every_process(runs):
    """Ctrl-C: honcho SIGTERMs every process at once; the run still ends with a last checkpoint."""
    h, supervised = honcho(runs, ["run.total_env_steps=100000000"])
    reply = wait_until(lambda: (s := status(h)) and s["ltime"] and s["ltime"]["iteration"] >= 2 and s, timeout=180)
    os.killpg(supervised.proc.pid, signal.SIGINT)
    supervised.wait(timeout=30)
    wait_until(lambda: gone(supervised), timeout=10)
    assert "rc=-" not in supervised.log(), supervised.log()[-2000:]  # every service exited on its own, not killed
    last = checkpoints.latest_good(h.run_dir / "checkpoints")
    assert checkpoints.verify(last)["iteration"] > reply["ltime"]["iteration"]
    # said twice, no more: the checkpoint written, and the stop after it
    assert supervised.log().count(str(last)) == 2, supervised.log()[-3000:]
    # the controller's own SIGTERM or a member's stop request, whichever reaches the controller first
    why = r"(?:stop requested by \S+|SIGTERM|SIGINT)"
    assert re.search(rf"stopping \({why} after checkpoint {re.escape(str(last))}", supervised.log())
