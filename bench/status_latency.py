"""`dynamicrl status` latency against the interpreter's bare start: measures and prints, asserts nothing.

Starts a real controller on free ports (``python -m dynamicrl.services.controller``, with
``timing.start_timeout_s`` long enough to wait for members all along), or with ``--load`` a
whole run that trains meanwhile, then times, ``--runs`` times each and interleaved:

* ``python -c pass`` (the interpreter's bare start, the floor) and ``dynamicrl status`` (the
  installed console script beside this interpreter, as a user runs it; output discarded), as
  subprocesses;
* in this process, ``--requests`` times each (default ``10 * --runs``), one status request's round
  trip through ``ControlClient``: on a fresh connection each time (connect, the CURVE handshake,
  the request, close) and on one connection kept open (the request alone).

Prints the median and p90 of each, the status median minus the bare one (what the command itself
costs), the ratio of the medians, and how many cores other processes kept busy meanwhile (an
idle figure is one only if that is near 0). ``--curve off`` runs everything with
``security.curve=false`` (``bench/curve_cost.py`` compares the two; it calls :func:`measure`).
Everything is stopped by pid at the end, with bounded waits. About 10 s idle; with ``--load ant``,
about a minute (the run has to reach its first iteration).

    python bench/status_latency.py                    # idle: a bare controller, 30 runs each
    python bench/status_latency.py --load cartpole    # while CartPole trains (1 env-runner)
    python bench/status_latency.py --load ant         # while Ant-v5 trains (configs/env/mujoco_ant.yaml, 2 env-runners)
    python bench/status_latency.py --curve off        # the same without CURVE
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import harness  # bench/harness.py: a run's processes on free ports, stopped by pid
import machine  # bench/machine.py
import zmq

from dynamicrl.clients.control import ControlClient, RequestTimeout
from dynamicrl.protocol import security

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


def wait_for(endpoint: str, running: bool, run: harness.Run, ctx: zmq.Context, timeout: float = 300) -> None:
    """Until the controller answers status (and, with ``running``, the run has finished an iteration)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if run.dead():
            sys.exit(f"a service exited: {run.dead()}\n{run.log_tail('controller')}")
        try:
            with ControlClient(endpoint, timeout_s=1.0, retries=0, ctx=ctx) as client:
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


def timed_call(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
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
    return statistics.quantiles(values, n=10)[-1] if len(values) > 1 else values[0]


BARE, STATUS, FRESH, REUSED = (
    "python -c pass",
    "dynamicrl status",
    "request, fresh connection",
    "request, reused connection",
)


@dataclass
class Latencies:
    """What :func:`measure` timed, in seconds by what (``BARE``, ``STATUS``, ``FRESH``, ``REUSED``), and how busy
    the machine was meanwhile, in cores: the run's processes, and every other process but the timed ones."""

    seconds: dict[str, list[float]]
    run_cores: float
    other_cores: float

    def median_ms(self, what: str) -> float:
        return 1000 * statistics.median(self.seconds[what])

    def p90_ms(self, what: str) -> float:
        return 1000 * p90(self.seconds[what])


def measure(
    workdir: Path,
    *,
    config: str | Path | None = None,
    envrunners: int = 1,
    live: bool = False,
    curve: bool = True,
    keys: str | Path | None = None,
    runs: int = 30,
    requests: int = 300,
    overrides: Sequence[str] = (),
) -> Latencies:
    """A controller (``live``: a whole run of ``config``, training) on free ports with CURVE on or off, and the
    timings against it: ``requests`` in-process round trips of each kind, then ``runs`` of each command.
    ``keys``: the keys directory (default ``security.keys``'s)."""
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = security.context(curve=curve, keys=str(keys) if keys is not None else security.DEFAULT_KEYS)
    secure = harness.security_overrides(curve, keys)
    run = harness.Run(workdir, [*ENDLESS, *secure, *overrides], config=config, envrunners=envrunners)
    reused: ControlClient | None = None
    try:
        run.start() if live else run.start_controller()
        wait_for(run.endpoint, running=live, run=run, ctx=ctx)
        commands = {
            BARE: [sys.executable, "-c", "pass"],
            STATUS: [console_script(), "status", f"addresses.controller={run.endpoint}", *secure],
        }
        for command in commands.values():  # warm the file cache once
            timed(command)

        def fresh() -> None:
            with ControlClient(run.endpoint, timeout_s=10, retries=0, ctx=ctx) as client:
                client.status()

        reused = ControlClient(run.endpoint, timeout_s=10, retries=0, ctx=ctx)
        reused.status()  # connected (and the handshake done) before timing
        calls: dict[str, Callable[[], object]] = {FRESH: fresh, REUSED: reused.status}
        seconds: dict[str, list[float]] = {name: [] for name in (*commands, *calls)}
        before = time.monotonic(), machine.busy_cpu_s(), _run_cpu_s(run), _children_cpu_s(), time.process_time()
        for _ in range(requests):
            for name, call in calls.items():
                seconds[name].append(timed_call(call))
        for _ in range(runs):
            for name, command in commands.items():
                seconds[name].append(timed(command))
        now = time.monotonic(), machine.busy_cpu_s(), _run_cpu_s(run), _children_cpu_s(), time.process_time()
        wall, busy, ours, timed_cpu, mine = (a - b for a, b in zip(now, before))
    finally:
        if reused is not None:
            reused.close()
        ctx.term()
        run.stop()
    return Latencies(seconds, ours / wall, (busy - ours - timed_cpu - mine) / wall)


def print_table(found: Latencies) -> None:
    print(f"{'what':<28} {'median':>10} {'p90':>10}")
    for name, values in found.seconds.items():
        print(f"{name:<28} {found.median_ms(name):>7.1f} ms {found.p90_ms(name):>7.1f} ms  (n={len(values)})")
    bare, status = found.median_ms(BARE), found.median_ms(STATUS)
    print(f"\nstatus - bare start: {status - bare:.0f} ms; status / bare start: {status / bare:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30, help="timed runs of each command (default 30)")
    parser.add_argument("--requests", type=int, default=None, help="timed in-process requests of each kind")
    parser.add_argument("--load", choices=sorted(LOADS), default=None, help="a whole run trains meanwhile")
    parser.add_argument("--curve", choices=("on", "off"), default="on", help="security.curve (default on)")
    args = parser.parse_args()

    config, envrunners, _ = LOADS[args.load] if args.load else (None, 1, "")
    requests = 10 * args.runs if args.requests is None else args.requests
    with tempfile.TemporaryDirectory(prefix="drl-status-") as tmp:
        found = measure(
            Path(tmp),
            config=config,
            envrunners=envrunners,
            live=args.load is not None,
            curve=args.curve == "on",
            runs=args.runs,
            requests=requests,
        )

    print(machine.describe())
    print(machine.uptime())
    print(f"controller: {f'of a run training {LOADS[args.load][2]}' if args.load else 'a bare one (no members)'}")
    print(f"security.curve: {args.curve}")
    print(
        f"dynamicrl:  {console_script()}; interleaved, {args.runs} runs of each command, "
        f"{requests} requests of each kind"
    )
    print(f"other processes kept {found.other_cores:.2f} cores busy while timing (the run: {found.run_cores:.2f})\n")
    print_table(found)


if __name__ == "__main__":
    main()
