"""A second algorithm plugs in through config alone, and each service's entry point runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import base_overrides, free_ports, log_text, metrics_rows, run_stack

pytestmark = pytest.mark.e2e

PLUGINS = str(Path(__file__).resolve().parent / "plugins")


def test_random_policy_plugin_runs_through_all_services(tmp_path):
    overrides = [*base_overrides(tmp_path, free_ports(4)),
                 "plugins=[random_policy]", "algo={name: random, num_steps: 16}",
                 "env.num_envs=2", "run.total_env_steps=320", "run.envrunners=1"]
    controller = run_stack(tmp_path, overrides, env={"PYTHONPATH": PLUGINS}, timeout=120)[0]
    rows = metrics_rows(tmp_path)
    assert [int(r["iteration"]) for r in rows] == list(range(1, 11))  # 320 / (16 * 2)
    assert all(float(r["batch"]) == 32 for r in rows)
    assert [float(r["updates"]) for r in rows] == list(range(1, 11))
    assert "training done" in log_text(controller)
