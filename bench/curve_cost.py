"""What CURVE authentication costs: training SPS and CPU, and `dynamicrl status` latency, curve on vs off.

Measures and prints, asserts nothing (issue #16: "SPS of the Ant showcase with authentication on vs
off in one run (goal <= 3% slower) and `dynamicrl status` latency"). Every run is ``--config``
(default the showcase, configs/experiments/mujoco_ant_interactive.yaml: Ant-v5, 2 env-runners x 4
envs, overlap mode) as real processes on free ports on 127.0.0.1 (bench/harness.py's ``Run``:
controller, learner, the config's env-runners, logger; no previewer, no console), with
``security.curve=true`` or ``false`` and a keys directory made for this invocation (so
~/.dynamicrl/keys is neither used nor changed). Every process is stopped by pid with bounded waits.

1. Training: ``--rounds`` rounds of two runs, curve on and curve off, the order alternating
   (on, off, off, on, ...) so that a drift of the machine hits both alike. Each run trains exactly
   ``--iterations`` iterations (``run.total_env_steps`` = iterations x env-runners x num_envs x
   num_steps) and ends by itself. Per run: SPS (env steps over wall time in metrics.csv, first row
   to last: start-up and iteration 1 left out) and the CPU seconds of its processes from the first
   metrics row to each one's exit (/proc; the final checkpoint and the shutdown included, alike in
   both). Per round the ratios SPS off/on and CPU on/off (above 1: what curve costs), and their
   medians. The goal is SPS off/on <= 1.03. On a 2-core machine SPS varies by 10-15% from run to
   run, far more than the goal, while CPU seconds vary much less, so the CPU ratio is the more
   reliable bound.
2. `dynamicrl status` latency against one live run of the config (training, endless), curve on and
   then off (bench/status_latency.py's ``measure``): a status request's round trip in this process
   through ``ControlClient`` on a fresh connection each time (connect, the CURVE handshake, the
   request, close) and on one kept connection (``--requests`` of each), and the whole
   ``dynamicrl status`` command (a subprocess, as a user runs it; ``--status-runs`` of them)
   beside ``python -c pass``.
3. CURVE on the data wire alone (bench/curve_wire.py's ``measure``): the CPU of one iteration's
   rollouts and weights sent round trip, curve on vs off, divided by the CPU per iteration the
   curve-off runs of part 1 spent: a share with far less noise than part 1's ratios
   (``--round-trips 0`` leaves it out).
4. Markdown tables of the figures.

    python bench/curve_cost.py [--config PATH] [--rounds 3] [--iterations 40] [--status-runs 20] [--requests 200]
                               [--round-trips 200]

With the defaults about 7 minutes on 2 cores (6 Ant runs of about 55 s with start-up, then two
live runs for the status figures); ``--status-runs 0`` leaves part 2 out.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import curve_wire  # bench/curve_wire.py: CURVE's CPU on the data wire alone
import harness  # bench/harness.py: a run's processes on free ports, stopped by pid
import machine  # bench/machine.py
import status_latency  # bench/status_latency.py: status timings against a live run

from dynamicrl.clients.launcher import envrunner_count
from dynamicrl.core.settings import load_config

REPO = Path(__file__).resolve().parents[1]
SHOWCASE = REPO / "configs/experiments/mujoco_ant_interactive.yaml"
QUIET = [*harness.NO_PREVIEWER, "logger.console=false"]


@dataclass
class Trained:
    curve: bool
    sps: float
    wall_s: float
    iterations: int
    cpu_s: dict[str, float]  # by process label, first metrics row -> its exit

    @property
    def total_cpu_s(self) -> float:
        return sum(self.cpu_s.values())


def layout(config: Path) -> tuple[int, int]:
    """The config's env-runners, and its env steps per iteration (all env-runners together)."""
    loaded = load_config(config)
    envrunners = envrunner_count(loaded, None)
    return envrunners, envrunners * loaded.env.num_envs * loaded.algo.num_steps


def wait_first_row(run: harness.Run, timeout: float = 600) -> None:
    """Until the run's metrics.csv has its first row (iteration 1 done)."""
    deadline = time.monotonic() + timeout
    while True:
        found = list((run.workdir / "runs").glob("*/metrics.csv"))
        if found and found[0].read_text().count("\n") >= 2:  # the header and a whole row
            return
        if time.monotonic() > deadline or run.dead():
            raise SystemExit(f"no metrics row within {timeout:.0f} s: {run.dead()}\n{run.log_tail('controller')}")
        time.sleep(0.2)


def train(workdir: Path, config: Path, envrunners: int, steps: int, curve: bool, keys: Path) -> Trained:
    """One run of ``steps`` env steps to its end with CURVE on or off."""
    workdir.mkdir(parents=True)
    overrides = [*QUIET, f"run.total_env_steps={steps}", *harness.security_overrides(curve, keys)]
    run = harness.Run(workdir, overrides, config, envrunners)
    try:
        run.start()
        wait_first_row(run)
        start = {label: (harness.cpu_ticks(p.pid) or 0) / os.sysconf("SC_CLK_TCK") for label, p in run.procs.items()}
        end = run.wait_done()
    finally:
        run.stop()
    failed = [f"{label} (exit {p.returncode})" for label, p in run.procs.items() if p.returncode]
    if failed:
        tails = "\n".join(f"--- {label}\n{run.log_tail(label)}" for label in run.procs)
        raise SystemExit(f"the run failed: {', '.join(failed)}\n{tails}")
    done = harness.read_training(workdir)
    cpu = {label: end.get(label, 0.0) - start[label] for label in run.procs}
    return Trained(curve, done.sps, done.wall_s, done.iterations, cpu)


def name(curve: bool) -> str:
    return "on" if curve else "off"


def role(label: str) -> str:
    return label.split(".")[0]  # envrunner.1, envrunner.2 -> envrunner


def training_table(rounds: list[dict[bool, Trained]]) -> None:
    """Per run (in the order they ran), then per round the ratios, and their medians."""
    roles = list(dict.fromkeys(role(label) for label in rounds[0][True].cpu_s))
    print("| round | curve | iterations | SPS | wall s | CPU s | " + " | ".join(f"{r} CPU s" for r in roles) + " |")
    print("|---:|---|---:|---:|---:|---:|" + "---:|" * len(roles))
    for k, pair in enumerate(rounds):
        for found in pair.values():  # as they ran
            per_role = {r: sum(s for label, s in found.cpu_s.items() if role(label) == r) for r in roles}
            print(
                f"| {k + 1} | {name(found.curve)} | {found.iterations} | {found.sps:.0f} | {found.wall_s:.1f} | "
                f"{found.total_cpu_s:.1f} | " + " | ".join(f"{per_role[r]:.1f}" for r in roles) + " |"
            )
    sps_ratios = [pair[False].sps / pair[True].sps for pair in rounds]
    cpu_ratios = [pair[True].total_cpu_s / pair[False].total_cpu_s for pair in rounds]
    print("\n| round | SPS off/on | CPU on/off |\n|---:|---:|---:|")
    for k, (sps, cpu) in enumerate(zip(sps_ratios, cpu_ratios)):
        print(f"| {k + 1} | {sps:.3f} | {cpu:.3f} |")
    print(f"| **median** | **{statistics.median(sps_ratios):.3f}** | **{statistics.median(cpu_ratios):.3f}** |")
    print(
        "\nSPS: env steps over wall time in metrics.csv, first row to last; CPU s: the run's processes (and by "
        "process), from the first metrics row to each one's exit. Ratios above 1: what curve costs. "
        "Goal: SPS off/on <= 1.03 (curve on at most 3% slower)."
    )


def status_table(found: dict[bool, status_latency.Latencies]) -> None:
    on, off = found[True], found[False]
    print("| what | curve on, median / p90 | curve off, median / p90 | on - off (medians) |\n|---|---:|---:|---:|")
    for what in on.seconds:
        cells = [f"{f.median_ms(what):.1f} / {f.p90_ms(what):.1f} ms" for f in (on, off)]
        print(
            f"| {what} (n={len(on.seconds[what])}) | {cells[0]} | {cells[1]} | "
            f"{on.median_ms(what) - off.median_ms(what):+.1f} ms |"
        )
    print(
        f"\nCores kept busy while timing: by the run {on.run_cores:.2f} (on) / {off.run_cores:.2f} (off), "
        f"by other processes {on.other_cores:.2f} / {off.other_cores:.2f}."
    )


def wire_table(found: curve_wire.Wire, envrunners: int, rounds: list[dict[bool, Trained]]) -> None:
    curve_wire.table(found, envrunners)
    if not rounds:
        return
    extra = (found.median_cpu_s(True) - found.median_cpu_s(False)) * envrunners
    per_iteration = statistics.median(pair[False].total_cpu_s / pair[False].iterations for pair in rounds)
    print(
        f"Against the CPU per iteration of part 1's curve-off runs ({per_iteration:.2f} s, median; start-up "
        f"excluded, the final checkpoint and the shutdown included): {100 * extra / per_iteration:.3f}%."
    )


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed bench still stops its runs (finally)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=SHOWCASE, help="default: the Ant showcase")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of (curve on, curve off) runs (default 3)")
    parser.add_argument("--iterations", type=int, default=40, help="iterations per training run (default 40)")
    parser.add_argument("--status-runs", type=int, default=20, help="`dynamicrl status` runs per setting; 0: none")
    parser.add_argument("--requests", type=int, default=200, help="in-process requests of each kind per setting")
    parser.add_argument("--round-trips", type=int, default=200, help="wire round trips per repeat (5); 0: none")
    args = parser.parse_args()
    config = args.config.resolve()  # the runs start in their own directories
    envrunners, per_iteration = layout(config)
    steps = args.iterations * per_iteration

    print(machine.describe())
    print(machine.uptime())
    print(f"config: {config} ({envrunners} env-runner(s), {per_iteration} env steps per iteration)")
    print(
        f"training: {args.rounds} round(s) of curve on and off, {args.iterations} iterations ({steps} env steps) each\n"
    )
    with tempfile.TemporaryDirectory(prefix="drl-curve-") as tmp:
        keys = Path(tmp) / "keys"
        rounds: list[dict[bool, Trained]] = []
        for k in range(args.rounds):
            order = (True, False) if k % 2 == 0 else (False, True)  # on, off, off, on, ...
            found: dict[bool, Trained] = {}
            for curve in order:
                found[curve] = train(Path(tmp) / f"train-{k}-{name(curve)}", config, envrunners, steps, curve, keys)
                f = found[curve]
                print(
                    f"  round {k + 1}, curve {name(curve)}: {f.sps:.0f} env steps/s, {f.total_cpu_s:.1f} CPU s",
                    flush=True,
                )
            rounds.append(found)
        latencies: dict[bool, status_latency.Latencies] = {}
        for curve in (True, False) if args.status_runs > 0 else ():
            print(
                f"  status latency, curve {name(curve)}: a live run, {args.status_runs} commands, "
                f"{args.requests} requests of each kind",
                flush=True,
            )
            latencies[curve] = status_latency.measure(
                Path(tmp) / f"status-{name(curve)}",
                config=config,
                envrunners=envrunners,
                live=True,
                curve=curve,
                keys=keys,
                runs=args.status_runs,
                requests=args.requests,
                overrides=QUIET,
            )

    wire = curve_wire.measure(config, args.round_trips) if args.round_trips > 0 else None

    print("\n## Training, curve on vs off\n")
    training_table(rounds)
    if latencies:
        print("\n## `dynamicrl status` latency against a live run, curve on vs off\n")
        status_table(latencies)
    if wire is not None:
        print("\n## CURVE on the data wire alone\n")
        wire_table(wire, envrunners, rounds)


if __name__ == "__main__":
    main()
