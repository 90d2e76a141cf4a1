"""The learner against peers that send what it must not use: real processes and sockets.

* A client's key may not read the weights (``PolicyRequest``).
* Rollouts from a stranger (a DEALER of its own, even when it claims a member's name) that would
  crash the learner (actions out of range, moments of the wrong shape) or poison it (NaN rewards)
  are refused with ``ErrorReply(rejected)`` naming the field; the run trains on, unaffected.
* A peer without CURVE is refused at the learner's data socket and counted in ``status``.
* A controller that never sends ``CheckpointDone`` (a stand-in here) holds the learner only for
  ``checkpoint.timeout_s`` and a margin: it says the checkpoint was abandoned and trains on.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pytest
import zmq
from helpers import Run, base_overrides, endpoint, free_ports, log_text, start_service, stop, wait_until
from helpers_members import StandInController

from dynamicrl.core.settings import DEFAULT_CONFIG, load_config
from dynamicrl.protocol import security
from dynamicrl.protocol.codec import Session
from dynamicrl.protocol.messages import (
    ErrorCode,
    ErrorReply,
    PolicyRequest,
    PolicyWeights,
    Rollout,
)
from dynamicrl.protocol.sockets import connect, recv, send

REPLY_TIMEOUT_MS = 30_000
SMALL = ["algo.num_steps=8", "env.num_envs=2"]


def cartpole_rollout(version: int, num_steps: int, num_envs: int, **changes) -> Rollout:
    """A rollout as a CartPole env-runner of rank 0 collects it, with ``changes``."""
    t, n = num_steps, num_envs
    fields: dict[str, Any] = dict(
        rank=0,
        version=version,
        obs=np.zeros((t, n, 4), np.float32),
        actions=np.zeros((t, n), np.int64),
        logprobs=np.full((t, n), -0.69, np.float32),
        values=np.zeros((t, n), np.float32),
        rewards=np.ones((t, n), np.float32),
        dones=np.zeros((t, n), bool),
        trunc_values=np.zeros((t, n), np.float32),
        last_obs=np.zeros((n, 4), np.float32),
        last_dones=np.zeros(n, bool),
        episode_returns=[],
        episode_lengths=[],
        collect_s=0.01,
    )
    fields.update(changes)
    return Rollout(**fields)


def ask(sock: zmq.Socket, session: Session, message):
    send(sock, session, message)
    assert sock.poll(REPLY_TIMEOUT_MS), f"no answer to {message.TYPE}"
    return recv(sock).message


@pytest.fixture
def dealer():
    """DEALERs with a client's key, or with the key of the member ``identity`` names (``member``)."""
    contexts = [security.context()]
    made: list[zmq.Socket] = []

    def make(address: str, identity: bytes, member: bool = False) -> zmq.Socket:
        if member:
            contexts.append(security.context(role=identity.decode().split(".")[0], name=identity.decode()))
        sock = contexts[-1 if member else 0].socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IDENTITY, identity)
        connect(sock, address)
        made.append(sock)
        return sock

    yield make
    for sock in made:
        sock.close(linger=0)
    for ctx in contexts:
        ctx.term()


def test_rollouts_from_a_stranger_are_refused_and_training_goes_on(tmp_path, dealer):
    with Run(tmp_path, ["run.total_env_steps=100000000", *SMALL]) as run:
        run.start()
        status = run.wait_iteration(2, timeout=120)
        cfg = run.config
        forger = dealer(run.data, b"forger")
        session = Session("envrunner.1", status.run_id)  # the member's name, not its connection
        t, n = cfg.algo.num_steps, cfg.env.num_envs
        moments = {"obs.count": np.array([8.0]), "obs.mean": np.zeros(3), "obs.var": np.ones(3)}
        rewards = np.ones((t, n), np.float32)
        rewards[3, 1] = np.nan
        attacks = {
            "actions[0, 0] is 7, outside 0..1 (Discrete(2))": {"actions": np.full((t, n), 7, np.int64)},
            "moments['obs.mean'] has shape (3,), expected (4,)": {"moments": moments},
            "rewards[3, 1] is nan": {"rewards": rewards},
        }
        attacks["a valid rollout, sent first"] = {}
        weights = ask(forger, session, PolicyRequest(rank=0))  # a client's key may not read the policy
        assert isinstance(weights, ErrorReply) and weights.code is ErrorCode.REJECTED, weights
        assert weights.message == "client/client may not read the policy"
        version = run.status().ltime.iteration  # the policy the run collects with about now
        for changes in attacks.values():  # the field checks are for members: a stranger is refused first
            reply = ask(forger, session, cartpole_rollout(version, t, n, **changes))
            assert isinstance(reply, ErrorReply) and reply.code is ErrorCode.REJECTED, reply
            assert reply.message == "rollout from envrunner.1 (rank 0): not sent by an env-runner of this run"
        refused = run.status().security.refused_handshakes
        plain_ctx = zmq.Context()  # no CURVE: the learner's data socket refuses it, and status counts it
        plain = plain_ctx.socket(zmq.DEALER)
        try:
            plain.connect(run.data)
            plain.send_multipart(session.encode(PolicyRequest(rank=0)))
            assert not plain.poll(1000)
            wait_until(
                lambda: run.status().security.refused_handshakes > refused,
                timeout=30,
                message="the learner's refusal not counted in status",
            )
        finally:
            plain.close(linger=0)
            plain_ctx.term()
        after = run.status().ltime.iteration
        run.wait_iteration(after + 3, timeout=120)  # trains on: learner, env-runner and logger alive
        rows = run.rows_after(after + 3)
        assert all(math.isfinite(float(r[k])) for r in rows for k in ("policy_loss", "value_loss")), rows
        learner = log_text(run.procs[1])
        assert learner.count("refused rollout from envrunner.1 (rank 0)") == len(attacks), learner
        assert "Traceback" not in learner


def test_a_checkpoint_never_done_holds_the_learner_only_for_a_bounded_time(tmp_path, dealer):
    ports = free_ports(4)
    overrides = [*base_overrides(tmp_path, ports), *SMALL, "checkpoint.every_iterations=1", "checkpoint.timeout_s=0.5"]
    cfg = load_config(DEFAULT_CONFIG, overrides)
    controller = StandInController(endpoint(ports[0]), cfg.to_dict(), str(tmp_path))
    controller.start()
    learner = start_service("learner", overrides, tmp_path)
    try:
        runner = dealer(endpoint(ports[3]), b"envrunner.1", member=True)
        session = Session("envrunner.1", "stand-in")
        t, n = cfg.algo.num_steps, cfg.env.num_envs
        assert ask(runner, session, PolicyRequest(rank=0)).version == 0
        started = time.monotonic()
        weights = ask(runner, session, cartpole_rollout(0, t, n))  # update 1, checkpoint 1 never done
        held = time.monotonic() - started
        assert isinstance(weights, PolicyWeights) and weights.version == 1, weights
        assert 2.5 <= held < 20, held  # timeout_s (0.5) + the learner's margin (2 s), then on
        assert "checkpoint periodic-1 abandoned: no word from the controller in 2.5 s; training goes on" in log_text(
            learner
        )
        assert ask(runner, session, cartpole_rollout(1, t, n)).version == 2  # it trains on
        wait_until(lambda: controller.parts == ["periodic-1", "periodic-2"], timeout=10, message=str(controller.parts))
        assert learner.poll() is None, log_text(learner)
    finally:
        stop(learner)
        controller.closing = True
        controller.join(timeout=10)
