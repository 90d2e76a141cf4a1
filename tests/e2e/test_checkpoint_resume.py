"""Checkpoints and resume, end to end: bitwise continuation, crashes while saving, bad input.

1. The determinism contract, for CartPole-v1 in sync mode and Hopper-v5 in overlap mode (observation
   and reward normalisation on; the mode whose checkpoint also saves the unanswered rollouts and
   their statistics), each with two env-runners under `honcho start` as a user runs it:
   the final checkpoint's ``policy_sha256`` after N iterations is the same for
   (a) an uninterrupted run, (b) a run paused and resumed at seeded random moments with a
   checkpoint request in the middle, and (c) a run whose every process (honcho
   included) is SIGKILLed once a checkpoint exists and that `dynamicrl resume-run RUN_DIR`
   then continues. Every run replays the same small journal (patches before the kill's
   checkpoint, between it and the kill, and after the kill) and gets one live
   `--at-iteration` patch early on that is due only after that checkpoint, so patches.jsonl
   must continue exactly too; metrics.csv must hold iterations 1..N once, equal to the
   uninterrupted run's but for the wall-clock columns.
2. Crashes while saving: a writer process (checkpoint_writer.py) SIGKILLed at seeded random
   moments, over and over; after every kill the newest good checkpoint verifies and reads,
   no temp directory is ever taken for one, and at most keep+1 complete ones exist. Then
   the controller itself is kill -9'd during `dynamicrl checkpoint` requests, and the run is
   resumed from what it left each time.
3. Bad input: truncated, tampered, future-format, part-missing and manifest-less checkpoints
   are refused by `dynamicrl inspect` with one message naming the file and the problem,
   skipped (with a report) by ``latest_good``, and a `resume-run` of a run with only a bad
   checkpoint fails clearly and leaves metrics.csv and patches.jsonl byte for byte alone.

Every process is started on free ports in its own session and stopped by pid in a
finalizer; every wait is bounded.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import select
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    CLI,
    REPO,
    Run,
    Supervised,
    alive,
    base_overrides,
    free_ports,
    kill,
    read_metrics,
    user_env,
    wait_until,
)
from helpers import run_cli as cli

from dynamicrl.core import checkpoints
from dynamicrl.core.settings import load_config
from dynamicrl.protocol.messages import (
    CheckpointReply,
    CheckpointRequest,
    JournalEntry,
    LogicalTime,
    PatchRequest,
    PatchStatus,
    PauseRequest,
    ResumeRequest,
    RunState,
    ValueChange,
)

pytestmark = pytest.mark.e2e

WRITER = Path(__file__).with_name("checkpoint_writer.py")
#: metrics.csv columns that depend on the wall clock, not on the training
WALL_CLOCK_COLUMNS = {"time", "sps"}
HASH = re.compile(r"^policy_sha256: ([0-9a-f]{64})$", re.M)


# -- run directory contents ----------------------------------------------------------------------
def last_iteration(run_dir: Path) -> int:
    """The last complete row of metrics.csv (0 if none)."""
    path = run_dir / "metrics.csv"
    if not path.exists():
        return 0
    lines = path.read_text().splitlines()
    return int(lines[-1].split(",", 1)[0]) if len(lines) > 1 else 0


def training_columns(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k not in WALL_CLOCK_COLUMNS} for row in rows]


def journal(run_dir: Path) -> list[tuple]:
    """patches.jsonl as comparable entries (the wall-clock time and the live patch's random id left out),
    in file order."""
    path = run_dir / "patches.jsonl"
    if not path.exists():
        return []
    entries = [JournalEntry.model_validate_json(line) for line in path.read_text().splitlines() if line.strip()]
    return [
        (
            e.author,
            e.service,
            e.ltime.iteration,
            e.ltime.env_step,
            e.minibatch,
            json.dumps({k: [c.old, c.new] for k, c in sorted(e.changes.items())}),
        )
        for e in entries
    ]


def inspect_hash(run: Run, path: Path) -> str:
    """`dynamicrl inspect PATH`: verified, and its policy_sha256."""
    out = run.cli("inspect", str(path))
    assert out.returncode == 0, f"inspect {path} failed:\n{out.stdout}\n{out.stderr}"
    (found,) = HASH.findall(out.stdout)
    return found


def replay_journal(path: Path, per_rollout: int, num_envs: int, checkpointed: int, iterations: int) -> Path:
    """A journal every run of a case replays: patches before the checkpoint the kill resumes from,
    between it and the kill, and after the kill, for the learner (mid-update) and both env-runners
    (mid-rollout, at different env steps)."""

    def entry(patch_id, service, name, old, new, iteration, env_step, minibatch=None):
        return JournalEntry(
            patch_id=patch_id,
            author="test",
            service=service,
            changes={name: ValueChange(old=old, new=new)},
            ltime=LogicalTime(iteration=iteration, env_step=env_step),
            minibatch=minibatch,
            time=0.0,
        )

    per_iteration = 2 * per_rollout
    early, late = checkpointed + 1, iterations - 3
    entries = [
        entry("aaaaaaaaaaaa", "learner.1", "ppo.ent_coef", 0.0, 0.01, 2, 2 * per_iteration, minibatch=3),
        entry(
            "bbbbbbbbbbbb", "envrunner.1", "envrunner.reward_scale", 1.0, 0.5, early, early * per_rollout + 2 * num_envs
        ),
        entry(
            "bbbbbbbbbbbb", "envrunner.2", "envrunner.reward_scale", 1.0, 0.5, early, early * per_rollout + 5 * num_envs
        ),
        entry("cccccccccccc", "learner.1", "ppo.clip_coef", 0.2, 0.1, late, late * per_iteration, minibatch=1),
    ]
    path.write_text("".join(e.model_dump_json() + "\n" for e in entries))
    return path


# -- 1. the determinism contract -----------------------------------------------------------------
HOPPER = [
    "env.num_envs=2",
    "algo.num_steps=64",
    "algo.num_minibatches=4",
    "algo.update_epochs=2",
    "normalize.obs=true",
    "normalize.reward=true",
    "run.total_env_steps=5632",
]
CASES = {
    # N = 22 iterations of 2 x 8 envs x 32 steps; checkpoints every 8; kill once metrics.csv is 3 past one
    # (and before the next checkpoint, at 16: the kill must roll a journal entry back)
    "cartpole": dict(
        config=str(REPO / "configs/defaults.yaml"), iterations=22, every=8, overrides=["run.total_env_steps=11264"]
    ),
    # N = 22 iterations of 2 x 2 envs x 64 steps, normalised observations and rewards, in overlap mode
    # (the MuJoCo configs' default): a due checkpoint waits for the next boundary and saves the
    # unanswered rollouts, whose statistics the restored run serves again, merged alike. The two other
    # pairings (CartPole overlapped, Hopper in sync) run the same code paths and were dropped to keep
    # the suite's time; the sync/overlap larger-budget tests below still resume CartPole in both modes.
    "hopper-overlap": dict(
        config=str(REPO / "configs/env/mujoco_hopper.yaml"),
        iterations=22,
        every=8,
        overrides=[*HOPPER, "run.mode=overlap"],
    ),
}


def schedule_live_patch(run: Run, at_iteration: int) -> None:
    """`dynamicrl patch ppo.vf_coef=0.4 --at-iteration N` early in the run: accepted now (the controller's
    config takes the value at once), applied by the learner only once N iterations are done."""
    with run.client() as client:
        status = client.status()
        reply = client.call(PatchRequest(changes={"ppo.vf_coef": 0.4}, at_iteration=at_iteration, author="live"))
    assert reply.status is PatchStatus.SCHEDULED
    assert status.ltime is None or status.ltime.iteration < at_iteration - 2, "sent too late to be due later"


def finish(run: Run, supervised: Supervised, timeout: float = 150) -> Path:
    code = supervised.wait(timeout)
    assert code == 0, f"{run.tmp.name}: honcho exited {code}:\n{run.logs()}"
    assert not any(alive(p) for p in supervised.seen), f"{run.tmp.name}: a service outlived honcho"
    return run.run_dir


def inspect_hashes(run: Run, *paths: Path) -> list[str]:
    """``inspect_hash`` of each path, the `dynamicrl inspect` commands run side by side (each starts
    an interpreter)."""
    with ThreadPoolExecutor(len(paths)) as pool:
        return list(pool.map(lambda path: inspect_hash(run, path), paths))


def final_hash(run: Run, run_dir: Path, iterations: int) -> str:
    latest = checkpoints.latest_good(run_dir / "checkpoints")
    assert latest.name == f"iter-{iterations:08d}", f"{run.tmp.name}: the latest checkpoint is {latest.name}"
    found, of_run_dir = inspect_hashes(run, latest, run_dir)
    assert of_run_dir == found  # inspect RUN_DIR takes the latest good one
    return found


@pytest.mark.parametrize("case", sorted(CASES))
def test_final_policy_is_bitwise_the_same_uninterrupted_paused_and_killed(runs, tmp_path, case):
    spec = CASES[case]
    n, every = spec["iterations"], spec["every"]
    probe = load_config(spec["config"], spec["overrides"])
    per_rollout = probe.algo.num_steps * probe.env.num_envs
    assert n == probe.run.total_env_steps // (2 * per_rollout)
    patches = replay_journal(tmp_path / "replay.jsonl", per_rollout, probe.env.num_envs, every, n)
    common = [*spec["overrides"], f"patches={patches}"]
    scheduled = 2 * every + 2  # after the checkpoint (c) resumes from: the learner holds it as still due
    hashes: dict[str, str] = {}

    # Two runs at a time (one leaves the two cores partly idle): (a) beside (c) until (c) is killed, then
    # (b) beside (c)'s resume-run. Each is its own `honcho start` on its own free ports.
    # (a) uninterrupted; (c) every process SIGKILLed once a checkpoint exists, then `dynamicrl resume-run RUN_DIR`
    a = runs(f"{case}-a", common, envrunners=2, config=spec["config"])
    c = runs(f"{case}-c", [*common, f"checkpoint.every_iterations={every}"], envrunners=2, config=spec["config"])
    honcho_a, honcho_c = a.honcho(), c.honcho()
    for run in (a, c):
        run.wait_state(RunState.RUNNING, timeout=120)
        schedule_live_patch(run, scheduled)
    dir_c = c.run_dir

    def past_a_checkpoint() -> bool:
        honcho_c.watch()
        done = last_iteration(dir_c)
        return done >= every + 3 and bool(checkpoints.complete(dir_c / "checkpoints"))

    wait_until(past_a_checkpoint, timeout=150, interval=0.01, message=f"no checkpoint and progress:\n{c.logs()}")
    killed = honcho_c.kill9()
    at_kill = last_iteration(dir_c)
    resume_from = checkpoints.latest_good(dir_c / "checkpoints")
    from_iteration = int(resume_from.name.removeprefix(checkpoints.PREFIX))
    journal_at_kill = journal(dir_c)
    print(
        f"\n[{case}] (c) killed {len(killed)} processes with metrics.csv at iteration {at_kill}; "
        f"resuming from {resume_from.name}; {len(journal_at_kill)} journal entries at the kill"
    )
    assert at_kill < n and from_iteration < n, "the run finished before it was killed: nothing to resume"
    assert from_iteration % every == 0 and from_iteration < scheduled
    csv_before = read_metrics(dir_c)
    assert [int(r["iteration"]) for r in csv_before] == list(range(1, at_kill + 1))
    honcho_r = c.resume_run(dir_c)

    # (b) paused and resumed at seeded random moments, and a checkpoint request in between; the
    # moments are paced by progress (a seeded iteration, then a random delay), so that every pause
    # lands before the run ends however fast the machine is
    b = runs(f"{case}-b", common, envrunners=2, config=spec["config"])
    honcho_b = b.honcho()
    b.wait_state(RunState.RUNNING, timeout=120)
    schedule_live_patch(b, scheduled)
    rng = random.Random(f"{case}-pauses")
    landed = []
    with b.client() as client:

        def reached(iteration: int) -> bool:
            ltime = client.status().ltime
            return ltime is not None and ltime.iteration >= iteration

        for k, target in enumerate(sorted(rng.sample(range(1, n - 6), 6))):
            wait_until(lambda target=target: reached(target), timeout=120, interval=0.02, message=f"iteration {target}")
            time.sleep(rng.uniform(0.0, 0.03))
            reply = client.call(PauseRequest())
            landed.append({p.service: (p.ltime.iteration, p.ltime.env_step, p.minibatch) for p in reply.positions})
            time.sleep(rng.uniform(0.0, 0.1))
            client.call(ResumeRequest())
            if k == 1:
                requested = client.call(CheckpointRequest())
    print(f"[{case}] (b) paused at: " + "; ".join(str(p) for p in landed))
    assert isinstance(requested, CheckpointReply) and 0 < requested.ltime.iteration < n

    dir_a = finish(a, honcho_a)
    hashes["a"] = final_hash(a, dir_a, n)
    rows_a, journal_a = training_columns(read_metrics(dir_a)), journal(dir_a)
    assert [int(r["iteration"]) for r in rows_a] == list(range(1, n + 1))
    assert len(journal_a) == 5 and len(set(journal_a)) == 5, journal_a
    vf_coef = [float(r["ppo.vf_coef"]) for r in rows_a]
    assert vf_coef == [0.5] * scheduled + [0.4] * (n - scheduled), vf_coef

    dir_b = finish(b, honcho_b)
    hashes["b"] = final_hash(b, dir_b, n)
    assert inspect_hash(b, Path(requested.path)) == requested.policy_sha256
    print(
        f"[{case}] (b) checkpoint request at iteration {requested.ltime.iteration}: "
        f"{requested.bytes} bytes, {requested.seconds} s"
    )

    finish(c, honcho_r)
    log = honcho_r.log()
    assert f"from {resume_from.name}" in log and f"resumed at iteration {from_iteration}" in log, log[-3000:]
    assert c.run_dir == dir_c  # the same directory continues
    hashes["c"] = final_hash(c, dir_c, n)

    rows_c = read_metrics(dir_c)
    assert [int(r["iteration"]) for r in rows_c] == list(range(1, n + 1)), "metrics.csv after resume"
    assert training_columns(rows_c) == rows_a
    assert [r["time"] for r in rows_c[:from_iteration]] == [r["time"] for r in csv_before[:from_iteration]], (
        "rows up to the checkpoint must be the killed run's own"
    )
    journal_c = journal(dir_c)
    assert sorted(journal_c) == sorted(journal_a) and len(set(journal_c)) == len(journal_c), journal_c
    # the journal continues: what the checkpoint had seen stays first, as it was
    kept = journal_at_kill[: json.loads((resume_from / "controller.json").read_text())["journal_entries"]]
    assert len(kept) < len(journal_at_kill), "no journal entry after the checkpoint: nothing was rolled back"
    assert journal_c[: len(kept)] == kept

    for label, found in hashes.items():
        print(f"[{case}] ({label}) final policy_sha256 {found}")
    assert hashes["b"] == hashes["a"], "pauses and a checkpoint changed the run"
    assert hashes["c"] == hashes["a"], "a kill and resume-run changed the run"
    assert training_columns(read_metrics(dir_b)) == rows_a and sorted(journal(dir_b)) == sorted(journal_a)


# -- 2. crashes while saving -----------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["sync", "overlap"])
def test_a_finished_run_trains_on_to_a_larger_budget(runs, mode):
    """`resume-run --total-env-steps` continues a finished run to the new budget, its learning rate
    annealed to 0 at the new end; a budget not past the checkpoint is one error line, and starts nothing."""
    run = runs(
        f"extend-{mode}",
        ["run.total_env_steps=5120", f"run.mode={mode}"],  # 10 iterations of 2 x 8 envs x 32 steps
        envrunners=2,
        config=str(REPO / "configs/defaults.yaml"),
    )
    run_dir = finish(run, run.honcho())
    assert last_iteration(run_dir) == 10

    refused = run.cli("resume-run", str(run_dir), "--total-env-steps", "5120")
    assert refused.returncode == 1 and "must be more" in refused.stderr and "5120 env steps" in refused.stderr, (
        refused.stderr
    )
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert last_iteration(run_dir) == 10

    resumed = run.resume_run(run_dir, "--total-env-steps", "10240")
    finish(run, resumed)
    assert "on to 10240 env steps" in resumed.log() and "resumed at iteration 10" in resumed.log(), resumed.log()
    rows = read_metrics(run_dir)
    assert [int(r["iteration"]) for r in rows] == list(range(1, 21))
    assert int(rows[-1]["env_steps"]) == 10240
    base = run.config.algo.lr
    planned = [base * (1 - i / 10) for i in range(10)] + [base * (1 - i / 20) for i in range(10, 20)]
    assert [float(r["lr"]) for r in rows] == pytest.approx(planned, rel=1e-6)
    assert checkpoints.latest_good(run_dir / "checkpoints").name == f"{checkpoints.PREFIX}{20:08d}"


def good_checkpoints(root: Path) -> list[Path]:
    good = []
    for path in checkpoints.complete(root):
        try:
            checkpoints.verify(path)
            good.append(path)
        except checkpoints.CheckpointError:
            pass
    return good


def test_a_writer_killed_at_random_moments_never_leaves_a_bad_latest_checkpoint(tmp_path):
    root, keep, kills = tmp_path / "checkpoints", 2, 24
    rng = random.Random(20261125)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    seen_tmp, iteration, procs = 0, 1, []
    try:
        for k in range(kills):
            # continue after the newest good checkpoint, or (sometimes) rewrite it
            proc = subprocess.Popen(
                [sys.executable, str(WRITER), str(root), str(iteration), str(keep), str(k)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
            procs.append(proc)
            ready, _, _ = select.select([proc.stdout], [], [], 30)
            assert ready, "the writer wrote nothing in 30 s"
            first = proc.stdout.readline().decode()
            assert first.startswith("wrote "), first + proc.stderr.read().decode()
            time.sleep(rng.uniform(0.0, 0.3))
            proc.kill()
            proc.wait(timeout=10)
            assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
            proc.stdout.close()
            proc.stderr.close()

            seen_tmp += any(p.name.startswith(".tmp-") for p in root.iterdir())
            reports: list[str] = []
            latest = checkpoints.latest_good(root, report=reports.append)
            assert latest.name.startswith(checkpoints.PREFIX) and not latest.name.startswith(".tmp-")
            manifest, controller, parts = checkpoints.read(latest)
            assert sorted(parts) == ["envrunner.1", "envrunner.2", "learner.1"]
            assert checkpoints.policy_sha256(parts["learner.1"].arrays) == manifest["policy_sha256"]
            assert (
                controller["iteration"] == manifest["iteration"] == int(latest.name.removeprefix("iter-").split(".")[0])
            )
            assert len(good_checkpoints(root)) <= keep + 1, sorted(p.name for p in root.iterdir())
            iteration = manifest["iteration"] + (0 if rng.random() < 0.3 else 1)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    print(
        f"\n{kills} kills; {seen_tmp} left a .tmp-* directory behind (never taken for a checkpoint); "
        f"newest good checkpoint {latest.name}"
    )


def test_controller_killed_during_checkpoint_requests_leaves_a_good_one_to_resume_from(runs):
    """kill -9 of the controller during `dynamicrl checkpoint`, twice: once at a random moment after
    the request, once at a random moment while it writes (its .tmp-* directory exists; the writer
    test above kills at many more moments of a write).
    Each time the newest good checkpoint verifies and `resume-run` continues from it."""
    rng = random.Random(7)
    run = runs(
        "controller-kill",
        [
            "run.total_env_steps=100000000",
            "algo.hidden_sizes=[512,512]",
            "algo.update_epochs=2",
            "checkpoint.keep=2",
            "timing.dead_after_s=60",
            # honcho SIGTERMs the others once the controller is gone; they wait this long for a stop from
            # it, then stop by themselves (by default 10 s, and honcho SIGKILLs them 5 s on)
            "timing.signal_grace_s=1",
        ],
        envrunners=2,
        config=str(REPO / "configs/defaults.yaml"),
    )
    supervised = run.honcho()
    run.wait_state(RunState.RUNNING, timeout=120)
    with run.client(timeout_s=30) as client:  # one good checkpoint to start from
        first = client.call(CheckpointRequest())
    run_dir, root = run.run_dir, run.run_dir / "checkpoints"
    print(f"\nfirst checkpoint {Path(first.path).name}: {first.bytes} bytes in {first.seconds} s")
    for k in range(2):
        controller = supervised.services()["controller"]
        before = {p.name for p in root.iterdir()}  # a killed write's .tmp-* stays until the next write prunes it
        request = subprocess.Popen(
            [*CLI, "checkpoint", "--json"],
            cwd=run.tmp,
            env=run.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            if k == 0:
                time.sleep(rng.uniform(0.5, 1.5))  # the CLI starts, asks; the boundary may or may not be reached
            else:
                wait_until(
                    lambda before=before: any(
                        p.name.startswith(".tmp-") and p.name not in before for p in root.iterdir()
                    ),
                    timeout=60,
                    interval=0.001,
                    message=f"no checkpoint started writing:\n{run.logs()}",
                )
                time.sleep(rng.uniform(0.0, 0.02))
            kill(controller)
        finally:
            request.kill()
            request.wait(timeout=10)
        code = supervised.wait(30)  # honcho stops the others once the controller is gone
        assert code != 0
        left = sorted(p.name for p in root.iterdir())
        latest = checkpoints.latest_good(root)
        print(f"kill {k + 1}: checkpoints/ holds {left}; resuming from {latest.name}")
        inspect_hash(run, latest)
        assert len(good_checkpoints(root)) <= 3
        supervised = run.resume_run(run_dir)
        run.wait_state(RunState.RUNNING, timeout=120)
        wait_until(
            lambda latest=latest: last_iteration(run_dir) > int(latest.name.removeprefix("iter-")),
            timeout=60,
            message=f"the resumed run made no progress:\n{run.logs()}",
        )
        assert f"from {latest.name}" in supervised.log()


# -- 3. bad input -------------------------------------------------------------------------------------
def synthetic_run(run_dir: Path, iterations: list[int]) -> list[Path]:
    """A run directory with real-looking metrics.csv and patches.jsonl and one checkpoint per iteration."""
    rng = np.random.default_rng(0)
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.csv").write_text("iteration,env_steps\n" + "".join(f"{i},{i * 512}\n" for i in range(1, 9)))
    (run_dir / "patches.jsonl").write_text(
        JournalEntry(
            patch_id="aaaaaaaaaaaa",
            author="test",
            service="learner.1",
            changes={"ppo.lr": ValueChange(old=0.1, new=0.2)},
            ltime=LogicalTime(iteration=1, env_step=512),
            time=1.0,
        ).model_dump_json()
        + "\n"
    )
    made = []
    for iteration in iterations:
        learner = checkpoints.Part(
            "learner.1",
            {"policy.w": rng.standard_normal((64, 64)).astype(np.float32), "optim.0.exp_avg": rng.standard_normal(64)},
            {"iteration": iteration},
        )
        runner = checkpoints.Part("envrunner.1", {"obs": rng.standard_normal((8, 4))}, {"iteration": iteration})
        made.append(
            checkpoints.write(
                run_dir / "checkpoints",
                iteration,
                iteration * 512,
                [learner, runner],
                {"run_id": "synthetic", "learner": "learner.1", "config": {}, "journal_entries": 1},
                keep=10,
            )
        )
    return made


def truncate(path: Path) -> Path:
    file = path / "learner.1.npz"
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    return file


def tamper(path: Path) -> Path:
    file = path / "envrunner.1.npz"
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0x01
    file.write_bytes(bytes(data))
    return file


def future_format(path: Path) -> Path:
    file = path / "manifest.json"
    manifest = json.loads(file.read_text())
    manifest["format"] = 99
    file.write_text(json.dumps(manifest))
    return file


def drop_part(path: Path) -> Path:
    file = path / "envrunner.1.json"
    file.unlink()
    return file


def drop_manifest(path: Path) -> Path:
    file = path / "manifest.json"
    file.unlink()
    return file


def truncate_vouched(path: Path) -> Path:
    """A truncated npz whose checksum the manifest carries: it verifies, but does not load."""
    file = truncate(path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"][file.name] = hashlib.sha256(file.read_bytes()).hexdigest()
    (path / "manifest.json").write_text(json.dumps(manifest))
    return file


BREAKAGES = {  # how -> what the one error line must say
    "truncated npz": (truncate, "does not match the manifest"),
    "tampered byte": (tamper, "does not match the manifest"),
    "format 99": (future_format, "format 99 is not 1"),
    "missing part": (drop_part, "missing"),
    "missing manifest": (drop_manifest, "missing (the checkpoint was not completed)"),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_a_bad_checkpoint_is_refused_by_inspect_and_skipped_by_latest_good(tmp_path, breakage):
    how, problem = BREAKAGES[breakage]
    run_dir = tmp_path / "run"
    older, newest = synthetic_run(run_dir, [4, 8])
    good_hash = checkpoints.verify(older)["policy_sha256"]
    file = how(newest)

    out = cli("inspect", str(newest), cwd=tmp_path)
    assert out.returncode != 0 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), out.stderr
    assert str(file) in lines[0] and problem in lines[0], lines[0]
    print(f"\n[{breakage}] {lines[0]}")

    reports: list[str] = []
    assert checkpoints.latest_good(run_dir / "checkpoints", report=reports.append) == older
    assert len(reports) == 1 and str(file) in reports[0] and problem in reports[0], reports
    out = cli("inspect", str(run_dir), cwd=tmp_path)  # a run directory: its latest good checkpoint
    assert out.returncode == 0, out.stderr
    assert f"policy_sha256: {good_hash}" in out.stdout and str(file) in out.stderr


def test_a_checkpoint_that_verifies_but_does_not_load_is_refused_by_inspect(tmp_path):
    """A corrupt npz the manifest vouches for (no crash makes one, a bug could): refused, named."""
    (path,) = synthetic_run(tmp_path / "run", [4])
    truncate_vouched(path)
    with pytest.raises(checkpoints.CheckpointError):
        checkpoints.read(path)
    out = cli("inspect", str(path), cwd=tmp_path)
    lines = out.stderr.strip().splitlines()
    assert out.returncode != 0 and len(lines) == 1, out.stderr
    assert "learner.1" in lines[0] and "cannot load" in lines[0], lines[0]


@pytest.mark.parametrize("breakage", ["tampered byte", "missing manifest", "verifies but does not load"])
def test_resume_run_of_a_run_with_only_a_bad_checkpoint_fails_and_touches_nothing(tmp_path, breakage):
    run_dir = tmp_path / "run"
    (path,) = synthetic_run(run_dir, [8])
    file = (truncate_vouched if breakage == "verifies but does not load" else BREAKAGES[breakage][0])(path)
    before = {name: (run_dir / name).read_bytes() for name in ("metrics.csv", "patches.jsonl")}
    env = user_env(DYNAMICRL_OVERRIDES=" ".join(base_overrides(tmp_path, free_ports(4))))
    supervised = Supervised([*CLI, "resume-run", str(run_dir)], env, tmp_path / "resume.log")
    try:
        code = supervised.wait(60)
    finally:
        supervised.stop()
    text = supervised.log()
    assert code != 0, text
    if breakage == "verifies but does not load":  # found by the controller, which refuses to start
        assert "cannot load" in text and "learner.1" in text, text[-3000:]
    else:  # found before anything starts: one report naming the file, then why nothing can resume
        lines = text.strip().splitlines()
        assert len(lines) == 2, text
        assert str(file) in lines[0] and lines[1].startswith("Error: ") and "no complete checkpoint" in lines[1]
    assert {name: (run_dir / name).read_bytes() for name in before} == before
    said = next(line for line in text.splitlines() if "cannot load" in line or line.startswith("Error: "))
    print(f"\n[{breakage}] resume-run exited {code}: {said}")
