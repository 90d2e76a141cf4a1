"""A second algorithm plugs in through config alone, and each service's entry point runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import Run, log_text

pytestmark = pytest.mark.e2e

PLUGINS = str(Path(__file__).resolve().parent / "plugins")


def test_random_policy_plugin_runs_through_all_services(tmp_path):
    overrides = [
        "plugins=[random_policy]",
        "algo={name: random, num_steps: 16}",
        "env.num_envs=2",
        "run.total_env_steps=320",
    ]
    with Run(tmp_path, overrides, env={"PYTHONPATH": PLUGINS}) as run:
        run.start().finish(timeout=120)
    controller = run.procs[0]
    rows = run.metrics()
    assert [int(r["iteration"]) for r in rows] == list(range(1, 11))  # 320 / (16 * 2)
    assert all(float(r["batch"]) == 32 for r in rows)
    assert [float(r["updates"]) for r in rows] == list(range(1, 11))
    assert "training done" in log_text(controller)
