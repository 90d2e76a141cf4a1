"""Do slow bus consumers slow training? Prints figures, asserts nothing.

Issue "Open bus", item 6: a monitor that stops reading must not reduce training env steps/s by
more than 5 % nor grow any process's memory without bound.

Each run is a real CartPole training (``configs/defaults.yaml``: 1 env-runner x 8 envs x 32
steps = 256 env steps per iteration) as separate service processes (controller, learner,
env-runner ``--rank 0``, logger) on free ports, run root in a temporary directory,
``logger.console=false``, ``checkpoint.at_end=false`` and a fixed ``run.total_env_steps``.
Conditions (extra processes started together with the services, stopped after the run):

  A  nothing extra
  B  one stalled monitor: a process with a ``Monitor`` (SUB on bus_out, prefix "", HWM 10,000)
     that never reads while the run lasts (afterwards it drains what it holds, to count the gaps)
  C  five stalled monitors (five processes)
  D  one slow monitor: reads, sleeping 50 ms after every message
  E  a flooder: a PUB on bus_in publishing ``metrics.episode`` messages (8 returns, 8 lengths)
     at ``--flood-rate`` per second (the logger subscribes to ``metrics.``, so the controller
     forwards them and the logger decodes them); the baseline for F and G
  F  flooder + one stalled monitor
  G  flooder + one slow monitor (50 ms per message)

Runs are interleaved (A B C D E F G, A B C ...) ``--reps`` times so drift in the background load
hits every condition alike. Env steps/s: from the run's metrics.csv, env steps over the logger's
``time`` column between the end of iteration ``--warmup`` and the last iteration (and, as a
check, on the learner's clock: sum of env steps / ``sps`` over the same rows). Ratios are
per round (B_i / A_i, F_i / E_i, ...), then averaged. Memory: VmRSS of every process from
/proc/<pid>/status every 0.5 s; the peak and the growth (peak minus the value at the first
sample after iteration ``--warmup`` was written) are reported.

    python bench/slow_consumer.py                        # 3 rounds of A..G, ~10 min on 2 cores
    python bench/slow_consumer.py --reps 1 --only A,B --out -
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import harness  # bench/harness.py: a run's processes on free ports, stopped by pid
import machine  # bench/machine.py

from dynamicrl.clients.processes import stop_all, wait_exit

HERE = Path(__file__).resolve().parent

CONDITIONS = {  # name: (description, stalled monitors, slow monitors, flood)
    "A": ("no extra subscriber", 0, 0, False),
    "B": ("1 stalled monitor", 1, 0, False),
    "C": ("5 stalled monitors", 5, 0, False),
    "D": ("1 slow monitor (50 ms/msg)", 0, 1, False),
    "E": ("flood, no extra subscriber", 0, 0, True),
    "F": ("flood + 1 stalled monitor", 1, 0, True),
    "G": ("flood + 1 slow monitor", 0, 1, True),
}
BASELINE = {"B": "A", "C": "A", "D": "A", "F": "E", "G": "E"}
SERVICES = ("controller", "learner", "envrunner.1", "logger")  # harness.Run's labels


# -- the extra processes ---------------------------------------------------------------------

_stop = threading.Event()


def _on_term(*_args) -> None:
    _stop.set()


def worker(kind: str, address: str, result: Path, rate: float, delay: float) -> None:
    signal.signal(signal.SIGTERM, _on_term)
    out: dict = {"kind": kind}
    if kind in ("stalled", "slow"):
        from dynamicrl.clients.monitor import Monitor

        monitor = Monitor(address, prefixes=("",))
        last_seq: dict[str, int] = {}

        def take(timeout: float) -> bool:
            event = monitor.receive(timeout)
            if event is None:
                return False
            last_seq[event.envelope.sender] = event.envelope.seq
            return True

        if kind == "stalled":
            while not _stop.is_set():
                _stop.wait(0.5)  # never reads while the run lasts
            drain_started = time.monotonic()
            while time.monotonic() - drain_started < 5 and take(0.3):  # then count what it holds
                pass
        else:
            while not _stop.is_set():
                if take(0.25):
                    time.sleep(delay)
        out.update(
            received=monitor.received,
            missed=monitor.missed,
            missed_by_sender=monitor.missed_by_sender,
            last_seq=last_seq,
        )
        monitor.close()
    elif kind == "flood":
        from dynamicrl.protocol import security
        from dynamicrl.protocol.messages import EpisodeStats
        from dynamicrl.protocol.sockets import Publisher

        ctx = security.context()
        pub = Publisher(ctx, address, "flood")
        sent, started, batch = 0, time.monotonic(), 10
        while not _stop.is_set():
            for _ in range(batch):
                pub.publish(
                    EpisodeStats(
                        rank=0,
                        env_steps=sent * 8,
                        returns=[21.5 + i for i in range(8)],
                        lengths=[21 + i for i in range(8)],
                    )
                )
                sent += 1
            ahead = sent / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        elapsed = time.monotonic() - started
        out.update(sent=sent, rate=sent / elapsed, seconds=elapsed)
        pub.close()
        ctx.term()
    result.write_text(json.dumps(out))


def start_worker(kind: str, address: str, result: Path, workdir: Path, rate: float, delay: float) -> subprocess.Popen:
    with open(workdir / f"{result.stem}.log", "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--worker",
                kind,
                "--address",
                address,
                "--result",
                str(result),
                "--flood-rate",
                str(rate),
                "--slow-delay",
                str(delay),
            ],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return proc


# -- one run ---------------------------------------------------------------------------------


def vmrss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def read_rows(workdir: Path) -> list[dict]:
    files = sorted((workdir / "runs").glob("*/metrics.csv"))
    if not files:
        return []
    try:
        with open(files[0], newline="") as f:
            return list(csv.DictReader(f))
    except OSError:
        return []


def run_once(cond: str, args: argparse.Namespace) -> dict:
    _desc, n_stalled, n_slow, flood = CONDITIONS[cond]
    with tempfile.TemporaryDirectory(prefix="dynamicrl-slowconsumer-") as tmp:
        workdir = Path(tmp)
        run = harness.Run(
            workdir,
            [
                f"run.total_env_steps={args.steps}",
                "logger.console=false",
                "checkpoint.at_end=false",
                "run.envrunners=1",
                f"run.seed={args.seed}",
            ],
        )
        bus_in, bus_out = run.address["bus_in"], run.address["bus_out"]
        load_at_start = os.getloadavg()
        procs = run.procs
        extras: dict[str, tuple[subprocess.Popen, Path]] = {}
        started = time.monotonic()
        run.start_controller()  # then the monitors and the flooder, then the members
        for k in range(n_stalled):
            path = workdir / f"stalled{k}.json"
            extras[f"stalled{k}"] = (start_worker("stalled", bus_out, path, workdir, 0, 0), path)
        for k in range(n_slow):
            path = workdir / f"slow{k}.json"
            extras[f"slow{k}"] = (start_worker("slow", bus_out, path, workdir, 0, args.slow_delay), path)
        if flood:
            path = workdir / "flood.json"
            extras["flood"] = (start_worker("flood", bus_in, path, workdir, args.flood_rate, 0), path)
        run.start_members()

        pids = {label: p.pid for label, p in procs.items()} | {label: p.pid for label, (p, _) in extras.items()}
        peak: dict[str, int] = {}
        at_warm: dict[str, int] = {}
        cpu_warm: dict[str, int] = {}
        cpu_last: dict[str, int] = {}
        timeline: dict[str, list[tuple[float, int]]] = {}
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                warm = len(read_rows(workdir)) >= args.warmup
                for label, pid in pids.items():
                    kib = vmrss_kib(pid)
                    if kib is None:
                        continue
                    peak[label] = max(peak.get(label, 0), kib)
                    timeline.setdefault(label, []).append((round(time.monotonic() - started, 1), kib))
                    if warm and label not in at_warm:
                        at_warm[label] = kib
                    ticks = harness.cpu_ticks(pid)
                    if ticks is not None:
                        cpu_last[label] = ticks
                        if warm and label not in cpu_warm:
                            cpu_warm[label] = ticks
                done.wait(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            finished = wait_exit(list(procs.values()), args.timeout)
        finally:
            wall = time.monotonic() - started
            done.set()
            sampler.join()
            codes = list(run.stop(timeout=10).values())
            for proc, _ in extras.values():
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGTERM)
            wait_exit([p for p, _ in extras.values()], 15)
            stop_all([p for p, _ in extras.values()], timeout=2)
        rows = read_rows(workdir)
        logs = {label: run.log(label) for label in SERVICES}
        if not finished or any(codes) or len(rows) <= args.warmup:
            tails = "\n".join(f"--- {k}\n{v[-1500:]}" for k, v in logs.items())
            raise RuntimeError(f"{cond}: run failed (finished={finished}, codes={codes}, rows={len(rows)})\n{tails}")
        extra_results = {}
        for label, (_proc, path) in extras.items():
            extra_results[label] = json.loads(path.read_text()) if path.exists() else {"error": "no result"}
        logger_missed = sum(int(n) for n in re.findall(r"missed (\d+) message", logs["logger"]))

    w = args.warmup
    steps = int(rows[-1]["env_steps"]) - int(rows[w - 1]["env_steps"])
    span = float(rows[-1]["time"]) - float(rows[w - 1]["time"])
    per_iter = [int(rows[i]["env_steps"]) - int(rows[i - 1]["env_steps"]) for i in range(w, len(rows))]
    learner_span = sum(n / float(r["sps"]) for n, r in zip(per_iter, rows[w:]))
    return {
        "cond": cond,
        "sps": steps / span,
        "sps_learner": steps / learner_span,
        "iterations": len(rows),
        "timed_steps": steps,
        "timed_s": span,
        "wall_s": wall,
        "load": load_at_start,
        "peak_kib": peak,
        "growth_kib": {k: peak[k] - at_warm[k] for k in peak if k in at_warm},
        "extras": extra_results,
        "logger_missed": logger_missed,
        "rss_timeline": timeline,
        # CPU seconds used after iteration `warmup` was logged, per 1000 timed env steps (load-robust cost)
        "cpu_ms_per_kstep": {
            k: (cpu_last[k] - cpu_warm[k]) / os.sysconf("SC_CLK_TCK") * 1000 / (steps / 1000)
            for k in cpu_warm
            if k in cpu_last
        },
    }


# -- report ----------------------------------------------------------------------------------


def mib(kib: float) -> str:
    return f"{kib / 1024:.0f}"


def report(results: list[dict], args: argparse.Namespace, started: str, load_before: tuple, command: str) -> str:
    by: dict[str, list[dict]] = {}
    for r in results:
        by.setdefault(r["cond"], []).append(r)
    load_after = os.getloadavg()
    lines = [
        "# Slow bus consumers vs training throughput",
        "",
        'Issue "Open bus", item 6: a monitor that stops reading must not reduce training env steps/s by',
        "more than 5 % nor grow any process's memory without bound. Produced by `bench/slow_consumer.py`",
        "(see its docstring for the method).",
        "",
        f"- date: {started} UTC (finished {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC)",
        f"- machine: {platform.node()}, {os.cpu_count()} CPUs ({machine.cpu_model()}), Linux {platform.release()}, "
        f"Python {platform.python_version()}",
        f"- load averages (1/5/15 min): before {'/'.join(f'{x:.2f}' for x in load_before)}, after "
        f"{'/'.join(f'{x:.2f}' for x in load_after)}; per-run 1-min load at start "
        f"{min(r['load'][0] for r in results):.2f}..{max(r['load'][0] for r in results):.2f}",
        f"- command: `{command}`",
        f"- run: CartPole-v1 defaults, 1 env-runner x 8 envs x 32 steps (256 env steps/iteration), "
        f"`run.total_env_steps={args.steps}`, timed from the end of iteration {args.warmup} to the last; "
        f"{args.reps} interleaved round(s); flood {args.flood_rate:g} msg/s; slow monitor sleeps "
        f"{args.slow_delay * 1000:g} ms per message",
        "",
        "## Throughput",
        "",
        "| condition | runs | env steps/s (logger clock, per run) | mean | learner clock mean "
        "| vs baseline (per-round ratio, mean; range) |",
        "|---|---|---|---|---|---|",
    ]
    for cond, runs in by.items():
        sps = [r["sps"] for r in runs]
        ratio_text = "baseline" if cond not in BASELINE else "-"
        base = BASELINE.get(cond)
        if base in by:
            ratios = [r["sps"] / b["sps"] for r, b in zip(runs, by[base])]
            pooled = statistics.mean(sps) / statistics.mean(r["sps"] for r in by[base])
            ratio_text = (
                f"{cond}/{base} = {statistics.mean(ratios):.3f} "
                f"({min(ratios):.3f}..{max(ratios):.3f}); pooled means {pooled:.3f}"
            )
        lines.append(
            f"| {cond}: {CONDITIONS[cond][0]} | {len(runs)} | {', '.join(f'{x:.0f}' for x in sps)} | "
            f"{statistics.mean(sps):.0f} | {statistics.mean(r['sps_learner'] for r in runs):.0f} | {ratio_text} |"
        )
    if all("cpu_ms_per_kstep" in r for r in results):
        lines += [
            "",
            "CPU time per 1000 timed env steps (ms; from /proc/<pid>/stat after iteration "
            f"{args.warmup} was logged; less sensitive to the background load than wall-clock steps/s):",
            "",
            "| condition | controller | learner | env-runner | logger | 4 services | extra processes |",
            "|---|---|---|---|---|---|---|",
        ]
        for cond, runs in by.items():

            def m(label: str, runs: list = runs) -> float:
                return statistics.mean(r["cpu_ms_per_kstep"].get(label, 0.0) for r in runs)

            extra_labels = sorted({k for r in runs for k in r["cpu_ms_per_kstep"] if k not in SERVICES})
            lines.append(
                f"| {cond} | "
                + " | ".join(f"{m(label):.0f}" for label in SERVICES)
                + f" | {sum(m(label) for label in SERVICES):.0f} | "
                + (", ".join(f"{k} {m(k):.0f}" for k in extra_labels) or "-")
                + " |"
            )
    lines += [
        "",
        "## Memory (VmRSS, MiB): peak over the runs of a condition; growth = peak - RSS once "
        f"iteration {args.warmup} was logged (max over runs)",
        "",
        "| condition | controller | learner | env-runner | logger | extra processes (each) |",
        "|---|---|---|---|---|---|",
    ]
    for cond, runs in by.items():
        cells = []
        for label in SERVICES:
            p = max(r["peak_kib"].get(label, 0) for r in runs)
            g = max(r["growth_kib"].get(label, 0) for r in runs)
            cells.append(f"{mib(p)} (+{mib(g)})")
        extra_labels = sorted({k for r in runs for k in r["peak_kib"] if k not in SERVICES})
        extra = (
            ", ".join(
                f"{k} {mib(max(r['peak_kib'].get(k, 0) for r in runs))} "
                f"(+{mib(max(r['growth_kib'].get(k, 0) for r in runs))})"
                for k in extra_labels
            )
            or "-"
        )
        lines.append(f"| {cond} | {' | '.join(cells)} | {extra} |")
    lines += [
        "",
        "## Messages",
        "",
        "| condition | run | monitor / flooder figures | logger: missed (its log) |",
        "|---|---|---|---|",
    ]
    for cond, runs in by.items():
        for i, r in enumerate(runs, 1):
            parts = []
            for label, e in sorted(r["extras"].items()):
                if e.get("kind") == "flood":
                    parts.append(f"flood sent {e['sent']} ({e['rate']:.0f}/s)")
                elif "received" in e:
                    tail = [f"learner.1 seq {e['last_seq'].get('learner.1', -1)} of {r['iterations'] - 1}"]
                    if "flood" in r["extras"]:
                        tail.append(f"flood seq {e['last_seq'].get('flood', -1)} of {r['extras']['flood']['sent'] - 1}")
                    parts.append(
                        f"{label}: received {e['received']}, missed (gaps) {e['missed']} "
                        f"{json.dumps(e['missed_by_sender'])}, last seen {', '.join(tail)}"
                    )
                else:
                    parts.append(f"{label}: {e}")
            lines.append(f"| {cond} | {i} | {'; '.join(parts) or '-'} | {r['logger_missed']} |")
    lines += [
        "",
        "## RSS over time (MiB at 25/50/75/100 % of each run's sampled span), runs with an extra subscriber",
        "",
        "| condition | run | controller | logger | extra processes |",
        "|---|---|---|---|---|",
    ]
    for cond, runs in by.items():
        for i, r in enumerate(runs, 1):
            tl = r.get("rss_timeline", {})
            extras = sorted(k for k in tl if k not in SERVICES and k != "flood")
            if not extras:
                continue

            def quarters(label: str, tl: dict = tl) -> str:
                pts = tl.get(label, [])
                if not pts:
                    return "-"
                return "/".join(mib(pts[min(len(pts) - 1, int(len(pts) * q))][1]) for q in (0.25, 0.5, 0.75, 0.999))

            lines.append(
                f"| {cond} | {i} | {quarters('controller')} | {quarters('logger')} | "
                + ", ".join(f"{k} {quarters(k)}" for k in extras)
                + " |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--only", default=",".join(CONDITIONS), help="conditions, e.g. A,B,C")
    parser.add_argument("--steps", type=int, default=60_000, help="run.total_env_steps")
    parser.add_argument("--warmup", type=int, default=5, help="iterations not timed")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--flood-rate", type=float, default=2000.0)
    parser.add_argument("--slow-delay", type=float, default=0.05)
    parser.add_argument("--timeout", type=float, default=240.0, help="per run")
    parser.add_argument("--json", help="also write the raw per-run results here")
    parser.add_argument("--out", default=str(HERE / "results" / "slow_consumer.md"), help="markdown; - for none")
    parser.add_argument("--worker", choices=("stalled", "slow", "flood"), help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.address, Path(args.result), args.flood_rate, args.slow_delay)
        return
    conds = [c.strip() for c in args.only.split(",") if c.strip()]
    started = f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M:%S}"
    load_before = os.getloadavg()
    command = shlex.join(["python", "bench/slow_consumer.py", *sys.argv[1:]])
    results = []
    for rep in range(args.reps):
        for cond in conds:
            r = run_once(cond, args)
            results.append(r)
            peaks = " ".join(f"{k}={mib(v)}M" for k, v in r["peak_kib"].items())
            print(
                f"round {rep + 1} {cond}: {r['sps']:.0f} env steps/s (learner clock {r['sps_learner']:.0f}), "
                f"{r['iterations']} it, timed {r['timed_s']:.1f} s, wall {r['wall_s']:.1f} s, load {r['load'][0]:.2f}; "
                f"peak RSS {peaks}; extras {json.dumps(r['extras'])}; logger missed {r['logger_missed']}",
                flush=True,
            )
    text = report(results, args, started, load_before, command)
    print()
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(results))
    if args.out != "-":
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
