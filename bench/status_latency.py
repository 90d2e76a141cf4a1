"""`dynamicrl status` latency against the interpreter's bare start: measures and prints, asserts nothing.

Starts a real controller on free ports (``python -m dynamicrl.services.controller``, with
``timing.start_timeout_s`` long enough to wait for members all along), or with ``--load`` a
whole run that trains meanwhile, then runs as subprocesses, interleaved, ``--runs`` times each:
``python -c pass`` (the interpreter's bare start, the floor) and ``dynamicrl status`` (the
installed console script beside this interpreter, as a user runs it; output discarded). Prints
the median and p90 of each, the status median minus the bare one (what the command itself
costs), the ratio of the medians, and how many cores other processes kept busy meanwhile (an
idle figure is one only if that is near 0). Everything is stopped by pid at the end, with
bounded waits. About 10 s idle; with ``--load ant``, about a minute (the run has to reach its first
iteration).

    python bench/status_latency.py                    # idle: a bare controller, 30 runs each
    python bench/status_latency.py --load cartpole    # while CartPole trains (1 env-runner)
    python bench/status_latency.py --load ant         # while Ant-v5 trains (configs/env/mujoco_ant.yaml, 2 env-runners)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness  # bench/harness.py: a run's processes on free ports, stopped by pid
import machine  # bench/machine.py

from dynamicrl.clients.control import ControlClient, RequestTimeout

#: --load: (config, env-runners) of the run that trains while status is timed
LOADS = {"cartpole": ("configs/defaults.yaml", 1, "CartPole"), "ant": ("configs/env/mujoco_ant.yaml", 2, "Ant-v5")}
#: a budget no benchmark reaches, and a controller that waits for its members as long as it takes
ENDLESS = ["run.total_env_steps=100000000", "timing.start_timeout_s=100000"]


def console_script() -> str:
    """The ``dynamicrl`` script installed beside this interpreter (not a version manager's shim), else PATH's."""
    beside = Path(sys.executable).with_name("dynamicrl")
    found = str(beside) if beside.is_file() else shutil.which("dynamicrl")
    if found is None:
        sys.exit("no `dynamicrl` command: pip install -e . first")
    return found


def wait_for(endpoint: str, running: bool, run: harness.Run, timeout: float = 300) -> None:
    """Until the controller answers status (and, with ``running``, the run has finished an iteration)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if run.dead():
            sys.exit(f"a service exited: {run.dead()}\n{run.log_tail('controller')}")
        try:
            with ControlClient(endpoint, timeout_s=1.0, retries=0) as client:
                status = client.status()
            if not running or status.ltime is not None:
                return
        except RequestTimeout:
            pass
        time.sleep(0.5)
    sys.exit(f"the run was not ready within {timeout:.0f} s\n{run.log_tail('controller')}")


def timed(command: list[str]) -> float:
    """Wall time of ``command``. No ``timeout=``: a wait with one polls in sleeps of up to 50 ms, which would
    be timed too; `dynamicrl status` bounds itself (timing.request_timeout_s)."""
    start = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def _run_cpu_s(run: harness.Run) -> float:
    """CPU seconds of the run's processes and theirs (an env-runner's vector envs run in subprocesses)."""
    pids = [pid for proc in run.procs.values() for pid in (proc.pid, *harness.descendants(proc.pid))]
    return sum(ticks for ticks in map(harness.cpu_ticks, pids) if ticks is not None) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    """CPU seconds of the finished subprocesses of this one (the timed commands)."""
    times = os.times()
    return times.children_user + times.children_system


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30, help="timed runs of each command (default 30)")
    parser.add_argument("--load", choices=sorted(LOADS), default=None, help="a whole run trains meanwhile")
    args = parser.parse_args()

    script = console_script()
    with tempfile.TemporaryDirectory(prefix="drl-status-") as tmp:
        config, envrunners, _ = LOADS[args.load] if args.load else (None, 1, "")
        run = harness.Run(Path(tmp), ENDLESS, config=config, envrunners=envrunners)
        try:
            run.start() if args.load else run.start_controller()
            wait_for(run.endpoint, running=args.load is not None, run=run)
            commands = {
                "python -c pass": [sys.executable, "-c", "pass"],
                "dynamicrl status": [script, "status", f"addresses.controller={run.endpoint}"],
            }
            for command in commands.values():  # warm the file cache once
                timed(command)
            times: dict[str, list[float]] = {name: [] for name in commands}
            before = time.monotonic(), machine.busy_cpu_s(), _run_cpu_s(run), _children_cpu_s()
            for _ in range(args.runs):
                for name, command in commands.items():
                    times[name].append(timed(command))
            wall, busy, ours, timed_cpu = (
                now - then
                for now, then in zip(
                    (time.monotonic(), machine.busy_cpu_s(), run.cpu_seconds(), _children_cpu_s()), before
                )
            )
        finally:
            run.stop()

    print(machine.describe())
    print(machine.uptime())
    print(f"controller: {f'of a run training {LOADS[args.load][2]}' if args.load else 'a bare one (no members)'}")
    print(f"dynamicrl:  {script}; {args.runs} runs of each command, interleaved")
    others = (busy - ours - timed_cpu) / wall
    print(f"other processes kept {others:.2f} cores busy while timing (the run: {ours / wall:.2f})\n")
    print(f"{'command':<18} {'median':>9} {'p90':>9}")
    for name, values in times.items():
        print(f"{name:<18} {statistics.median(values) * 1000:>7.0f} ms {p90(values) * 1000:>6.0f} ms")
    bare, status = statistics.median(times["python -c pass"]), statistics.median(times["dynamicrl status"])
    print(f"\nstatus - bare start: {(status - bare) * 1000:.0f} ms; status / bare start: {status / bare:.1f}x")


if __name__ == "__main__":
    main()
