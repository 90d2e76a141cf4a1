"""Short MuJoCo runs through the services: continuous actions, one set of normalisation
statistics that reaches every env-runner, and the Ant showcase config in overlap mode."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
from helpers import Run

from dynamicrl.core import checkpoints

pytestmark = pytest.mark.e2e


def test_hopper_two_envrunners_share_the_learners_statistics(tmp_path):
    overrides = [
        "env.id=Hopper-v5",
        "env.num_envs=2",
        "algo.num_steps=64",
        "algo.num_minibatches=4",
        "algo.update_epochs=2",
        "normalize.obs=true",
        "normalize.reward=true",
        "run.total_env_steps=2048",
    ]
    with Run(tmp_path, overrides, envrunners=2) as run:
        run.start().finish()
    rows = run.metrics()
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


def test_the_ant_showcase_runs_in_overlap_mode_and_checkpoints(tmp_path):
    """configs/experiments/mujoco_ant_interactive.yaml (2 env-runners x 4 Ant-v5 envs, overlap mode),
    cut to 3 iterations with a checkpoint due after the 2nd: in overlap mode it is taken at the next
    boundary with the unanswered rollouts, and the one at the end as in sync mode."""
    config = Path(__file__).resolve().parents[2] / "configs/experiments/mujoco_ant_interactive.yaml"
    with Run(
        tmp_path, ["run.total_env_steps=6144", "checkpoint.every_iterations=2"], envrunners=2, config=config
    ) as run:
        run.start().finish()
    rows = run.metrics()
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3]  # 6144 / (256 steps x 4 envs x 2)
    (run_dir,) = (tmp_path / "runs").iterdir()
    saved = {p.name: checkpoints.verify(p) for p in checkpoints.complete(run_dir / "checkpoints")}
    assert sorted(saved) == ["iter-00000002", "iter-00000003"]
    _, _, parts = checkpoints.read(run_dir / "checkpoints" / "iter-00000002")
    learner = next(p for name, p in parts.items() if name.startswith("learner"))
    assert learner.meta["boundary"] == 3 and {k for k in learner.arrays if k.startswith("rollout.")} == {
        "rollout.0",
        "rollout.1",
    }, "the overlap checkpoint holds both unanswered rollouts"
    envrunners = [p for name, p in parts.items() if name.startswith("envrunner")]
    assert [p.meta["iteration"] for p in envrunners] == [3, 3]
    for part in (learner, *envrunners):  # what a bitwise continuation depends on is recorded
        assert part.meta["versions"]["torch"] == importlib.metadata.version("torch")
        assert part.meta["versions"]["mujoco"] == importlib.metadata.version("mujoco")
