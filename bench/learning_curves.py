"""Learning curves of DynamicRL's MuJoCo PPO recipe at 1M env steps: prints figures, asserts nothing.

For each env and seed it launches a real run as separate service processes (controller,
learner, ``--envrunners`` env-runners with ``--rank``, logger:
``python -m dynamicrl.services.<name> -c configs/env/mujoco_<env>.yaml KEY=VALUE...``) on free
ports with ``run.dir=<--runs-root>/<env>-seed<k>-<time>-<pid>``, ``run.seed=<seed>``,
``run.total_env_steps=<steps>``, ``run.mode=<mode>`` (``--mode`` and ``--envrunners`` default to
the config's), extra ``--set`` overrides and ``logger.console=false``, and a checkpoint every
``--test-every`` iterations, all kept;
waits (bounded by ``--timeout``) for the controller to exit, then reads the run's
``metrics.csv``, tests every checkpoint with ``--test-episodes`` stochastic episodes
(``dynamicrl evaluate --all --stochastic``: Tianshou's test curve, every 30,720 env steps by
default as there) and plays ``--eval-episodes`` episodes with the final checkpoint's most likely
action (``dynamicrl evaluate``: SB3 rl-zoo's kind of figure). Runs go one at a time, in the
order given.

Written per run (``--csv-dir``, default bench/results/learning/):

* ``<env>-seed<k>.csv``: the learning curve, one row per iteration: ``env_steps``,
  ``return_mean`` (mean undiscounted return of the last ``metrics.return_window`` = 20 finished
  training episodes, stochastic policy, unnormalised rewards; empty before the first episode
  ends) and ``sps`` (env steps per second of that iteration, learner clock);
* ``<env>-seed<k>.json``: the run's summary (final return, the test curve as ``tests``:
  ``[env_steps, mean test return]`` per checkpoint, the final policy's evaluation, env steps
  reached, SPS, wall time, status, load average, exact command).

Then, from every ``*.json`` in every ``--csv-dir`` (so runs of earlier invocations are included):
a PNG learning curve per env (``--docs-dir``/results/<env>.png, every seed, with the published
reference figures as dashed lines) and ``--docs-dir``/results.md (tables of the return at the
end of training vs published 1M-step PPO figures, machine, date and commands). A section of
results.md between ``<!-- discussion:begin -->`` and ``<!-- discussion:end -->`` is kept when
the file is rewritten.

A run that is stopped early (``--timeout``, ``--deadline``, SIGTERM/SIGINT to this script) is
stopped by pid (SIGTERM, bounded wait, SIGKILL) and kept as *partial*: its summary records the
env steps it reached.

    python bench/learning_curves.py                                  # 4 envs x seed 1, 1M steps each
    python bench/learning_curves.py --envs hopper,halfcheetah --seeds 2
    python bench/learning_curves.py --envs hopper --steps 20000 --csv-dir /tmp/lc --docs-dir /tmp/lc
    python bench/learning_curves.py --report-only                     # redo PNGs + results.md
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import functools
import json
import os
import shlex
import signal
import sys
import time
from pathlib import Path

import harness  # bench/harness.py: a run's processes on free ports, stopped by pid
import machine  # bench/machine.py

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

#: short name: (gymnasium id, config file)
ENVS = {
    "hopper": ("Hopper-v5", "configs/env/mujoco_hopper.yaml"),
    "halfcheetah": ("HalfCheetah-v5", "configs/env/mujoco_halfcheetah.yaml"),
    "ant": ("Ant-v5", "configs/env/mujoco_ant.yaml"),
    "humanoid": ("Humanoid-v5", "configs/env/mujoco_humanoid.yaml"),
}

#: Published 1M-step PPO figures. None = not found. Each source says what its number means.
REFERENCES = [
    {
        "key": "cleanrl",
        "metric": "final",
        "name": "CleanRL `ppo_continuous_action.py`",
        "envs": "v4",
        "url": "https://docs.cleanrl.dev/rl-algorithms/ppo/#ppo_continuous_actionpy",
        "what": (
            "average episodic return of the training episodes at the end of 1M steps, mean ± std over "
            "3 seeds (openrlbenchmark tag `pr-424`; `benchmark/ppo.sh` runs "
            "`cleanrl/gymnasium_support/ppo_continuous_action.py` with its defaults: 1 env x 2048 steps, "
            "10 epochs x 32 minibatches of 64, lr 3e-4 annealed, 64x64 tanh, clip 0.2, value clipping, "
            "per-env obs + reward normalisation wrappers) -- the same recipe as ours except 1 env x 2048 "
            "steps instead of 8 envs x 256 steps. Ant-v4 is not in that benchmark"
        ),
        "values": {
            "hopper": (2382.86, 271.74),
            "halfcheetah": (1442.64, 46.03),
            "ant": None,
            "humanoid": (716.11, 49.08),
        },
    },
    {
        "key": "tianshou",
        "metric": "best_test",
        "name": "Tianshou PPO",
        "envs": "v3",
        "url": "https://github.com/thu-ml/tianshou/tree/master/examples/mujoco#ppo",
        "what": (
            "the *max* over the test points of the first 1M steps of the 10-seed mean test return: a test "
            "every 30,720 env steps (15 collects of 2048) of 10 episodes with sampled actions "
            "(`mujoco_ppo.py` does not set `deterministic_eval`); ± is the seeds' std at that point "
            "(HalfCheetah's 5783.9 ± 1244.0 is the row at 921,600 steps of "
            "`benchmark/HalfCheetah-v3/ppo/test_rew_10seeds.csv`). gym 0.17.3 / MuJoCo 2.0 v3 envs "
            "(README footnotes). The script's defaults "
            "(`examples/mujoco/mujoco_ppo.py`): 64x64 tanh, 2048 steps per collect, 10 repeats of "
            "minibatch 64, lr 3e-4 linearly decayed, advantages recomputed every repeat, last actor layer "
            "scaled by 0.01, observation and reward normalisation, no value clipping"
        ),
        "values": {
            "hopper": (2609.3, 700.8),
            "halfcheetah": (5783.9, 1244.0),
            "ant": (3258.4, 1079.3),
            "humanoid": (787.1, 193.5),
        },
    },
    {
        "key": "sb3zoo",
        "metric": "eval",
        "name": "SB3 rl-baselines3-zoo PPO",
        "envs": "v3",
        "url": "https://github.com/DLR-RM/rl-baselines3-zoo/blob/master/benchmark.md",
        "what": (
            "mean ± std of the *deterministic* policy's return over ~150k evaluation steps after 1M "
            "training steps, one run per env, per-env tuned hyperparameters. No PPO Humanoid entry"
        ),
        "values": {
            "hopper": (2410.435, 10.026),
            "halfcheetah": (5819.099, 663.530),
            "ant": (1327.158, 451.577),
            "humanoid": None,
        },
    },
]

#: Tianshou's own PPO rerun here on the v5 envs (bench/tianshou_reference.py), where it has been run
RERUN_DIR = HERE / "results" / "tianshou"


@functools.cache
def references() -> list[dict]:
    """The published figures, plus Tianshou's PPO rerun here on the v5 envs for the envs it was run on
    (read once per report, not once per plot)."""
    import tianshou_reference as rerun  # bench/tianshou_reference.py: reads its CSVs, needs no tianshou

    values, curves, seeds = {}, {}, {}
    for env, (env_id, _) in ENVS.items():
        figures = rerun.summarize(RERUN_DIR, env_id)
        if figures is not None:
            values[env] = (figures["best_test"], figures["best_test_std"])
            curves[env], seeds[env] = figures["curve"], len(figures["seeds"])
    if not values:
        return REFERENCES
    return [
        *REFERENCES,
        {
            "key": "tianshou_rerun",
            "metric": "best_test",
            "name": "Tianshou 2.0.1 PPO rerun here",
            "envs": "v5",
            "url": "../bench/tianshou_reference.py",
            "what": (
                "Tianshou's own PPO (`tianshou==2.0.1`) with the defaults of its `mujoco_ppo.py` (the row "
                "above), trained on this machine on the same Gymnasium v5 / MuJoCo 3 envs as ours and tested "
                "by the same protocol (10 stochastic episodes every 30,720 env steps); the best test counted as "
                "ours, ± the seeds' std at that point; "
                + ", ".join(f"{ENVS[env][0]}: {n} seeds" for env, n in seeds.items())
                + " (`bench/results/tianshou/`). The one like-for-like reference: same env version, metric "
                "and machine"
            ),
            "values": values,
            "curves": curves,
        },
    ]


DISCUSSION_BEGIN = "<!-- discussion:begin -->"
DISCUSSION_END = "<!-- discussion:end -->"


#: Set by SIGTERM/SIGINT to this script: stop the run in progress, keep what it reached, start no other.
STOP_REQUESTED: str | None = None


def _on_signal(signum, frame):
    global STOP_REQUESTED
    STOP_REQUESTED = signal.Signals(signum).name


# -- helpers -----------------------------------------------------------------------------------
def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def read_metrics(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def fnum(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


# -- one run -----------------------------------------------------------------------------------
def run_one(env: str, seed: int, args: argparse.Namespace, deadline: dt.datetime | None) -> dict:
    env_id, config = ENVS[env]
    from dynamicrl.core.settings import load_config

    cfg = load_config(str(REPO / config), list(args.set))
    mode = args.mode or cfg.run.mode  # the config's unless given
    envrunners = args.envrunners or (cfg.run.envrunners if isinstance(cfg.run.envrunners, int) else 1)
    runs_root = Path(args.runs_root).resolve()
    runs_root.mkdir(parents=True, exist_ok=True)
    stamp = utc_now().strftime("%Y%m%d-%H%M%S")
    log_dir = runs_root / "logs" / f"{env}-seed{seed}-{stamp}"
    log_dir.mkdir(parents=True, exist_ok=True)
    iteration_steps = cfg.algo.num_steps * cfg.env.num_envs * envrunners
    # every checkpoint kept: the test curve is played after the run
    test_overrides = (
        [
            f"checkpoint.every_iterations={args.test_every}",
            f"checkpoint.keep={-(-args.steps // iteration_steps) // args.test_every + 2}",
        ]
        if args.test_every
        else []
    )
    # the run's own directory, named here: another invocation sharing --runs-root cannot be mistaken for it
    run_dir = runs_root / f"{env}-seed{seed}-{stamp}-{os.getpid()}"
    overrides = [
        f"run.seed={seed}",
        f"run.total_env_steps={args.steps}",
        f"run.mode={mode}",
        f"run.envrunners={envrunners}",
        "logger.console=false",
        *test_overrides,
        *args.set,
    ]
    run = harness.Run(log_dir, overrides, config=REPO / config, envrunners=envrunners, run_dir=run_dir)
    procs = run.procs
    status, stop_reason = "complete", ""
    load_before = loadavg()
    started_utc = utc_now()
    started = time.monotonic()
    print(
        f"[{started_utc:%H:%M:%S}] {env_id} seed {seed}: starting ({args.steps} env steps, mode {mode}, "
        f"{envrunners} env-runner(s) x {cfg.env.num_envs} envs, load {load_before}); logs in {log_dir}",
        flush=True,
    )
    try:
        run.start()
        limit = time.monotonic() + args.timeout
        last_note = time.monotonic()
        while procs["controller"].poll() is None:
            for p in procs.values():
                p.poll()  # reap whatever exits, so the controller does not wait on zombies
            now = time.monotonic()
            if now >= limit:
                status, stop_reason = "partial", f"timeout after {args.timeout:.0f} s"
                break
            if deadline is not None and utc_now() >= deadline:
                status, stop_reason = "partial", f"deadline {deadline:%H:%M} UTC reached"
                break
            if STOP_REQUESTED:
                status, stop_reason = "partial", f"interrupted ({STOP_REQUESTED})"
                break
            if now - last_note >= args.progress_every:
                last_note = now
                rows = read_metrics(run_dir / "metrics.csv")
                if rows:
                    r = rows[-1]
                    print(
                        f"  ... {int(r['env_steps']):>8} env steps, return_mean {r['return_mean'] or 'n/a'}, "
                        f"sps {r['sps']}, {now - started:.0f} s",
                        flush=True,
                    )
            time.sleep(0.2)
        if procs["controller"].poll() is not None:  # let the others say goodbye by themselves
            end = time.monotonic() + 30
            while any(p.poll() is None for p in procs.values()) and time.monotonic() < end:
                time.sleep(0.1)
    finally:
        wall = time.monotonic() - started
        run.stop()
    codes = {label: p.returncode for label, p in procs.items()}
    rows = read_metrics(run_dir / "metrics.csv")
    reached = int(rows[-1]["env_steps"]) if rows else 0
    if status == "complete" and (codes.get("controller") != 0 or reached < args.steps):
        status = "failed"
        stop_reason = f"controller exit code {codes.get('controller')}, reached {reached} env steps"
        for label in procs:
            tail = run.log(label)[-800:]
            print(f"--- {label} (exit {codes[label]}) log tail:\n{tail}", flush=True)
    curve = [(int(r["env_steps"]), fnum(r["return_mean"]), fnum(r["sps"])) for r in rows]
    steps_per_iter = (curve[1][0] - curve[0][0]) if len(curve) > 1 else (curve[0][0] if curve else 0)
    train_s = sum(steps_per_iter / s for _, _, s in curve if s)
    final_return = next((ret for _, ret, _ in reversed(curve) if ret is not None), None)
    summary = {
        "env": env,
        "env_id": env_id,
        "seed": seed,
        "config": config,
        "mode": mode,
        "envrunners": envrunners,
        "num_envs": cfg.env.num_envs,
        "target_env_steps": args.steps,
        "env_steps": reached,
        "iterations": len(curve),
        "final_return_mean": final_return,
        "return_window": 20,
        "sps_mean": round(reached / train_s, 1) if train_s else None,
        "sps_median_iteration": round(sorted(s for _, _, s in curve if s)[len(curve) // 2], 1) if curve else None,
        "train_s": round(train_s, 1),
        "wall_s": round(wall, 1),
        "status": status,
        "stop_reason": stop_reason,
        "exit_codes": codes,
        "started_utc": started_utc.strftime("%Y-%m-%d %H:%M:%S"),
        "ended_utc": utc_now().strftime("%Y-%m-%d %H:%M:%S"),
        "load_before": load_before,
        "load_after": loadavg(),
        "run_dir": str(run_dir.relative_to(REPO)) if run_dir.is_relative_to(REPO) else str(run_dir),
        "command": "python " + shlex.join([os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]]),
    }
    if status == "complete":
        add_evaluations(summary, run_dir, args)
    csv_dir = Path(args.csv_dir[0])
    csv_dir.mkdir(parents=True, exist_ok=True)
    with open(csv_dir / f"{env}-seed{seed}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["env_steps", "return_mean", "sps"])
        for steps, ret, sps in curve:
            w.writerow([steps, "" if ret is None else f"{ret:.3f}", "" if sps is None else sps])
    (csv_dir / f"{env}-seed{seed}.json").write_text(json.dumps(summary, indent=2) + "\n")
    ret_txt = "n/a" if final_return is None else f"{final_return:.1f}"
    eval_txt = f", final policy (deterministic) {summary['eval']['mean']:.1f}" if "eval" in summary else ""
    print(
        f"[{utc_now():%H:%M:%S}] {env_id} seed {seed}: {status}{' (' + stop_reason + ')' if stop_reason else ''}; "
        f"{reached} env steps, return_mean(last 20 episodes) {ret_txt}{eval_txt}, SPS {summary['sps_mean']}, "
        f"wall {wall:.0f} s, load {summary['load_after']}",
        flush=True,
    )
    return summary


def add_evaluations(summary: dict, run_dir: Path, args: argparse.Namespace) -> None:
    """Add what the summary lacks and the run's checkpoints allow: the test curve (``tests``: every
    checkpoint, ``--test-episodes`` stochastic episodes, as ``dynamicrl evaluate --all --stochastic``)
    when the run kept more than its final one, and the final policy's deterministic evaluation (``eval``)."""
    from dynamicrl.clients.evaluate import evaluate, evaluate_run
    from dynamicrl.core import checkpoints

    kept = checkpoints.complete(run_dir / "checkpoints")
    if "tests" not in summary and args.test_episodes and len(kept) > 1:
        results = evaluate_run(run_dir, episodes=args.test_episodes, deterministic=False, seed=0)
        summary["tests"] = [[r.env_steps, round(r.mean, 3)] for r in results]
        summary["test_episodes"] = args.test_episodes
        print(
            f"  {summary['env']} seed {summary['seed']}: {len(results)} checkpoints tested, best "
            f"{max(m for _, m in summary['tests']):.1f}",
            flush=True,
        )
    if "eval" not in summary and args.eval_episodes and kept:
        result = evaluate(run_dir, episodes=args.eval_episodes, deterministic=True, seed=0)
        keys = ("iteration", "env_steps", "seed", "returns", "lengths", "mean", "std")
        summary["eval"] = {k: v for k, v in result.to_dict().items() if k in keys}
        print(
            f"  {summary['env']} seed {summary['seed']}: final policy (deterministic, {args.eval_episodes} "
            f"episodes) {summary['eval']['mean']:.1f}",
            flush=True,
        )


def evaluate_existing(args: argparse.Namespace, envs: list[str], seeds: list[int] | None) -> None:
    """``add_evaluations`` for the complete runs of the first ``--csv-dir`` (of ``envs`` and ``seeds``)."""
    for path in sorted(Path(args.csv_dir[0]).glob("*-seed*.json")):
        summary = json.loads(path.read_text())
        if summary["status"] != "complete" or summary["env"] not in envs or (seeds and summary["seed"] not in seeds):
            continue
        run_dir = Path(summary["run_dir"]) if Path(summary["run_dir"]).is_absolute() else REPO / summary["run_dir"]
        add_evaluations(summary, run_dir, args)
        path.write_text(json.dumps(summary, indent=2) + "\n")


# -- report ------------------------------------------------------------------------------------
def load_summaries(csv_dirs: list[Path]) -> list[dict]:
    """Every run summary in ``csv_dirs``, each with its learning curve (``curve``, read once here)."""
    out = []
    for csv_dir in csv_dirs:
        for path in sorted(csv_dir.glob("*-seed*.json")):
            try:
                summary = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            rows = read_metrics(path.with_suffix(".csv"))
            out.append({**summary, "curve": [(int(r["env_steps"]), fnum(r["return_mean"])) for r in rows]})
    order = list(ENVS)
    return sorted(out, key=lambda s: (order.index(s["env"]) if s["env"] in order else 99, s["seed"]))


def plot(env: str, summaries: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    env_id = ENVS[env][0]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for s in summaries:
        pts = [(x, y) for x, y in s["curve"] if y is not None]
        if pts:
            label = f"DynamicRL seed {s['seed']}, {run_layout(s)}"
            label += "" if s["status"] == "complete" else f" ({s['status']})"
            ax.plot([x for x, _ in pts], [y for _, y in pts], lw=1.4, label=label)
    tested = [s for s in summaries if s.get("tests")]
    if tested:
        pts = seed_mean([s["tests"] for s in tested])
        ax.plot(
            [x for x, _ in pts],
            [y for _, y in pts],
            "k.-",
            lw=1,
            ms=4,
            label=f"tests, mean of {len(tested)} seed(s) ({tested[0]['test_episodes']} stochastic episodes each)",
        )
    for ref, style in zip(references(), ["--", ":", "-.", "-"]):
        val, curve = ref["values"].get(env), ref.get("curves", {}).get(env)
        if curve is not None:  # a rerun: its mean test curve, beside ours
            ax.plot(
                [x for x, _ in curve],
                [y for _, y in curve],
                color="gray",
                ls=style,
                marker=".",
                lw=1,
                ms=4,
                label=f"{ref['name']} ({ref['envs']}): tests, mean of its seeds",
            )
        elif val is not None:
            ax.axhline(
                val[0],
                color="gray",
                ls=style,
                lw=1,
                label=f"{ref['name'].split(' `')[0]} ({ref['envs']}, 1M): {val[0]:.0f}",
            )
    xmax = max([1_000_000] + [s["env_steps"] for s in summaries])
    ax.set_xlim(0, xmax * 1.02)
    ax.set_xlabel("env steps")
    ax.set_ylabel(
        "return: last 20 training episodes; tests (dots)" if tested else "return_mean (last 20 training episodes)"
    )
    ax.set_title(f"{env_id}: PPO, configs/env/mujoco_{env}.yaml")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def layout(mode: str, envrunners: int | str, num_envs: int) -> str:
    return f"{mode}, {envrunners} x {num_envs}"


def run_layout(summary: dict) -> str:
    return layout(summary["mode"], summary["envrunners"], summary.get("num_envs", 8))


def by_layout(by_env: dict[str, list[dict]]) -> list[tuple[str, str, str, list[dict]]]:
    """(env, env id, layout label, runs) per env and layout: one row each in the comparison; the label
    is empty when an env was run in one layout only."""
    out = []
    for env, (env_id, _) in ENVS.items():
        runs = by_env.get(env, [])
        layouts = list(dict.fromkeys(run_layout(s) for s in runs)) or [""]
        for name in layouts:
            label = f" ({name})" if len(layouts) > 1 else ""
            out.append((env, env_id, label, [s for s in runs if run_layout(s) == name]))
    return out


def best_so_far(summary: dict) -> float | None:
    """The run's largest ``return_mean`` up to its last row: the best 20-episode window it reached."""
    returns = [y for _, y in summary["curve"] if y is not None]
    return max(returns) if returns else None


def best_test(summary: dict) -> float | None:
    return max(m for _, m in summary["tests"]) if summary.get("tests") else None


def seed_mean(curves: list[list]) -> list[tuple[int, float]]:
    """The seeds' mean curve, (env steps, mean) at the points every seed has."""
    points = [{int(x): y for x, y in curve if y is not None} for curve in curves]
    common = set.intersection(*(set(p) for p in points)) if points else set()
    out = []
    for x in sorted(common):
        ys = [p[x] for p in points]  # one per seed: never empty
        out.append((x, sum(ys) / len(ys)))
    return out


def best_of_seed_mean(curves: list[list]) -> tuple[float, int] | None:
    """(value, env steps) of the highest point of the seeds' mean curve: Tianshou's best-so-far, a max
    of the mean (the mean of each seed's max would be higher)."""
    best = max(seed_mean(curves), key=lambda point: point[1], default=None)  # the first, if tied
    return None if best is None else (best[1], best[0])


def settings_table() -> list[str]:
    """The configs' settings as markdown: a column per ``algo``/``env`` setting that differs between envs,
    then one line of the settings they share, so the table always says what the configs say."""
    from dynamicrl.core.settings import load_config

    per_env = {}
    for _env, (env_id, config) in ENVS.items():
        cfg = load_config(str(REPO / config), [])
        per_env[env_id] = {
            "layout": layout(cfg.run.mode, cfg.run.envrunners, cfg.env.num_envs),
            **{f"algo.{k}": v for k, v in cfg.algo.model_dump().items()},
            **{f"env.kwargs.{k}": v for k, v in cfg.env.kwargs.items()},
        }
    keys = list(dict.fromkeys(k for values in per_env.values() for k in values))
    varying = [k for k in keys if len({repr(v.get(k, "-")) for v in per_env.values()}) > 1]
    lines = ["| env | " + " | ".join(f"`{k}`" for k in varying) + " |", "|---|" + "---|" * len(varying)]
    lines += [
        f"| {env_id} | " + " | ".join(str(values.get(k, "-")) for k in varying) + " |"
        for env_id, values in per_env.items()
    ]
    shared = ", ".join(f"`{k}` {next(iter(per_env.values()))[k]}" for k in keys if k not in varying)
    return [*lines, "", f"Shared by all four: {shared}.\n"]


def fmt_ret(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f}"


def fmt_eval(summary: dict) -> str:
    ev = summary.get("eval")
    return "not evaluated" if ev is None else f"{ev['mean']:.1f} ± {ev['std']:.1f}"


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def report(args: argparse.Namespace) -> str:
    csv_dirs = [Path(d) for d in args.csv_dir]
    docs_dir = Path(args.docs_dir)
    summaries = load_summaries(csv_dirs)
    by_env: dict[str, list[dict]] = {}
    for s in summaries:
        by_env.setdefault(s["env"], []).append(s)
    for env, runs in by_env.items():
        plot(env, runs, docs_dir / "results" / f"{env}.png")

    L: list[str] = []
    L.append("# Learning results: PPO on MuJoCo at 1M env steps\n")
    where = " and ".join(f"`{os.path.relpath(d.resolve(), REPO)}/`" for d in csv_dirs)
    L.append(
        "Produced by `bench/learning_curves.py` (see its docstring); the raw per-run curves are in "
        f"{where} (`<env>-seed<k>.csv`) and the per-run summaries next to them (`.json`).\n"
    )
    L.append(
        "**Metric.** *Return at 1M* is `return_mean` of the last row of the run's `metrics.csv`: the mean "
        "undiscounted episodic return of the **last 20 finished training episodes** "
        "(`metrics.return_window`), collected with the stochastic policy, raw (unnormalised) rewards, "
        "at the end of training (the first iteration boundary at or past 1M env steps: 1,001,472 with one "
        "env-runner, 489 iterations of 2048 steps).\n"
    )
    episodes = "/".join(str(n) for n in sorted({len(s["eval"]["returns"]) for s in summaries if "eval" in s}))
    tested = [s for s in summaries if s.get("tests")]
    tests = "/".join(str(n) for n in sorted({s["test_episodes"] for s in tested}))
    test_every = "/".join(
        f"{n:,}" for n in sorted({s["tests"][1][0] - s["tests"][0][0] for s in tested if len(s["tests"]) > 1})
    )
    L.append(
        "**Final policy, deterministic** is a separate evaluation after training (`dynamicrl evaluate`): "
        "the final checkpoint's policy acting with its most likely action (the Gaussian's mean), "
        f"observations normalised with the learner's final statistics, frozen, {episodes or 'N'} episodes "
        "of the same env, episode i reset with seed i. Runs that predate it have none.\n"
    )
    L.append(
        "**Tests** follow Tianshou's protocol: the run checkpoints every `--test-every` iterations and keeps "
        "every checkpoint; after training, each checkpoint's policy plays "
        f"{tests or 'N'} episodes with sampled actions (`dynamicrl evaluate --all --stochastic`: that "
        "checkpoint's observation statistics, frozen; episode i reset with seed i). The test curve is the "
        "seeds' mean at each checkpoint and the **best test** its highest point. Runs that predate it have "
        "none.\n"
    )
    L.append(
        "**Setup.** `configs/env/mujoco_<env>.yaml` with the overrides of the commands below (`--set`, "
        "`--mode`, `--envrunners`): CleanRL-style continuous PPO (obs + reward normalisation owned by the "
        "learner, state-independent log-std, orthogonal init, separate actor and critic MLPs). A run's own "
        "settings are its config at the time plus its command's overrides; the configs now say:\n"
    )
    L.extend(settings_table())
    L.append(
        "Processes: controller, learner, env-runner(s), logger on 127.0.0.1, `run.mode` and the "
        "env-runners x envs as listed per run.\n"
    )
    if summaries:
        dates = sorted({s["started_utc"][:10] for s in summaries})
        L.append(
            f"- date: {', '.join(dates)} (UTC; runs from {min(s['started_utc'] for s in summaries)[11:16]} "
            f"to {max(s['ended_utc'] for s in summaries)[11:16]})"
        )
    L.append(f"- machine: {machine.describe()}")
    cmds = list(dict.fromkeys(s["command"] for s in sorted(summaries, key=lambda s: s["started_utc"])))
    for c in cmds:
        L.append(f"- command: `{c}`")
    L.append("")

    L.append("## Results\n")
    L.append(
        "| env | seed | mode, env-runners x envs | env steps reached | return at end (last 20 episodes) | "
        "mean of the last 10 iterations' return_mean | best return_mean during the run | best test | "
        "final policy, deterministic | SPS (mean) | "
        "training time | wall time | load avg before -> after | status |"
    )
    L.append("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
    for s in summaries:
        st = s["status"] + (f": {s['stop_reason']}" if s.get("stop_reason") else "")
        tail = [y for _, y in s["curve"][-10:] if y is not None]
        tail_txt = fmt_ret(sum(tail) / len(tail) if tail else None)
        L.append(
            f"| {s['env_id']} | {s['seed']} | {run_layout(s)} | {s['env_steps']:,} | "
            f"{fmt_ret(s['final_return_mean'])} | {tail_txt} | {fmt_ret(best_so_far(s))} | "
            f"{'not tested' if best_test(s) is None else fmt_ret(best_test(s))} | "
            f"{fmt_eval(s)} | {s['sps_mean'] or 'n/a'} | "
            f"{s['train_s'] / 60:.1f} min | "
            f"{s['wall_s'] / 60:.1f} min | {s['load_before']} -> {s['load_after']} | {st} |"
        )
    L.append("")
    L.append(
        "The last-10-iterations column (the final ~20k env steps) is given only to show how noisy a "
        "single 20-episode window is; the headline figure is the end-of-training window.\n"
    )
    L.append(
        "SPS (mean) = env steps reached / sum of the per-iteration durations on the learner's clock "
        "(collection + update, start-up excluded); wall time = from starting the processes to the "
        "controller's exit (includes imports, env start-up and shutdown).\n"
    )

    L.append("## Versus published 1M-step PPO figures\n")
    L.append(
        "Our figures per env, over our seeds that reached 1M steps: the **final window** (the mean of the "
        "seeds' return at 1M: CleanRL's kind of figure); the **best window** (the highest point of the "
        "seeds' mean `return_mean` curve); the **best test** (the highest point of the seeds' mean test "
        "curve, at the env steps given: Tianshou's kind, a best-so-far of a mean) and the **final policy, "
        "deterministic** (the mean of the seeds' evaluations: rl-zoo's kind). Each reference is compared "
        "with the figure of its own kind.\n"
    )
    refs = references()
    head = "| env | final window [seeds] | best window | best test | final policy, deterministic [seeds] |"
    sep = "|---|---|---:|---:|---|"
    for ref in refs:
        head += f" {ref['name']} ({ref['envs']}) |"
        sep += "---|"
    L.append(head)
    L.append(sep)
    for env, env_id, label, runs in by_layout(by_env):
        runs = [s for s in runs if s["final_return_mean"] is not None]
        full = [s for s in runs if s["env_steps"] >= 1_000_000]
        evaluated = [s for s in full if "eval" in s]
        tested = [s for s in full if s.get("tests")]
        window = best_of_seed_mean([s["curve"] for s in full])
        test = best_of_seed_mean([s["tests"] for s in tested]) if full and len(tested) == len(full) else None
        ours = {
            "final": mean([s["final_return_mean"] for s in full]),
            "best": window and window[0],
            "best_test": test and test[0],
            "eval": mean([s["eval"]["mean"] for s in evaluated]) if len(evaluated) == len(full) else None,
        }
        if full:
            if window is None:  # the seeds' curves share no env-steps point
                raise TypeError(f"{env_id}{label}: no point common to every seed's curve")
            final_txt = f"{ours['final']:.1f} [" + ", ".join(f"{s['final_return_mean']:.0f}" for s in full) + "]"
            test_txt = "not tested" if test is None else f"{test[0]:.1f} at {test[1]:,}"
            eval_txt = (
                "not evaluated"
                if ours["eval"] is None
                else f"{ours['eval']:.1f} [" + ", ".join(f"{s['eval']['mean']:.0f}" for s in full) + "]"
            )
            row = f"| {env_id}{label} | {final_txt} | {window[0]:.1f} at {window[1]:,} | {test_txt} | {eval_txt} |"
        elif runs:
            row = (
                f"| {env_id}{label} | below 1M only: "
                + ", ".join(f"seed {s['seed']}: {s['final_return_mean']:.1f} at {s['env_steps']:,} steps" for s in runs)
                + " | | | |"
            )
        else:
            row = f"| {env_id}{label} | not run | | | |"
        for ref in refs:
            val = ref["values"].get(env)
            if val is None:
                row += " not rerun |" if "curves" in ref else " not found |"
            else:
                mine = ours[ref["metric"]] if full else None
                rel = "" if mine is None else f" (ours {100 * (mine - val[0]) / val[0]:+.0f}%)"
                row += f" {val[0]:.1f} ± {val[1]:.1f}{rel} |"
        L.append(row)
    L.append("")
    counts = sorted({len(runs) for _, _, _, runs in by_layout(by_env) if runs})
    seeds_here = f"{counts[0]}-{counts[-1]}" if counts and counts[0] != counts[-1] else str(counts[0] if counts else 0)
    L.append("References (the published number, its env version, and what it measures):\n")
    for ref in refs:
        url = ref["url"]
        # a file of the repository is named, not linked: the docs site holds docs/ only (mkdocs --strict)
        where = f"<{url}>" if url.startswith("http") else f"`{url.removeprefix('../')}`"
        L.append(f"- **{ref['name']}** ({ref['envs']} envs), {where}: {ref['what']}.")
    L.append("")
    L.append(
        "The published figures are not like-for-like: different env versions (v5 here, v4 or v3 there: "
        "the same tasks, but v5 changes some observations, defaults and bugs, and v3 ran on MuJoCo 2.0), "
        "different metrics (the final window of training episodes here and in CleanRL; "
        "the best point of a mean test curve here and in Tianshou, which is an upper envelope; "
        "a deterministic-policy evaluation in SB3 rl-zoo) "
        f"and different numbers of seeds ({seeds_here} here, 3 in CleanRL, 10 in Tianshou, 1 in rl-zoo). "
        "Of those, CleanRL is "
        "the closest. Percentages are (ours - reference) / reference: our final window against "
        "CleanRL, our best test against Tianshou's best-so-far (no percentage where the runs were not "
        "tested), our final policy's deterministic evaluation against rl-zoo's. Our tests are "
        f"{tests or 'N'} stochastic episodes of each kept checkpoint (`dynamicrl evaluate --all "
        f"--stochastic`), every {test_every or 'N'} env steps; Tianshou's are 10 episodes every 30,720 steps. Our "
        f"deterministic evaluation is {episodes or 'N'} episodes per seed; rl-zoo's ~150 episodes of one "
        "run.\n"
    )

    L.append("## Learning curves\n")
    for env, (env_id, _) in ENVS.items():
        if env in by_env:
            L.append(f"![{env_id}](results/{env}.png)\n")

    old = (docs_dir / "results.md").read_text() if (docs_dir / "results.md").exists() else ""
    if DISCUSSION_BEGIN in old and DISCUSSION_END in old:
        discussion = old[old.index(DISCUSSION_BEGIN) : old.index(DISCUSSION_END) + len(DISCUSSION_END)]
    else:
        discussion = (
            f"{DISCUSSION_BEGIN}\n## Discussion\n\n(to be written after looking at the results)\n{DISCUSSION_END}"
        )
    L.append(discussion)
    text = "\n".join(L) + "\n"
    docs_dir.mkdir(parents=True, exist_ok=True)
    (docs_dir / "results.md").write_text(text)
    return text


# -- main --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--envs", default=",".join(ENVS), help=f"comma-separated, from {', '.join(ENVS)}")
    p.add_argument(
        "--seeds", default=None, help="comma-separated run.seed values (default: 1; with --evaluate-only, every seed)"
    )
    p.add_argument("--steps", type=int, default=1_000_000, help="run.total_env_steps")
    p.add_argument("--mode", choices=["sync", "overlap"], default=None, help="run.mode (default: the config's)")
    p.add_argument(
        "--envrunners",
        type=int,
        default=None,
        help="env-runner processes, each with env.num_envs envs (default: the config's run.envrunners)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra config override for every run (repeatable), e.g. algo.target_kl=0.02",
    )
    p.add_argument("--timeout", type=float, default=3600, help="per-run bound (s); then the run is stopped, partial")
    p.add_argument("--deadline", default=None, help="HH:MM UTC: stop the run in progress then, start no other")
    p.add_argument("--progress-every", type=float, default=60, help="print progress every N s")
    p.add_argument("--runs-root", default=str(HERE / "runs"), help="run.root (run directories and service logs)")
    p.add_argument(
        "--csv-dir",
        action="append",
        default=None,
        help="where runs write their curve and summary (default bench/results/learning/); repeat it "
        "to report on the runs of several directories (runs write to the first)",
    )
    p.add_argument("--docs-dir", default=str(REPO / "docs"), help="results.md and results/<env>.png go here")
    p.add_argument(
        "--test-every",
        type=int,
        default=15,
        help="checkpoint every N iterations and test each after the run (15 x 2048 = 30,720 env steps, "
        "Tianshou's test interval; 0: no tests)",
    )
    p.add_argument(
        "--test-episodes", type=int, default=10, help="stochastic episodes per test (Tianshou's test_num: 10)"
    )
    p.add_argument(
        "--eval-episodes",
        type=int,
        default=10,
        help="episodes of the final policy's deterministic evaluation after each run (0: none)",
    )
    p.add_argument(
        "--evaluate-only",
        action="store_true",
        help="no runs: add the tests and the final evaluation that the first --csv-dir's runs "
        "lack and their checkpoints allow (of --envs and --seeds), then report",
    )
    p.add_argument("--report-only", action="store_true", help="no runs: rebuild PNGs and results.md")
    args = p.parse_args(argv)
    args.csv_dir = args.csv_dir or [str(HERE / "results" / "learning")]

    envs = [e.strip() for e in args.envs.split(",") if e.strip()]
    unknown = [e for e in envs if e not in ENVS]
    if unknown:
        p.error(f"unknown env(s) {unknown}; choose from {list(ENVS)}")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()] if args.seeds else None
    deadline = None
    if args.deadline:
        hh, mm = (int(x) for x in args.deadline.split(":"))
        deadline = utc_now().replace(hour=hh, minute=mm, second=0, microsecond=0)
        if deadline <= utc_now():
            deadline += dt.timedelta(days=1)

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    if args.evaluate_only:
        evaluate_existing(args, envs, seeds)
    elif not args.report_only:
        for env in envs:
            for seed in seeds or [1]:
                if STOP_REQUESTED:
                    print(f"interrupted ({STOP_REQUESTED}): {env} seed {seed} not started", flush=True)
                elif deadline is not None and utc_now() >= deadline:
                    print(f"deadline {args.deadline} UTC passed: {env} seed {seed} not started", flush=True)
                else:
                    run_one(env, seed, args, deadline)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    text = report(args)
    print()
    print(text)
    return 130 if STOP_REQUESTED else 0


if __name__ == "__main__":
    sys.exit(main())
