"""A short MuJoCo run through the services: continuous actions, and one set of
normalisation statistics that reaches every env-runner."""

from __future__ import annotations


import pytest

from helpers import base_overrides, free_ports, metrics_rows, run_stack

pytestmark = pytest.mark.e2e


def test_hopper_two_envrunners_share_the_learners_statistics(tmp_path):
    overrides = [*base_overrides(tmp_path, free_ports(4)),
                 "env.id=Hopper-v5", "env.num_envs=2", "algo.num_steps=64", "algo.num_minibatches=4",
                 "algo.update_epochs=2", "normalize.obs=true", "normalize.reward=true",
                 "run.envrunners=2", "run.total_env_steps=2048"]
    run_stack(tmp_path, overrides, envrunners=2)
    rows = metrics_rows(tmp_path)
    assert [int(r["iteration"]) for r in rows] == list(range(1, 9))  # 2048 / (64 * 2 * 2)
    previous = 0.0
    for row in rows:
        # every observation acted on is counted once, from both env-runners, in the learner's statistics
        assert float(row["normalizer/obs_count"]) == int(row["env_steps"])
        # and both env-runners normalised with the statistics the learner shipped after the last update
        assert float(row["normalizer/obs_count_used_rank0"]) == previous
        assert float(row["normalizer/obs_count_used_rank1"]) == previous
        previous = float(row["normalizer/obs_count"])
    assert all(abs(float(r["policy_loss"])) < 1e3 and r["entropy"] for r in rows)
