"""A custom env that produces NaN rewards (the common real case of a bad rollout): the learner
refuses the rollout, never trains on it, and the run stops with one clear line naming the
env-runner and the field, after a last checkpoint, exit code non-zero and no traceback. With the
env fixed, the run resumes from that checkpoint and trains to the end."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import pytest

from dynamicrl.core import checkpoints

pytestmark = pytest.mark.e2e

PLUGINS = str(Path(__file__).resolve().parent / "plugins")
#: 2 sub-envs of 16 steps: the plugin's first NaN (at each sub-env's 100th step) is in rollout 6
NAN_RUN = [
    "plugins=[nan_reward_env]",
    "env.id=NanRewardCartPole-v0",
    "env.num_envs=2",
    "algo.num_steps=16",
    "run.total_env_steps=320",  # 10 iterations
]


def test_a_nan_reward_env_stops_the_run_after_a_checkpoint(runs):
    run = runs("nan", NAN_RUN, env={"PYTHONPATH": os.pathsep.join([PLUGINS, os.environ.get("PYTHONPATH", "")])})
    launched = run.launch()
    code = launched.wait(timeout=180)
    log = launched.log()
    assert code != 0, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    named = re.compile(r"envrunner\.1 \(rank 0\): rewards\[\d+, \d+\] is nan")
    lines = [line for line in log.splitlines() if named.search(line)]
    (stop_line,) = [line for line in lines if "state running -> stopping" in line]
    assert "controller.1 | state running -> stopping (learner.1 left the run (rollout from envrunner.1" in stop_line
    # the controller also logs the goodbye that carries it ("learner.1 left: ..."); no member says it
    assert [line for line in lines if "controller.1 |" not in line] == [], log[-3000:]
    rows = run.metrics()
    assert len(rows) == 6, log[-3000:]  # rollouts 0..5 trained on, rollout 6 (the first NaN) never
    assert all(math.isfinite(float(r[name])) for r in rows for name in ("policy_loss", "value_loss")), rows
    last = checkpoints.latest_good(run.run_dir / "checkpoints")
    assert checkpoints.verify(last)["iteration"] == 6, last

    run.env["NAN_REWARD_AT"] = str(10**9)  # the user fixes the env, then resumes
    resumed = run.resume_run(run.run_dir)
    assert resumed.wait(timeout=180) == 0, resumed.log()[-3000:]
    assert [int(r["iteration"]) for r in run.metrics()] == list(range(1, 11))
    # the env-runner stands where the learner does: the end checkpoint takes both parts
    assert checkpoints.verify(checkpoints.latest_good(run.run_dir / "checkpoints"))["iteration"] == 10
