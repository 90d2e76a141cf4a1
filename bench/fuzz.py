"""A live CartPole run fuzzed on its four bound sockets (#16): prints the figures, and what went wrong.

The longer sibling of ``tests/integration/test_fuzz.py``, with the same hostile peer and frames
(``tests/fuzzing.py``, imported from tests/ as the tests import it; the run is the tests'
``helpers.Run``): an authenticated peer holding the user's client key sends ``--frames`` seeded
malformed messages (default 10,000) on each socket at once: the controller's command ROUTER as a
REQ and as a DEALER, the bus in (PUB), the bus out (XSUB, upstream) and the learner's data ROUTER
(DEALER). Prints per socket the frames and bytes sent, the replies and their error codes, how long
it took; the ``status`` latency (max, p99) polled every 50 ms meanwhile; the controller's and the
learner's RSS (baseline, peak, after) and CPU seconds during the fuzzing; the bus gate's
``dropped_bus``; then every check that failed (the test asserts none does). Exits 1 if one did.
Everything it started is stopped by pid at the end. About a minute with the defaults on 2 cores.

    python bench/fuzz.py                       # 10,000 frames per socket
    python bench/fuzz.py --frames 2000 --seed 3
    python bench/fuzz.py --only command/DEALER,data/DEALER
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import machine  # bench/machine.py
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' fuzzing and Run harness

import fuzzing
from helpers import Run

#: the test's run: small, fast iterations, a budget no benchmark reaches
OVERRIDES = ["env.num_envs=2", "algo.num_steps=16", "run.total_env_steps=100000000", "logger.console=false"]


def cpu_seconds(pid: int) -> float:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return float("nan")
    return times.user + times.system


def table(result: fuzzing.Result, cpu: dict[str, float]) -> str:
    lines = [
        "| socket | frames sent | MB sent | replies | error codes | seconds |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for name, sock in result.sockets.items():
        replies = str(sock.replies) if name in fuzzing.REPLYING else "(none expected)"
        codes = ", ".join(f"{code} {n}" for code, n in sock.codes.most_common()) or "-"
        if isinstance(sock, fuzzing.BusResult):
            codes = f"gate must drop {sock.must_drop}; received from the bus {sock.received}"
        mb = sock.bytes_sent / fuzzing.MB
        lines.append(f"| {name} | {sock.sent:,} | {mb:,.0f} | {replies} | {codes} | {sock.seconds:.1f} |")
    req = result.sockets.get("command/REQ")
    if req is not None and req.slowest:
        slow = ", ".join(f"{kind} ({size / 1000:,.0f} kB) {t * 1000:.0f} ms" for t, kind, size in req.slowest)
        lines += ["", f"slowest round trips on command/REQ: {slow}"]
    lines += [
        "",
        f"status during the fuzzing: {len(result.status_latencies)} requests, max {result.status_worst * 1000:.0f} ms, "
        f"p99 {result.status_p99 * 1000:.0f} ms, {len(result.status_failures)} failed, "
        f"{len(result.status_slow)} over {fuzzing.STATUS_LIMIT_S * 1000:.0f} ms",
        f"bus gate: dropped_bus went up by {result.dropped_bus:,}",
        "",
        "| process | RSS baseline MB | peak MB | after MB | after - baseline | CPU s during the fuzzing |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, mem in result.memory.items():
        lines.append(
            f"| {name} | {mem.baseline:.0f} | {mem.peak:.0f} | {mem.after:.0f} | {mem.growth:+.0f} | {cpu[name]:.1f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=10_000, help="frames per socket (default 10,000)")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--only", default=",".join(fuzzing.SOCKETS), help="sockets, comma-separated")
    args = parser.parse_args()
    sockets = [s for s in args.only.split(",") if s]
    unknown = set(sockets) - set(fuzzing.SOCKETS)
    if unknown:
        parser.error(f"unknown sockets {sorted(unknown)}; choose from {', '.join(fuzzing.SOCKETS)}")

    print(f"machine: {machine.describe()}")
    print(f"load before: {machine.uptime()}")
    with tempfile.TemporaryDirectory(prefix="fuzz-bench-") as tmp, Run(Path(tmp), OVERRIDES) as run:
        started = time.monotonic()
        run.start()
        run.wait_iteration(3, timeout=120)
        print(
            f"run up at iteration 3 after {time.monotonic() - started:.1f} s; fuzzing {args.frames:,} frames per socket"
        )
        pids = {"controller": run.procs[0].pid, "learner": run.procs[1].pid}
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        result = fuzzing.fuzz(
            run,
            args.frames,
            seed=args.seed,
            arrays_to_controller=True,
            many_frames_on_bus=True,
            sockets=sockets,
        )
        cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
        problems = result.problems()
        if not problems:
            iteration = run.status().ltime.iteration
            try:
                run.wait_iteration(iteration + 2, timeout=60)
            except AssertionError:
                problems.append(f"the run did not train on after the fuzzing (stuck at iteration {iteration})")
        print(f"fuzzing took {result.seconds:.1f} s (seed {args.seed})\n")
        print(table(result, cpu))
        print(f"\nload after: {machine.uptime()}")
        if problems:
            print("\nPROBLEMS:\n" + "\n".join(f"- {p}" for p in problems))
            print("\n" + run.logs()[-4000:])
            return 1
        print("\nno problem: nothing died, every request got an ErrorReply, files unchanged, memory came back")
        return 0


if __name__ == "__main__":
    sys.exit(main())
