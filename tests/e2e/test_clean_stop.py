"""`dynamicrl stop`: a checkpoint at the next iteration boundary, then every service exits 0."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dynamicrl.clients.control import ControlClient
from dynamicrl.protocol.messages import StatusRequest
from dynamicrl.services.controller import checkpoints
from helpers import base_overrides, free_ports, log_text, start_service, stop, wait_until

pytestmark = pytest.mark.e2e


def test_stop_checkpoints_then_stops_everything(tmp_path):
    ports = free_ports(4)
    overrides = [*base_overrides(tmp_path, ports), "run.envrunners=1", "run.total_env_steps=100000000",
                 "checkpoint.at_end=false"]
    procs = [start_service(name, overrides, tmp_path) for name in ("controller", "learner", "envrunner", "logger")]
    try:
        with ControlClient(f"tcp://127.0.0.1:{ports[0]}") as client:
            wait_until(lambda: (s := client.call(StatusRequest())).ltime and s.ltime.iteration >= 3, timeout=120)
        out = subprocess.run([sys.executable, "-m", "dynamicrl.clients.cli", "stop", "--json", *overrides],
                             capture_output=True, text=True, timeout=90)
        assert out.returncode == 0, out.stderr
        reply = json.loads(out.stdout)
        manifest = checkpoints.verify(checkpoints.Path(reply["checkpoint"]))
        assert manifest["iteration"] >= 3
        for proc in procs:
            assert proc.wait(timeout=30) == 0, log_text(proc)
        assert "stop requested" in log_text(procs[0])
    finally:
        for proc in procs:
            stop(proc)
