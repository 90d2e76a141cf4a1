"""How long `dynamicrl run` takes to show something: from the command to its first iteration line.

Runs `dynamicrl run` (CartPole, a small budget, free ports, stdout a pipe: the plain console)
``--repeat`` times from a scratch directory, and prints, per start and as medians: seconds to the
first line of output, to the run's `running` state line and to the first iteration line, beside
the bare interpreter's start (`python -c pass`) measured in the same run. Each launcher is left
to finish by itself (the budget is small) and waited for, bounded.

    python bench/launch_latency.py --repeat 3
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dynamicrl.clients.processes import base_overrides, free_ports

CLI = [sys.executable, "-m", "dynamicrl.clients.cli"]


def one_start(workdir: Path) -> dict[str, float]:
    workdir.mkdir(parents=True)
    env = {"DYNAMICRL_OVERRIDES": " ".join(base_overrides(workdir, free_ports(4))), "PYTHONUNBUFFERED": "1"}
    started = time.monotonic()
    seen: dict[str, float] = {}
    with subprocess.Popen(
        [*CLI, "run", "run.total_env_steps=8192"],
        cwd=workdir,
        env={**_user_env(), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            now = time.monotonic() - started
            seen.setdefault("first line", now)
            if "-> running" in line:
                seen.setdefault("running", now)
            if "| iter " in line:
                seen.setdefault("first iteration line", now)
        proc.wait(timeout=120)
    return seen


def _user_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("DYNAMICRL_", "HONCHO_"))}


def bare_start() -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows, bare = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            bare.append(bare_start())
            rows.append(one_start(Path(tmp) / str(i)))
            print(f"start {i + 1}: " + ", ".join(f"{k} {v:.2f} s" for k, v in rows[-1].items()), flush=True)
    print(f"python -c pass: median {statistics.median(bare) * 1000:.0f} ms")
    for key in ("first line", "running", "first iteration line"):
        values = [r[key] for r in rows if key in r]
        print(f"{key:<22} median {statistics.median(values):.2f} s over {len(values)} start(s)")


if __name__ == "__main__":
    main()
