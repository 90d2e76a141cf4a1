"""A second algorithm plugs in through config alone, and each service's entry point runs."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from helpers import base_overrides, free_ports, log_text, start_service, stop, wait_until

pytestmark = pytest.mark.e2e

PLUGINS = str(Path(__file__).resolve().parent / "plugins")


def test_random_policy_plugin_runs_through_all_services(tmp_path):
    overrides = [*base_overrides(tmp_path, free_ports(4)),
                 "plugins=[random_policy]", "algo={name: random, num_steps: 16}",
                 "env.num_envs=2", "run.total_env_steps=320", "run.envrunners=1"]
    env = {"PYTHONPATH": PLUGINS}
    procs = [start_service(name, overrides, tmp_path, env=env)
             for name in ("controller", "learner", "envrunner", "logger")]
    try:
        controller = procs[0]
        assert controller.wait(timeout=120) == 0, log_text(controller)
        for proc in procs[1:]:
            assert proc.wait(timeout=15) == 0, log_text(proc)
    finally:
        for proc in procs:
            stop(proc)
    (run_dir,) = (tmp_path / "runs").iterdir()
    rows = list(csv.DictReader((run_dir / "metrics.csv").read_text().splitlines()))
    assert [int(r["iteration"]) for r in rows] == list(range(1, 11))  # 320 / (16 * 2)
    assert all(float(r["batch"]) == 32 for r in rows)
    assert [float(r["updates"]) for r in rows] == list(range(1, 11))
    assert "training done" in log_text(procs[0])
