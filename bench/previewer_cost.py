"""What the previewer costs the run: training SPS with clips, and pause latency with previews.

Runs the showcase config (configs/experiments/mujoco_ant_interactive.yaml: Ant-v5, 2 env-runners x
4 envs, overlap mode) as real processes on free ports, one variant after the other in this one
invocation, and prints figures and ratios measured side by side; asserts nothing.

1. Training SPS (env steps over wall time in metrics.csv, first row to last), ``--steps`` each,
   ``--rounds`` interleaved rounds, medians compared: no previewer; the previewer idle (pause
   previews on, as by default, no clips); a clip every ``--every`` iterations. Also: clips
   written against triggers, and the previewer's CPU seconds per clip (within ``video.cpu_budget``
   clips come late and skip triggers rather than cost steps/s; ``--clip video.cpu_budget=null``
   measures a clip's whole CPU cost).
2. Pause latency, ``--pauses`` pauses at seeded random moments in an endless run, without and with
   pause previews: the client's request -> PauseReply, the controller's ``latency_s``, and for the
   previews the PauseReply -> ``metrics.previews`` time.

    python bench/previewer_cost.py [--steps 204800] [--every 10] [--rounds 2] [--pauses 30] [--skip-sps|--skip-pauses]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import machine  # bench/machine.py
from harness import NO_PREVIEWER, Run, read_training

from dynamicrl.clients.control import ControlClient, ControlError, RequestTimeout
from dynamicrl.protocol import security
from dynamicrl.protocol.messages import PauseRequest, PreviewsSaved, ResumeRequest, RunState, StatusRequest
from dynamicrl.protocol.sockets import Subscriber

REPO = Path(__file__).resolve().parents[1]
SHOWCASE = REPO / "configs/experiments/mujoco_ant_interactive.yaml"


def start(workdir: Path, overrides: list[str], previewer: bool) -> Run:
    workdir.mkdir(parents=True)
    run = Run(workdir, overrides, config=SHOWCASE, envrunners=2)
    run.start()
    if previewer:
        run._start("previewer", "previewer")
    return run


def train(workdir: Path, steps: int, video: list[str], previewer: bool) -> dict[str, Any]:
    """One run of ``steps`` env steps to its end: SPS, clips, the previewer's CPU time and clip lags."""
    run = start(workdir, [f"run.total_env_steps={steps}", *video], previewer)
    try:
        previewer_cpu_s = run.wait_done(ignore=["previewer"]).get("previewer", 0.0)
    finally:
        run.stop()
    done = read_training(workdir)
    videos = done.run_dir / "videos"
    clips = sorted(videos.glob("iter-*.json")) if videos.is_dir() else []
    return {
        "sps": done.sps,
        "iterations": done.iterations,
        "clips": len(clips),
        "iterations_filmed": [json.loads(c.read_text())["iteration"] for c in clips],
        "previewer_cpu_s": previewer_cpu_s,
        "wall_s": done.wall_s,
    }


def pauses(workdir: Path, count: int, previews: bool, seed: int) -> dict[str, list[float]]:
    """``count`` pauses of an endless run: latencies in ms (and, with previews, PauseReply -> previews)."""
    video = ["video.every_iterations=null", f"video.pause_previews={str(previews).lower()}"]
    run = start(workdir, ["run.total_env_steps=100000000", *video], previewer=previews)
    rng = random.Random(seed)
    found: dict[str, list[float]] = {"client_ms": [], "controller_ms": [], "previews_ms": []}
    ctx = security.context()
    sub = Subscriber(ctx, run.address["bus_out"], [PreviewsSaved.TYPE])
    client = ControlClient(run.endpoint, timeout_s=30, retries=0)
    try:
        deadline = time.monotonic() + 300
        while True:  # running, 3 iterations in, the previewer (if any) on the roster
            if time.monotonic() > deadline or run.dead():
                raise SystemExit(f"the run did not get going: {run.dead()}")
            try:
                status = client.call(StatusRequest())
            except (RequestTimeout, ControlError):
                time.sleep(0.3)
                continue
            ready = status.state is RunState.RUNNING and status.ltime and status.ltime.iteration >= 3
            if ready and (not previews or any(s.role.value == "previewer" for s in status.services)):
                break
            time.sleep(0.3)
        for _ in range(count):
            time.sleep(rng.uniform(0.2, 1.0))
            sent = time.perf_counter()
            reply = client.call(PauseRequest())
            replied = time.perf_counter()
            found["client_ms"].append(1000 * (replied - sent))
            found["controller_ms"].append(1000 * reply.latency_s)
            if previews and reply.previews:
                while sub.socket.poll(30_000):
                    received = sub.receive()
                    if (
                        received
                        and isinstance(received.message, PreviewsSaved)
                        and received.message.pause == reply.pause
                    ):
                        found["previews_ms"].append(1000 * (time.perf_counter() - replied))
                        break
            else:
                time.sleep(0.1)
            client.call(ResumeRequest())
    finally:
        client.close()
        sub.close()
        ctx.term()
        run.stop()
    return found


def spread(values: list[float]) -> str:
    if not values:
        return "n/a"
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"p50 {statistics.median(ordered):7.1f}  p90 {p90:7.1f}  max {ordered[-1]:7.1f}  (n={len(ordered)})"


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed bench still stops its runs (finally)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=204800, help="env steps per SPS variant (100 iterations)")
    parser.add_argument("--every", type=int, default=10, help="video.every_iterations of the clips variant")
    parser.add_argument("--clip", action="append", default=[], metavar="KEY=VALUE", help="e.g. video.max_steps=200")
    parser.add_argument("--rounds", type=int, default=2, help="SPS runs per variant, interleaved")
    parser.add_argument("--pauses", type=int, default=30, help="pauses per latency variant")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-sps", action="store_true")
    parser.add_argument("--skip-pauses", action="store_true")
    args = parser.parse_args()
    print(machine.describe(), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_sps:
            variants = {
                "no previewer": (NO_PREVIEWER, False),
                "previewer, no clips": (["video.every_iterations=null"], True),
                f"a clip every {args.every} iterations": ([f"video.every_iterations={args.every}", *args.clip], True),
            }
            found: dict[str, list[dict]] = {name: [] for name in variants}
            for round_ in range(args.rounds):  # interleaved: a drift of the machine hits every variant alike
                for k, (name, (video, previewer)) in enumerate(variants.items()):
                    result = train(Path(tmp) / f"sps-{round_}-{k}", args.steps, video, previewer)
                    found[name].append(result)
                    extra = f"; {result['clips']} clip(s), of iterations {result['iterations_filmed']}" * previewer
                    print(f"  round {round_ + 1}, {name}: {result['sps']:.0f} env steps/s{extra}", flush=True)
            median = {name: statistics.median(r["sps"] for r in results) for name, results in found.items()}
            none = median["no previewer"]
            for name, sps in median.items():
                print(f"{name:<28} median {sps:7.0f} env steps/s, ratio to no previewer {sps / none:.3f}")
            filmed = found[f"a clip every {args.every} iterations"]
            clips, cpu_s = sum(r["clips"] for r in filmed), sum(r["previewer_cpu_s"] for r in filmed)
            triggers = sum(r["iterations"] // args.every for r in filmed)
            share = cpu_s / sum(r["wall_s"] for r in filmed) / len(os.sched_getaffinity(0))
            print(
                f"clips: {clips} written for {triggers} trigger(s) ({' '.join(args.clip) or 'the config clip'}); "
                f"previewer CPU {cpu_s:.1f} s in all ({100 * share:.1f}% of the machine while training)"
                + (f", {cpu_s / clips:.1f} s per clip" if clips else "")
            )
        if not args.skip_pauses:
            off = pauses(Path(tmp) / "pauses-off", args.pauses, previews=False, seed=args.seed)
            on = pauses(Path(tmp) / "pauses-on", args.pauses, previews=True, seed=args.seed)
            print("pause latency, ms (client: request -> PauseReply; controller: latency_s)")
            print(f"  without previews, client:     {spread(off['client_ms'])}")
            print(f"  with previews, client:        {spread(on['client_ms'])}")
            print(f"  without previews, controller: {spread(off['controller_ms'])}")
            print(f"  with previews, controller:    {spread(on['controller_ms'])}")
            print(f"  previews after the reply:     {spread(on['previews_ms'])}")
            ratio = statistics.median(on["client_ms"]) / statistics.median(off["client_ms"])
            print(f"  median pause latency ratio, with / without previews: {ratio:.2f}")


if __name__ == "__main__":
    main()
