"""What CURVE costs on the wire alone: the CPU of one iteration's data traffic, authentication on vs off.

A training run's SPS varies by 10-15% from run to run on 2 cores, more than the 3% goal of issue
#16, so bench/curve_cost.py's SPS ratio cannot show the goal is met. This measures the one place
CURVE can cost per iteration, with little noise: the data messages every iteration moves (each
env-runner's ``Rollout`` to the learner, the learner's ``PolicyWeights`` back), built at the
config's real shapes (its env's spaces, its algorithm's real weights) and encoded by the
project's codec, sent round trip between a DEALER (the env-runner's key) and a ROUTER (the
learner's, bound as the CURVE server) over TCP on 127.0.0.1, in one process: the CPU seconds of
this process (its ZeroMQ I/O threads, where encryption happens, included) per round trip, with
curve on and off, alternating ``--repeats`` times. Heartbeats, bus metrics and status requests
are small and few next to these and are left out.

    python bench/curve_wire.py [--config PATH] [--round-trips 200] [--repeats 5]

bench/curve_cost.py calls ``measure`` and divides the difference by the CPU its runs spent per
iteration. Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zmq

from dynamicrl.core.settings import Config, load_config
from dynamicrl.protocol import security
from dynamicrl.protocol.codec import Session
from dynamicrl.protocol.messages import PolicyWeights, Rollout
from dynamicrl.protocol.sockets import bind, connect, make_socket

REPO = Path(__file__).resolve().parents[1]
SHOWCASE = REPO / "configs/experiments/mujoco_ant_interactive.yaml"


@dataclass
class Wire:
    rollout_bytes: int
    weights_bytes: int
    cpu_s: dict[bool, list[float]]  # curve -> CPU seconds per round trip, one per repeat
    wall_s: dict[bool, list[float]]

    def median_cpu_s(self, curve: bool) -> float:
        return statistics.median(self.cpu_s[curve])


def frames_of(config: Config) -> tuple[list[bytes], list[bytes]]:
    """One env-runner's rollout and the weights sent back, encoded, at the config's shapes."""
    from dynamicrl.core.algorithms import get_algorithm, load_class
    from dynamicrl.core.envs import make_env, space_shape

    probe = make_env(config.env)
    obs_space, act_space = probe.observation_space, probe.action_space
    probe.close()
    algorithm = load_class(get_algorithm(config.algo.name).learner)(
        config.algo, obs_space, act_space, seed=0, num_iterations=1
    )
    t, n, obs = config.algo.num_steps, config.env.num_envs, space_shape(obs_space)
    rng = np.random.default_rng(0)
    act_shape = space_shape(act_space)
    rollout = Rollout(
        rank=0,
        version=0,
        obs=rng.standard_normal((t, n, *obs)).astype(np.float32),
        actions=rng.standard_normal((t, n, *act_shape)).astype(np.float32) if act_shape else np.zeros((t, n), np.int64),
        logprobs=rng.standard_normal((t, n)).astype(np.float32),
        values=rng.standard_normal((t, n)).astype(np.float32),
        rewards=rng.standard_normal((t, n)).astype(np.float32),
        dones=np.zeros((t, n), bool),
        trunc_values=np.zeros((t, n), np.float32),
        last_obs=rng.standard_normal((n, *obs)).astype(np.float32),
        last_dones=np.zeros(n, bool),
        episode_returns=[0.0] * n,
        episode_lengths=[1000] * n,
        collect_s=1.0,
    )
    normalizer = {"obs.count": np.array([1.0]), "obs.mean": np.zeros(obs), "obs.var": np.ones(obs)}
    weights = PolicyWeights(version=1, weights=algorithm.get_weights(), normalizer=normalizer)
    session = Session("bench", "bench-run")
    return session.encode(rollout), session.encode(weights)


def round_trips(curve: bool, keys: str, rollout: list[bytes], weights: list[bytes], count: int) -> tuple[float, float]:
    """CPU and wall seconds per round trip (rollout there, weights back) over a fresh TCP connection."""
    learner_ctx = security.context(curve=curve, keys=keys, role="learner", name="learner.1")
    runner_ctx = security.context(curve=curve, keys=keys, role="envrunner", name="envrunner.1")
    learner = make_socket(learner_ctx, zmq.ROUTER)
    runner = make_socket(runner_ctx, zmq.DEALER, identity=b"envrunner.1")
    try:
        address = bind(learner, "tcp://127.0.0.1:0")
        connect(runner, address)
        for _ in range(3):  # the handshake and the first buffers, outside the timing
            _round_trip(runner, learner, rollout, weights)
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(count):
            _round_trip(runner, learner, rollout, weights)
        return (time.process_time() - cpu) / count, (time.perf_counter() - wall) / count
    finally:
        runner.close(linger=0)
        learner.close(linger=0)
        runner_ctx.term()
        learner_ctx.term()


def _round_trip(runner: zmq.Socket, learner: zmq.Socket, rollout: list[bytes], weights: list[bytes]) -> None:
    runner.send_multipart(rollout, copy=False)
    route, *_ = learner.recv_multipart(copy=False)
    learner.send_multipart([route, *weights], copy=False)
    runner.recv_multipart(copy=False)


def measure(config: Path, count: int = 200, repeats: int = 5) -> Wire:
    rollout, weights = frames_of(load_config(config))
    found = Wire(sum(map(len, rollout)), sum(map(len, weights)), {True: [], False: []}, {True: [], False: []})
    with tempfile.TemporaryDirectory(prefix="drl-wire-") as keys:
        for k in range(repeats):
            for curve in (True, False) if k % 2 == 0 else (False, True):  # on, off, off, on, ...
                cpu_s, wall_s = round_trips(curve, keys, rollout, weights, count)
                found.cpu_s[curve].append(cpu_s)
                found.wall_s[curve].append(wall_s)
    return found


def table(found: Wire, envrunners: int) -> None:
    on, off = found.median_cpu_s(True), found.median_cpu_s(False)
    wall_on, wall_off = (statistics.median(found.wall_s[c]) for c in (True, False))
    print(
        f"one round trip: a rollout of {found.rollout_bytes / 1e6:.2f} MB there, weights of "
        f"{found.weights_bytes / 1e6:.2f} MB back; {envrunners} per iteration\n"
    )
    print("| curve | CPU ms per round trip (median; each repeat) | wall ms per round trip (median) |")
    print("|---|---:|---:|")
    for curve, cpu, wall in ((True, on, wall_on), (False, off, wall_off)):
        each = ", ".join(f"{s * 1e3:.2f}" for s in found.cpu_s[curve])
        print(f"| {'on' if curve else 'off'} | {cpu * 1e3:.2f} ({each}) | {wall * 1e3:.2f} |")
    print(f"\nCURVE's CPU per iteration: {(on - off) * envrunners * 1e3:.2f} ms ({envrunners} round trip(s)).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=SHOWCASE, help="default: the Ant showcase")
    parser.add_argument("--round-trips", type=int, default=200, help="per repeat and setting (default 200)")
    parser.add_argument("--repeats", type=int, default=5, help="alternating on/off repeats (default 5)")
    args = parser.parse_args()
    from dynamicrl.clients.launcher import envrunner_count

    envrunners = envrunner_count(load_config(args.config), None)
    table(measure(args.config, args.round_trips, args.repeats), envrunners)


if __name__ == "__main__":
    main()
