"""`dynamicrl watch` lines, from messages through the real codec (no sockets needed)."""

from __future__ import annotations

import numpy as np

from dynamicrl.clients.cli.watch import MAX_LINE, LineFormatter
from dynamicrl.protocol.codec import Received, Session, decode
from dynamicrl.protocol.messages import (
    EpisodeStats,
    ErrorCode,
    ErrorReply,
    JournalEntry,
    LogicalTime,
    PatchEvent,
    PolicyWeights,
    RunState,
    RunStateChanged,
    TrainMetrics,
    ValueChange,
)


def _received(message, sender: str = "controller", run_id: str | None = "run-1") -> Received:
    return decode(Session(sender, run_id).encode(message))


def _body(line: str | None) -> str:
    assert line is not None, "the formatter skipped the message"
    return line.split("  ", 1)[1]  # drop the clock


def test_state_beacons_that_repeat_are_skipped() -> None:
    fmt = LineFormatter()
    starting = _received(RunStateChanged(state=RunState.STARTING))
    assert _body(fmt.format(starting)) == "state    starting  (run run-1)"
    assert fmt.format(starting) is None  # the 0.5 s beacon
    change = _received(RunStateChanged(state=RunState.RUNNING, reason="3 members, 1 env-runner(s)"))
    assert _body(fmt.format(change)) == "state    running: 3 members, 1 env-runner(s)"
    assert fmt.format(_received(RunStateChanged(state=RunState.RUNNING))) is None
    restarted = _received(RunStateChanged(state=RunState.RUNNING), run_id="run-2")
    assert _body(fmt.format(restarted)) == "state    running  (run run-2)"


def test_train_line() -> None:
    line = LineFormatter().format(
        _received(
            TrainMetrics(
                iteration=29,
                env_steps=7424,
                sps=2218.4,
                return_mean=168.66,
                episodes=3,
                values={"lr": 0.0025, "entropy": 0.59, "value_loss": 12.25, "policy_loss": -0.0123, "aux_loss": 1.0},
            ),
            sender="learner.1",
        )
    )
    assert _body(line).split() == [
        "train",
        "iter",
        "29",
        "steps",
        "7424",
        "return",
        "168.7",
        "sps",
        "2218",
        "policy_loss",
        "-0.0123",
        "value_loss",
        "12.25",
        "entropy",
        "0.59",
        "aux_loss",
        "1",
    ]
    no_episode = LineFormatter().format(
        _received(TrainMetrics(iteration=1, env_steps=256, sps=1.0, episodes=0, values={}))
    )
    assert no_episode is not None
    assert "return n/a" in no_episode


def test_patch_and_episode_lines() -> None:
    entry = JournalEntry(
        patch_id="12ff297391c6",
        author="cli@root",
        service="learner.1",
        changes={"ppo.lr": ValueChange(old=0.0025, new=0.0001), "ppo.ent_coef": ValueChange(old=0.0, new=0.01)},
        ltime=LogicalTime(iteration=34, env_step=8704),
        minibatch=14,
        time=0.0,
    )
    assert _body(LineFormatter().format(_received(PatchEvent(entry=entry)))) == (
        "patch    12ff297391c6 by cli@root applied by learner.1 at iteration 34, env step 8704, minibatch 14: "
        "ppo.ent_coef 0.0 -> 0.01, ppo.lr 0.0025 -> 0.0001"
    )
    episodes = _received(EpisodeStats(rank=1, env_steps=4096, returns=[10.0, 30.0], lengths=[10, 30]), "envrunner.2")
    assert _body(LineFormatter().format(episodes)) == (
        "episodes rank 1: 2 finished, return 20.0 (min 10.0, max 30.0)  length 20.0  env steps 4096"
    )


def test_any_other_type_gets_a_generic_short_line() -> None:
    error = LineFormatter().format(_received(ErrorReply(code=ErrorCode.CONFLICT, message="busy"), "someone"))
    assert _body(error) == "control.error someone  code=conflict, message='busy', problems={}"
    weights = PolicyWeights(version=3, weights={f"policy.w{i}": np.zeros((64, 4), np.float32) for i in range(20)})
    line = LineFormatter().format(_received(weights, "learner.1"))
    assert line is not None
    assert "data.policy_weights learner.1  version=3, weights={20 keys}" in line and len(line) <= MAX_LINE
