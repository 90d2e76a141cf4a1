"""Pause / resume / patch latency of a live run: measures and prints, asserts nothing.

Starts a real run as separate processes (controller, learner, N env-runners,
logger: ``python -m dynamicrl.services.<name> KEY=VALUE...``) on free ports with
its run directory in a temporary directory, waits until it is running and past
its first iterations, then, with seeded random gaps of running between them,
pauses and resumes it ``--pauses`` times through ``ControlClient`` (no CLI, so
no process start-up is timed). At every ``--patch-every``-th moment it also
patches ``ppo.ent_coef`` (a next-minibatch parameter, alternating two values)
with ``wait=True``. Per moment it records:

* pause, client side: PauseRequest sent -> PauseReply received;
* pause, controller side: ``PauseReply.latency_s`` (request in -> last barrier report);
* resume, client side: ResumeRequest sent -> ResumeReply received;
* patch, client side: PatchRequest sent -> PatchReply "applied", and where it applied;
* where each service stood at the barrier (learner minibatch, env-runner step in its rollout).

One run per ``--num-steps`` value (default 256 and 2048) shows whether pause
latency depends on the rollout length. Everything is stopped by pid at the end,
with bounded waits, also on Ctrl-C or an exception.

    python bench/pause_latency.py                          # Ant-v5, 100 pauses, num_steps 256 and 2048
    python bench/pause_latency.py --pauses 20 --num-steps 128 --env CartPole-v1 --out -
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import random
import shlex
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import harness  # bench/harness.py: a run's processes on free ports, stopped by pid
import machine  # bench/machine.py
import numpy as np

from dynamicrl.clients.control import ControlClient, ControlError, RequestTimeout
from dynamicrl.protocol.messages import (
    ParamsRequest,
    PatchRequest,
    PatchStatus,
    PauseRequest,
    ResumeRequest,
    RunState,
    StatusRequest,
)

HERE = Path(__file__).resolve().parent
PATCH_PARAM = "ppo.ent_coef"
TARGET_P99_MS = 50.0
NOTES_MARKER = "<!-- notes: everything from this line on is kept when the benchmark rewrites this file -->"
CONTENDED_CORES = 0.2  # average busy cores of other processes above which a run counts as contended


# -- measuring ---------------------------------------------------------------------------------
@dataclass
class Moment:
    pause_ms: float | None = None
    controller_ms: float | None = None
    resume_ms: float | None = None
    patch_ms: float | None = None
    patch_where: str = ""
    patch_minibatch: int | None = None
    learner_minibatch: int | None = None
    learner_iteration: int | None = None
    runner_steps: list[int] = field(default_factory=list)  # each env-runner's step within its rollout
    where: str = ""
    error: str = ""


@dataclass
class Result:
    num_steps: int
    overrides: list[str]
    moments: list[Moment]
    sps: list[float]
    iterations_before: int
    iterations_after: int
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    machine_busy_cores: float  # average busy cores of the whole machine during the pause phase
    run_busy_cores: float  # ... of the run's own processes
    bench_busy_cores: float  # ... of this benchmark process
    phase_s: float
    batch_per_minibatch: int
    minibatches_per_update: int
    mode: str = "sync"

    @property
    def other_cores(self) -> float:
        return max(0.0, self.machine_busy_cores - self.run_busy_cores - self.bench_busy_cores)


def classify(positions, num_steps: int, num_envs: int) -> tuple[str, int | None, int | None, list[int]]:
    learner = next((p for p in positions if p.service.startswith("learner")), None)
    runners = sorted((p for p in positions if p.service.startswith("envrunner")), key=lambda p: p.service)
    steps = [p.ltime.env_step // num_envs - p.ltime.iteration * num_steps for p in runners]
    mb = learner.minibatch if learner is not None else None
    it = learner.ltime.iteration if learner is not None else None
    if mb:
        where = "mid-update"
    elif steps and all(s >= num_steps - 1 for s in steps):
        where = "update boundary"  # learner at minibatch 0, every env-runner at (or one step from) its rollout's end
    else:
        where = "collecting"  # learner waiting for rollouts, env-runners between env steps
    return where, mb, it, steps


def call(client: ControlClient, request):
    t0 = time.perf_counter()
    reply = client.call(request)
    return reply, (time.perf_counter() - t0) * 1000.0


def wait_running(run: harness.Run, client: ControlClient, warmup: int, timeout_s: float) -> tuple[str, int]:
    """Block until the run is RUNNING with ``warmup`` iterations done; return (run_dir, iteration)."""
    deadline = time.monotonic() + timeout_s
    last: str | int = ""  # the last error, or the last iteration seen
    while time.monotonic() < deadline:
        dead = run.dead()
        if dead:
            tails = "\n".join(f"--- {label}\n{run.log_tail(label)}" for label in run.procs)
            raise RuntimeError(f"process(es) exited during start-up: {', '.join(dead)}\n{tails}")
        try:
            status = client.call(StatusRequest())
        except (RequestTimeout, ControlError) as exc:
            last = str(exc)
            time.sleep(0.3)
            continue
        iteration = status.ltime.iteration if status.ltime else 0
        if status.state is RunState.RUNNING and iteration >= warmup:
            return status.run_dir, iteration
        if iteration != last:
            print(f"  waiting: {status.state.value}, iteration {iteration}", flush=True)
            last = iteration
        time.sleep(0.2)
    raise RuntimeError(f"the run was not running with {warmup} iteration(s) done within {timeout_s:.0f} s ({last})")


def read_sps(run_dir: str, upto: int) -> list[float]:
    """SPS of iterations 2..upto from the logger's metrics.csv (iteration 1 includes start-up)."""
    path = Path(run_dir) / "metrics.csv"
    try:
        with path.open() as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return []
    return [float(r["sps"]) for r in rows if r.get("sps") and 2 <= int(r["iteration"]) <= upto]


def wait_idle(max_wait_s: float, busy_cores: float = 0.2, window_s: float = 5.0) -> None:
    """Wait (at most ``max_wait_s``) until the machine was nearly idle over ``window_s``: others' load skews latency."""
    deadline = time.monotonic() + max_wait_s
    while True:
        b0 = machine.busy_cpu_s()
        time.sleep(window_s)
        busy = (machine.busy_cpu_s() - b0) / window_s
        if busy <= busy_cores:
            print(f"  machine idle ({busy:.2f} busy cores over {window_s:.0f} s)", flush=True)
            return
        if time.monotonic() >= deadline:
            print(f"  machine still busy ({busy:.2f} cores); measuring anyway", flush=True)
            return
        print(f"  machine busy ({busy:.2f} cores over {window_s:.0f} s); waiting", flush=True)


def measure(args, num_steps: int, workdir: Path) -> Result:
    overrides = [
        f"env.id={args.env}",
        f"env.num_envs={args.num_envs}",
        f"algo.num_steps={num_steps}",
        f"run.envrunners={args.envrunners}",
        f"run.total_env_steps={args.total_env_steps}",
        f"run.seed={args.seed}",
        *args.set,
    ]
    run = harness.Run(workdir, overrides, config=args.config, envrunners=args.envrunners)
    rng = random.Random(args.seed)
    moments: list[Moment] = []
    print(
        f"\n== {args.env}, num_steps={num_steps}, {args.envrunners} env-runners x {args.num_envs} envs; "
        f"logs in {workdir}",
        flush=True,
    )
    client = ControlClient(run.endpoint, timeout_s=args.request_timeout, retries=0)
    try:
        run.start()
        run_dir, iteration = wait_running(run, client, args.warmup_iterations, args.start_timeout)
        sps = read_sps(run_dir, iteration)
        print(
            f"  running at iteration {iteration}; SPS of iterations 2..{iteration}: "
            + (", ".join(f"{s:.0f}" for s in sps) or "n/a"),
            flush=True,
        )
        params = {row.name: row.value for row in client.call(ParamsRequest()).params}
        current = params[PATCH_PARAM]
        if current is None:
            raise TypeError(f"{PATCH_PARAM} has no value")
        base = float(current)
        values = [base, args.patch_value if args.patch_value != base else base + 0.001]
        patch_count = 0
        total = args.envrunners * num_steps * args.num_envs
        minibatches = 32  # informative only; read from the run's config below
        try:
            import yaml

            resolved = yaml.safe_load((Path(run_dir) / "config.yaml").read_text())
            minibatches = int(resolved["algo"]["num_minibatches"])
            epochs = int(resolved["algo"]["update_epochs"])
            mode = str(resolved["run"].get("mode", "sync"))
        except Exception:
            epochs, mode = 0, "?"
        load_before = os.getloadavg()
        busy0 = machine.busy_cpu_s()
        run_cpu0, bench_cpu0 = run.cpu_seconds(), sum(os.times()[:2])
        t_phase = time.monotonic()
        for i in range(args.pauses):
            moment = Moment()
            moments.append(moment)
            gap = rng.uniform(args.min_gap, args.max_gap)
            try:
                if args.patch_every and i % args.patch_every == 0:
                    split = rng.uniform(0.0, gap)
                    time.sleep(split)
                    patch_count += 1
                    value = values[patch_count % 2]
                    reply, moment.patch_ms = call(
                        client, PatchRequest(changes={PATCH_PARAM: value}, wait=True, author="bench")
                    )
                    if reply.status is not PatchStatus.APPLIED:
                        moment.error = f"patch {reply.status.value}"
                    for entry in reply.applied:
                        moment.patch_minibatch = entry.minibatch
                        moment.patch_where = f"it {entry.ltime.iteration} mb {entry.minibatch}"
                    time.sleep(gap - split)
                else:
                    time.sleep(gap)
                pause, moment.pause_ms = call(client, PauseRequest())
                moment.controller_ms = pause.latency_s * 1000.0
                (moment.where, moment.learner_minibatch, moment.learner_iteration, moment.runner_steps) = classify(
                    pause.positions, num_steps, args.num_envs
                )
                if pause.already:
                    moment.error = "already paused"
                _, moment.resume_ms = call(client, ResumeRequest())
            except (ControlError, RequestTimeout) as exc:
                moment.error = f"{type(exc).__name__}: {exc}"
                try:  # never leave it paused
                    client.call(ResumeRequest())
                except (ControlError, RequestTimeout):
                    pass
            line = (
                f"  {i + 1:3d}/{args.pauses} pause {fmt(moment.pause_ms)} ms (ctl {fmt(moment.controller_ms)})"
                f"  resume {fmt(moment.resume_ms)} ms  {moment.where}"
                + (f" mb {moment.learner_minibatch}" if moment.learner_minibatch else "")
                + (f" steps {moment.runner_steps}" if moment.where != "mid-update" else "")
                + (f"  patch {fmt(moment.patch_ms)} ms at {moment.patch_where}" if moment.patch_ms else "")
                + (f"  ERROR {moment.error}" if moment.error else "")
            )
            print(line, flush=True)
            if run.dead():
                raise RuntimeError(f"process(es) exited during the benchmark: {', '.join(run.dead())}")
        phase_s = time.monotonic() - t_phase
        busy1 = machine.busy_cpu_s()
        run_cpu1, bench_cpu1 = run.cpu_seconds(), sum(os.times()[:2])
        load_after = os.getloadavg()
        end_status = client.call(StatusRequest())
        return Result(
            num_steps=num_steps,
            overrides=overrides,
            moments=moments,
            sps=sps,
            iterations_before=iteration,
            iterations_after=end_status.ltime.iteration if end_status.ltime else iteration,
            load_before=load_before,
            load_after=load_after,
            machine_busy_cores=(busy1 - busy0) / phase_s,
            run_busy_cores=(run_cpu1 - run_cpu0) / phase_s,
            bench_busy_cores=(bench_cpu1 - bench_cpu0) / phase_s,
            phase_s=phase_s,
            batch_per_minibatch=total // max(minibatches, 1),
            minibatches_per_update=minibatches * epochs,
            mode=mode,
        )
    finally:
        client.close()
        run.stop()


# -- reporting ---------------------------------------------------------------------------------
def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    a = np.asarray(values, dtype=float)
    return {
        "n": len(a),
        "p50": float(np.percentile(a, 50)),
        "p90": float(np.percentile(a, 90)),
        "p99": float(np.percentile(a, 99)),
        "max": float(a.max()),
        "mean": float(a.mean()),
    }


FIGURES = (
    ("pause (client: request -> PauseReply)", "pause_ms"),
    ("pause (controller: latency_s)", "controller_ms"),
    ("resume (client: request -> ResumeReply)", "resume_ms"),
    (f"patch {PATCH_PARAM} wait=True (client: request -> applied)", "patch_ms"),
)


def figure_rows(result: Result) -> list[tuple[str, dict | None]]:
    ok = [m for m in result.moments]
    return [(label, stats([getattr(m, attr) for m in ok if getattr(m, attr) is not None])) for label, attr in FIGURES]


def where_counts(result: Result) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for m in result.moments:
        if m.pause_ms is not None:
            out.setdefault(m.where, []).append(m.pause_ms)
    return out


def print_result(result: Result) -> None:
    print(
        f"\n-- num_steps={result.num_steps}: {len(result.moments)} moments over {result.phase_s:.0f} s, "
        f"iterations {result.iterations_before} -> {result.iterations_after}"
    )
    sps = f"{np.mean(result.sps):.0f}" if result.sps else "n/a"
    print(f"   env SPS before pausing (iterations 2..{result.iterations_before}): {sps}")
    print(f"   {'figure':<52} {'n':>4} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}   (ms)")
    for label, s in figure_rows(result):
        if s is None:
            print(f"   {label:<52} {0:>4}")
            continue
        print(f"   {label:<52} {s['n']:>4} {s['p50']:>8.1f} {s['p90']:>8.1f} {s['p99']:>8.1f} {s['max']:>8.1f}")
    for line in summary_lines(result):
        print(f"   {line}")


def summary_lines(result: Result) -> list[str]:
    lines = []
    rows = dict(figure_rows(result))
    pause = rows[FIGURES[0][0]]
    ctl = rows[FIGURES[1][0]]
    resume = rows[FIGURES[2][0]]
    patch = rows[FIGURES[3][0]]
    if pause:
        verdict = "within" if pause["p99"] <= TARGET_P99_MS else "ABOVE"
        lines.append(
            f"pause: p99 {pause['p99']:.1f} ms, {verdict} the {TARGET_P99_MS:.0f} ms target "
            f"(median {pause['p50']:.1f} ms, worst {pause['max']:.1f} ms)."
        )
    if ctl and pause:
        lines.append(
            f"controller-side barrier time: p50 {ctl['p50']:.1f} ms, p99 {ctl['p99']:.1f} ms; the rest "
            f"(~{pause['p50'] - ctl['p50']:.1f} ms median) is the client round trip."
        )
    if resume:
        lines.append(f"resume: p50 {resume['p50']:.1f} ms, p99 {resume['p99']:.1f} ms (answered at once, no barrier).")
    if patch:
        mid = sum(1 for m in result.moments if m.patch_minibatch)
        n = sum(1 for m in result.moments if m.patch_ms is not None)
        lines.append(
            f"patch: p50 {patch['p50']:.1f} ms, p99 {patch['p99']:.1f} ms; {mid}/{n} applied mid-update "
            f"(minibatch > 0), the rest at minibatch 0 (learner waiting for rollouts)."
        )
    counts = where_counts(result)
    parts = []
    for where in ("mid-update", "update boundary", "collecting"):
        values = counts.get(where, [])
        if values:
            parts.append(f"{where} {len(values)} (p50 {np.percentile(values, 50):.1f} / max {max(values):.1f} ms)")
    if parts:
        lines.append("learner position when paused: " + ", ".join(parts) + ".")
    errors = [m.error for m in result.moments if m.error]
    if errors:
        lines.append(f"errors: {len(errors)} ({'; '.join(sorted(set(errors))[:3])}).")
    lines.append(
        f"load: loadavg {result.load_before[0]:.2f} before, {result.load_after[0]:.2f} after; "
        f"busy cores during the pauses: machine {result.machine_busy_cores:.2f}, run "
        f"{result.run_busy_cores:.2f}, bench {result.bench_busy_cores:.2f}, others "
        f"{result.other_cores:.2f} (of {os.cpu_count()})"
        + (
            " - CONTENDED: other processes took CPU from the run; rerun on a quiet machine."
            if result.other_cores > CONTENDED_CORES
            else "."
        )
    )
    return lines


def markdown(
    args, results: list[Result], contended: list[Result], started: str, uptime_before: str, uptime_after: str
) -> str:
    out = ["# Pause latency", ""]
    out.append(f"- date: {started}")
    out.append(f"- command: `{' '.join(shlex.quote(a) for a in [sys.executable.rsplit('/', 1)[-1], *sys.argv])}`")
    out.append(f"- machine: {machine.describe()}")
    out.append(f"- load before: `{uptime_before}`")
    out.append(f"- load after: `{uptime_after}`")
    out.append(
        f"- run: `{args.env}`, config `{args.config}`, {args.envrunners} env-runners x {args.num_envs} "
        f"envs, processes: controller, learner, {args.envrunners} env-runners, logger; "
        f"{args.pauses} pauses per run at seeded random moments ({args.min_gap}-{args.max_gap} s of "
        f"running between them, seed {args.seed}); a `{PATCH_PARAM}` patch (wait=True) at every "
        f"{args.patch_every}th moment"
    )
    out.append("")
    out.append(
        "Latencies in ms. Client side: `ControlClient.call` in this process (request sent -> reply "
        "received). Controller side: `PauseReply.latency_s` (request received -> last barrier report)."
    )
    out.append("")
    out.append("| num_steps | env SPS before pausing | other load (cores) | figure | n | p50 | p90 | p99 | max |")
    out.append("|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for r in results:
        sps = f"{np.mean(r.sps):.0f}" if r.sps else "n/a"
        for label, s in figure_rows(r):
            if s is None:
                continue
            out.append(
                f"| {r.num_steps} | {sps} | {r.other_cores:.2f} | {label} | {s['n']} | {s['p50']:.1f} | "
                f"{s['p90']:.1f} | {s['p99']:.1f} | {s['max']:.1f} |"
            )
    out.append("")
    out.append("Where the learner stood when paused (pause latency, client side, ms):")
    out.append("")
    out.append("| num_steps | learner position | n | p50 | max |")
    out.append("|---:|---|---:|---:|---:|")
    for r in results:
        for where, values in sorted(where_counts(r).items()):
            out.append(
                f"| {r.num_steps} | {where} | {len(values)} | {np.percentile(values, 50):.1f} | {max(values):.1f} |"
            )
    out.append("")
    out.append(
        "`mid-update`: the learner stopped between two gradient steps (minibatch > 0); `collecting`: the "
        "learner waited for rollouts and the env-runners stopped between env steps; `update boundary`: "
        "learner at minibatch 0 with every env-runner at the end of its rollout."
    )
    out.append("")
    if contended:
        out.append(
            "Attempts set aside because other processes on the machine took CPU from the run "
            "(client-side pause latency, ms; 'others' = average busy cores not used by the run or the bench):"
        )
        out.append("")
        out.append("| num_steps | others (cores) | env SPS | p50 | p90 | p99 | max | resume p99 | patch p99 |")
        out.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in contended:
            rows = dict(figure_rows(r))
            s, res, pat = rows[FIGURES[0][0]], rows[FIGURES[2][0]], rows[FIGURES[3][0]]
            if s is None:
                continue
            sps = f"{np.mean(r.sps):.0f}" if r.sps else "n/a"
            out.append(
                f"| {r.num_steps} | {r.other_cores:.2f} | {sps} | {s['p50']:.1f} | {s['p90']:.1f} | "
                f"{s['p99']:.1f} | {s['max']:.1f} | {res['p99'] if res else float('nan'):.1f} | "
                f"{pat['p99'] if pat else float('nan'):.1f} |"
            )
        out.append("")
    for r in results:
        out.append(
            f"**num_steps={r.num_steps}** (run.mode {r.mode}, {r.batch_per_minibatch} samples per minibatch, "
            f"{r.minibatches_per_update} gradient steps per update; iterations {r.iterations_before} -> "
            f"{r.iterations_after} during {r.phase_s:.0f} s of pauses):"
        )
        out.append("")
        for line in summary_lines(r):
            out.append(f"- {line}")
        out.append("")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="Ant-v5")
    parser.add_argument(
        "--config",
        default="configs/env/mujoco_ant.yaml",
        help="run config (its hyperparameters; --env and the options below override it)",
    )
    parser.add_argument("--pauses", type=int, default=100)
    parser.add_argument("--num-steps", type=int, nargs="+", default=[256, 2048], help="rollout length(s); one run each")
    parser.add_argument("--envrunners", type=int, default=2)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--total-env-steps", type=int, default=100_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--min-gap", type=float, default=0.05)
    parser.add_argument("--max-gap", type=float, default=1.0)
    parser.add_argument("--patch-every", type=int, default=4, help="patch at every k-th moment (0: never)")
    parser.add_argument(
        "--patch-value",
        type=float,
        default=0.001,
        help=f"{PATCH_PARAM} alternates between the run's value and this one",
    )
    parser.add_argument(
        "--warmup-iterations", type=int, default=3, help="start pausing once this many iterations are done"
    )
    parser.add_argument("--start-timeout", type=float, default=300.0)
    parser.add_argument(
        "--request-timeout", type=float, default=15.0, help="client timeout per request (s); no retries"
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each run, wait up to this long for the machine to be idle (others' load)",
    )
    parser.add_argument(
        "--retry-contended",
        type=int,
        default=0,
        metavar="K",
        help="measure a contended run again (after --wait-idle) up to K times",
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config override")
    parser.add_argument(
        "--out", default=str(HERE / "results" / "pause_latency.md"), help="markdown results file ('-': do not write)"
    )
    args = parser.parse_args()

    def on_term(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_term)

    started = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    uptime_before = machine.uptime()
    print(f"machine: {machine.describe()}\nload: {uptime_before}", flush=True)
    results, contended = [], []
    with tempfile.TemporaryDirectory(prefix="dynamicrl-pause-bench-") as tmp:
        for num_steps in args.num_steps:
            for attempt in range(1 + args.retry_contended):
                workdir = Path(tmp) / f"steps{num_steps}-{attempt + 1}"
                workdir.mkdir()
                if args.wait_idle > 0:
                    wait_idle(args.wait_idle)
                result = measure(args, num_steps, workdir)
                print_result(result)
                if result.other_cores <= CONTENDED_CORES or attempt == args.retry_contended:
                    break
                contended.append(result)
                print(f"   (contended: measuring num_steps={num_steps} again)", flush=True)
            results.append(result)
    uptime_after = machine.uptime()
    print(f"\nload: {uptime_after}")
    if len(results) > 1:
        print("\nrollout length vs pause latency (client side, ms):")
        for r in results:
            s = dict(figure_rows(r))[FIGURES[0][0]]
            if s:
                print(
                    f"   num_steps={r.num_steps:<6} p50 {s['p50']:6.1f}  p90 {s['p90']:6.1f}  p99 {s['p99']:6.1f}  "
                    f"max {s['max']:6.1f}"
                )
    if args.out != "-":
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        text = markdown(args, results, contended, started, uptime_before, uptime_after) + "\n"
        old = out.read_text() if out.exists() else ""
        if NOTES_MARKER in old:  # hand-written findings below the marker survive a rerun
            text += "\n" + old[old.index(NOTES_MARKER) :]
        out.write_text(text)
        print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
