"""What the dashboard costs the run: training SPS with viewers, event latency, click-to-paused, page weight.

Runs a run as real processes on free ports (by default CartPole-v1, 1 env-runner x 2 envs, 64-step
rollouts; ``--config configs/experiments/mujoco_ant_interactive.yaml --envrunners 2`` for the
showcase; no previewer, no console), its dashboard as a user starts it (``dynamicrl dashboard
--port 0 --token-file F``) and the viewers as httpx clients in threads of this process, one variant
after the other in this one invocation, and prints figures measured side by side; asserts nothing.

1. Training SPS (env steps over wall time in metrics.csv, first row to last), ``--steps`` each,
   ``--rounds`` interleaved rounds, medians compared: no dashboard; a dashboard with ``--viewers``
   viewers, each reading ``GET /api/events`` to the end and polling ``GET /api/status`` every 2 s
   as the page does (the goal: a ratio of at least 0.98). The viewers run on this machine, as a
   browser would.
2. Event latency, bus -> event-stream reader, in those runs: for every ``metrics.train`` event a
   viewer reads, its wall time then minus the envelope's ``ts``; and ``GET /api/dashboard`` at the end.
3. Click to paused, ``--pauses`` times in an endless run with a dashboard and one viewer:
   ``POST /api/pause`` -> its reply (every service at its barrier), and -> the viewer reading
   ``control.state`` ``paused``; then ``POST /api/resume`` and a seeded random 0.5-1.5 s of running.
4. Page weight: ``/``, its script, its style sheet and plotly.js, bytes raw and as sent with gzip.
5. In headless Chromium (Debian's ``chromium``, ``chromedriver``): ``--pauses`` clicks on the page's
   pause button -> its state badge reading ``paused``, and for 20 s each ``metrics.train``'s arrival
   in the browser minus its envelope ``ts`` (``--skip-browser`` leaves it out).

    python bench/dashboard_cost.py [--config PATH] [--envrunners N] [--steps 65536] [--rounds 2] [--viewers 10]
                                   [--pauses 20] [--seed 1] [--skip-sps] [--skip-pauses] [--skip-browser]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import re
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import machine  # bench/machine.py
from harness import NO_PREVIEWER, Run, cpu_ticks, read_training

from dynamicrl.clients.processes import start_module

CARTPOLE = ["env.num_envs=2", "algo.num_steps=64"]  # the default config's env, in short iterations
URL = re.compile(r"Dashboard: (http://\S+)/\?token=(\S+)")
PAGE = ("/", "/static/dashboard.js", "/static/dashboard.css", "/static/plotly.min.js")
STATUS_POLL_S = 2.0  # how often the page asks for the status
Stats = dict[str, object]  # GET /api/dashboard


def make_run(workdir: Path, args: argparse.Namespace, overrides: list[str]) -> Run:
    workdir.mkdir(parents=True)
    layout = [] if args.config else CARTPOLE
    return Run(workdir, [*NO_PREVIEWER, "logger.console=false", *layout, *overrides], args.config, args.envrunners)


def start_dashboard(run: Run) -> tuple[str, str]:
    """``dynamicrl dashboard`` for ``run`` (``run.procs["dashboard"]``: stopped with the run); its URL and token."""
    config = ["-c", str(run.config)] if run.config is not None else []
    command = ["dashboard", "--port", "0", "--token-file", str(run.workdir / "dashboard.token")]
    run.procs["dashboard"] = start_module(
        "dynamicrl.clients.cli", [*command, *config, *run.overrides], run.workdir, "dashboard"
    )
    deadline = time.monotonic() + 60
    while not (found := URL.search(run.log("dashboard"))):
        if run.procs["dashboard"].poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the dashboard printed no URL:\n{run.log_tail('dashboard')}")
        time.sleep(0.1)
    return found.group(1), found.group(2)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def wait_for(ready: Callable[[], bool], run: Run, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline or run.dead():
            raise SystemExit(f"{what} within {timeout:.0f} s: {run.dead()}")
        time.sleep(0.2)


class Viewer:
    """One browser tab: reads the event stream to the end in one thread, polls the status in another."""

    def __init__(self, base: str, token: str, stop: threading.Event, states: queue.Queue[State] | None = None) -> None:
        self.base, self.headers, self.stop, self.states = base, bearer(token), stop, states
        self.latencies_ms: list[float] = []  # metrics.train: read - envelope ts
        self.events = self.gaps = self.polls = 0
        self.errors: list[str] = []
        self.threads = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._poll, daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def _read(self) -> None:
        timeout = httpx.Timeout(10, read=60)  # the stream pings every 15 s
        try:
            with (
                httpx.Client(base_url=self.base, headers=self.headers, timeout=timeout) as client,
                client.stream("GET", "/api/events") as response,
            ):
                response.raise_for_status()
                kind = "message"
                for line in response.iter_lines():
                    wall, now = time.time(), time.perf_counter()
                    if line.startswith("event:"):
                        kind = line[6:].strip()
                    elif line.startswith("data:") and kind == "gap":
                        self.gaps += 1
                    elif line.startswith("data:") and kind == "bus":
                        self._event(json.loads(line[5:]), wall, now)
                    elif not line:
                        kind = "message"
        except (httpx.HTTPError, json.JSONDecodeError) as exc:
            if not self.stop.is_set():
                self.errors.append(f"events: {exc!r}")

    def _event(self, event: dict[str, object], wall: float, now: float) -> None:
        self.events += 1
        ts, body = event.get("ts"), event.get("body")
        if event.get("topic") == "metrics.train" and isinstance(ts, float):
            self.latencies_ms.append(1000 * (wall - ts))
        elif event.get("topic") == "control.state" and self.states is not None and isinstance(body, dict):
            self.states.put(State(now, float(ts) if isinstance(ts, (int, float)) else 0.0, str(body.get("state"))))

    def _poll(self) -> None:
        with httpx.Client(base_url=self.base, headers=self.headers, timeout=30) as client:
            while not self.stop.wait(STATUS_POLL_S):
                try:
                    client.get("/api/status")  # 503 once the run is over: the page shows it and goes on
                    self.polls += 1
                except httpx.HTTPError as exc:
                    self.errors.append(f"status: {exc!r}")

    def join(self, timeout: float) -> None:
        for thread in self.threads:
            thread.join(timeout)


@dataclass
class State:
    read: float  # perf_counter
    ts: float  # envelope ts (wall time)
    state: str


@dataclass
class Trained:
    sps: float
    latencies_ms: list[float] = field(default_factory=list)
    stats: Stats | None = None
    errors: list[str] = field(default_factory=list)
    dashboard_cpu_s: float = 0.0  # the dashboard process's CPU time over the run
    viewers_cpu_s: float = 0.0  # this process's (the viewers') CPU time over the run
    wall_s: float = 0.0


def train(workdir: Path, args: argparse.Namespace, viewers: int) -> Trained:
    """One run of ``--steps`` env steps to its end, with ``viewers`` viewers on a dashboard (0: no dashboard)."""
    run = make_run(workdir, args, [f"run.total_env_steps={args.steps}"])
    stop = threading.Event()
    tabs: list[Viewer] = []
    stats: Stats | None = None
    try:
        run.start_controller()
        if viewers:  # every viewer reads from before the first iteration
            base, token = start_dashboard(run)
            tabs = [Viewer(base, token, stop) for _ in range(viewers)]
            stats_url = f"{base}/api/dashboard"
            wait_for(
                lambda: httpx.get(stats_url, headers=bearer(token)).json()["readers"] >= viewers, run, 60, "no viewers"
            )
        # CPU from here on: the dashboard's start-up (imports: about a CPU-second) is not what viewers cost
        board_start = (cpu_ticks(run.procs["dashboard"].pid) or 0) / os.sysconf("SC_CLK_TCK") if viewers else 0.0
        run.start_members()
        mine = time.process_time()
        board_s = run.wait_done(ignore=["dashboard"]).get("dashboard", 0.0)
        viewers_cpu = time.process_time() - mine
        if viewers:
            time.sleep(0.5)  # the last events reach the viewers
            stats = httpx.get(stats_url, headers=bearer(token)).json()
    finally:
        stop.set()
        run.stop()
        for tab in tabs:
            tab.join(5)
    done = read_training(workdir)
    latencies = [ms for tab in tabs for ms in tab.latencies_ms]
    errors = [e for tab in tabs for e in tab.errors]
    return Trained(done.sps, latencies, stats, errors, board_s - board_start, viewers_cpu, done.wall_s)


def pauses(workdir: Path, args: argparse.Namespace) -> tuple[dict[str, list[float]], Stats]:
    """``--pauses`` pauses of an endless run from its dashboard: click -> reply, click -> ``paused`` read (ms)."""
    run = make_run(workdir, args, ["run.total_env_steps=100000000"])
    rng = random.Random(args.seed)
    stop = threading.Event()
    states: queue.Queue[State] = queue.Queue()
    tab: Viewer | None = None
    found: dict[str, list[float]] = {"reply_ms": [], "event_ms": []}
    try:
        run.start_controller()
        base, token = start_dashboard(run)
        tab = Viewer(base, token, stop, states)
        run.start_members()
        with httpx.Client(base_url=base, headers=bearer(token), timeout=60) as api:

            def going() -> bool:  # running, 3 iterations in
                status = api.get("/api/status")
                reply: dict[str, object] = status.json() if status.status_code == 200 else {}
                ltime = reply.get("ltime")
                return reply.get("state") == "running" and isinstance(ltime, dict) and ltime["iteration"] >= 3

            wait_for(going, run, 300, "the run did not get going")
            for _ in range(args.pauses):
                while not states.empty():
                    states.get_nowait()
                sent, wall = time.perf_counter(), time.time()
                reply = api.post("/api/pause", json={})  # as the page sends it
                replied = time.perf_counter()
                if reply.status_code != 200:
                    raise SystemExit(f"POST /api/pause: {reply.status_code} {reply.text}")
                found["reply_ms"].append(1000 * (replied - sent))
                try:
                    while (seen := states.get(timeout=30)).state != "paused" or seen.ts < wall:
                        pass
                    found["event_ms"].append(1000 * (seen.read - sent))
                except queue.Empty:
                    print("  no control.state paused read within 30 s of a pause", flush=True)
                if (resumed := api.post("/api/resume", json={})).status_code != 200:
                    raise SystemExit(f"POST /api/resume: {resumed.status_code} {resumed.text}")
                time.sleep(rng.uniform(0.5, 1.5))
            stats: Stats = api.get("/api/dashboard").json()
    finally:
        stop.set()
        run.stop()
        if tab is not None:
            tab.join(5)
            for error in tab.errors:
                print(f"  viewer: {error}")
    return found, stats


#: In the page: click a button and resolve with the ms until #run-state reads ``state``.
CLICK_UNTIL = """
const [button, state, done] = arguments;
const badge = document.getElementById("run-state");
const started = performance.now();
const observer = new MutationObserver(() => {
  if (badge.textContent === state) { observer.disconnect(); done(performance.now() - started); }
});
observer.observe(badge, {childList: true, characterData: true, subtree: true});
document.getElementById(button).click();
"""
#: In the page: a second event stream for ``seconds``; each metrics.train's arrival minus its envelope ts (ms).
EVENT_LATENCIES = """
const [seconds, done] = arguments;
const found = [], source = new EventSource("/api/events");
source.addEventListener("bus", (e) => {
  const event = JSON.parse(e.data);
  if (event.topic === "metrics.train") found.push(Date.now() - 1000 * event.ts);
});
setTimeout(() => { source.close(); done(found); }, 1000 * seconds);
"""


def browser(workdir: Path, args: argparse.Namespace) -> dict[str, list[float]]:
    """Headless Chromium on the page of an endless run: click on pause -> the badge says ``paused`` (ms), and
    bus -> the browser for metrics.train (ms)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    run = make_run(workdir, args, ["run.total_env_steps=100000000"])
    rng = random.Random(args.seed)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = None
    found: dict[str, list[float]] = {"click_ms": [], "event_ms": []}
    try:
        run.start_controller()
        base, token = start_dashboard(run)
        run.start_members()
        driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
        driver.set_script_timeout(120)
        driver.get(f"{base}/?token={token}")
        wait_for(lambda: driver.find_element("id", "run-state").text == "running", run, 300, "no running page")
        found["event_ms"] = driver.execute_async_script(EVENT_LATENCIES, 20)
        for _ in range(args.pauses):
            found["click_ms"].append(driver.execute_async_script(CLICK_UNTIL, "btn-pause", "paused"))
            driver.execute_async_script(CLICK_UNTIL, "btn-resume", "running")
            time.sleep(rng.uniform(0.5, 1.5))
    finally:
        if driver is not None:
            driver.quit()
        run.stop()
    return found


def page_weight(workdir: Path) -> None:
    """Each page file's bytes, raw and as sent with gzip, from a dashboard of no run (static files need none)."""
    workdir.mkdir(parents=True)
    run = Run(workdir)
    try:
        base, token = start_dashboard(run)
        total_raw = total_sent = 0
        print("page weight (kB: raw / sent with Accept-Encoding: gzip)")
        with httpx.Client(base_url=base, headers=bearer(token), timeout=60) as client:
            for path in PAGE:
                raw = client.get(path, headers={"Accept-Encoding": "identity"})
                if raw.status_code != 200:
                    print(f"  {path:<24} missing (HTTP {raw.status_code})")
                    continue
                with client.stream("GET", path, headers={"Accept-Encoding": "gzip"}) as gz:
                    sent = sum(len(chunk) for chunk in gz.iter_raw())
                    encoding = gz.headers.get("content-encoding", "none")
                total_raw, total_sent = total_raw + len(raw.content), total_sent + sent
                print(
                    f"  {path:<24} {len(raw.content) / 1000:8.1f} / {sent / 1000:8.1f}  (Content-Encoding: {encoding})"
                )
        print(f"  {'total':<24} {total_raw / 1000:8.1f} / {total_sent / 1000:8.1f}", flush=True)
    finally:
        run.stop()


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def spread(values: list[float]) -> str:
    if not values:
        return "n/a"
    p50, p90 = statistics.median(values), quantile(values, 0.9)
    return f"p50 {p50:7.1f}  p90 {p90:7.1f}  max {max(values):7.1f}  (n={len(values)})"


def about(stats: Stats | None) -> str:
    keys = ("readers", "events", "dropped_by_readers", "missed_on_bus")
    return ", ".join(f"{key} {stats.get(key)}" for key in keys) if stats else "n/a"


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed bench still stops its runs (finally)
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--config", type=Path, default=None, help="default: configs/defaults.yaml, in short iterations")
    parser.add_argument("--envrunners", type=int, default=1)
    parser.add_argument("--steps", type=int, default=65536, help="env steps per SPS run")
    parser.add_argument("--rounds", type=int, default=2, help="SPS runs per variant, interleaved")
    parser.add_argument("--viewers", type=int, default=10)
    parser.add_argument("--pauses", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-sps", action="store_true")
    parser.add_argument("--skip-pauses", action="store_true")
    parser.add_argument("--skip-browser", action="store_true", help="no headless Chromium part")
    args = parser.parse_args()
    if args.config is not None:
        args.config = args.config.resolve()  # the runs start in their own directories
    print(machine.describe(), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        page_weight(Path(tmp) / "page")
        if not args.skip_sps:
            watched = f"{args.viewers} viewers"
            found: dict[str, list[Trained]] = {"no dashboard": [], watched: []}
            for round_ in range(args.rounds):  # interleaved: a drift of the machine hits both variants alike
                for k, (name, viewers) in enumerate({"no dashboard": 0, watched: args.viewers}.items()):
                    result = train(Path(tmp) / f"sps-{round_}-{k}", args, viewers)
                    found[name].append(result)
                    extra = f"; dashboard: {about(result.stats)}" if viewers else ""
                    print(f"  round {round_ + 1}, {name}: {result.sps:.0f} env steps/s{extra}", flush=True)
                    for error in result.errors:
                        print(f"    viewer: {error}")
            median = {name: statistics.median(r.sps for r in results) for name, results in found.items()}
            for name, sps in median.items():
                print(f"{name:<16} median {sps:7.0f} env steps/s")
            print(f"SPS ratio of the medians, {watched} / no dashboard: {median[watched] / median['no dashboard']:.3f}")
            paired = [w.sps / n.sps for w, n in zip(found[watched], found["no dashboard"])]
            each = ", ".join(f"{r:.3f}" for r in paired)
            print(f"SPS ratio per round: {each}; median {statistics.median(paired):.3f} (goal >= 0.98)")
            share = [(r.dashboard_cpu_s, r.viewers_cpu_s, r.wall_s) for r in found[watched]]
            board, tabs = (sum(s[i] for s in share) / sum(s[2] for s in share) for i in (0, 1))
            cores = os.cpu_count() or 1
            print(
                f"CPU while training: the dashboard {100 * board:.1f}% of a core, the {args.viewers} viewers "
                f"{100 * tabs:.1f}%; together {100 * (board + tabs) / cores:.1f}% of this {cores}-core machine "
                "(what they can take from training at most)"
            )
            latencies = [ms for r in found[watched] for ms in r.latencies_ms]
            if latencies:
                p50, p99 = statistics.median(latencies), quantile(latencies, 0.99)
                print(f"metrics.train, bus -> viewer, ms: p50 {p50:.1f}  p99 {p99:.1f}  (n={len(latencies)})")
            print(f"GET /api/dashboard of the last {watched}: {about(found[watched][-1].stats)}", flush=True)
        if not args.skip_pauses:
            clicks, stats = pauses(Path(tmp) / "pauses", args)
            print("click to paused, ms (POST /api/pause sent ->)")
            print(f"  its reply:                {spread(clicks['reply_ms'])}")
            print(f"  control.state paused read: {spread(clicks['event_ms'])}")
            print(f"  GET /api/dashboard: {about(stats)}")
        if not args.skip_browser:
            seen = browser(Path(tmp) / "browser", args)
            print("in headless Chromium (the page itself)")
            print(f"  click on pause -> badge 'paused', ms: {spread(seen['click_ms'])}")
            late = seen["event_ms"]
            tail = f"  p99 {quantile(late, 0.99):.1f}" if late else ""
            print(f"  metrics.train, bus -> browser, ms:   {spread(late)}{tail}")


if __name__ == "__main__":
    main()
