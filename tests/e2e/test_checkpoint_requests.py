"""Checkpoints a person asks for, end to end: while paused, and kept whatever the rotation says.

One CartPole run (a checkpoint every iteration, ``checkpoint.keep=1``) is paused early;
`dynamicrl checkpoint` then answers at once that the checkpoint is scheduled, and after
`dynamicrl resume` it is taken at the first iteration boundary after the pause. Many periodic
checkpoints later it is still there, `dynamicrl inspect` says why, and the rotation left one
periodic checkpoint. A copy of the run directory holding only that checkpoint is then resumed,
paused, asked for a checkpoint again and stopped (the stop takes the scheduled checkpoint), and
resumed once more to the end: its final policy and metrics.csv are bitwise the first run's.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import read_metrics
from test_checkpoint_resume import inspect_hash, training_columns

from dynamicrl.core import checkpoints
from dynamicrl.protocol.messages import PauseRequest

pytestmark = pytest.mark.e2e

# 24 iterations of 4 envs x 32 steps; a periodic checkpoint at every one, only the newest kept;
# a timeout far beyond the CLI's own bound: a scheduled checkpoint must not wait for it
COMMON = [
    "run.total_env_steps=3072",
    "env.num_envs=4",
    "checkpoint.every_iterations=1",
    "checkpoint.keep=1",
    "checkpoint.timeout_s=600",
]
ITERATIONS = 24


def kinds(run_dir: Path) -> dict[int, str]:
    return {
        checkpoints.verify(p)["iteration"]: checkpoints.verify(p)["kind"]
        for p in checkpoints.complete(run_dir / "checkpoints")
    }


def pause_and_schedule(run) -> int:
    """Pause, then `dynamicrl checkpoint`: scheduled, at once. Returns the learner's updates done at the pause."""
    with run.client() as client:
        reply = client.call(PauseRequest())
    (learner,) = [p for p in reply.positions if p.service.startswith("learner")]
    out = run.cli("checkpoint", timeout=30)  # bounded far below checkpoint.timeout_s
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (
        "checkpoint scheduled: the run is paused; it is taken at the first iteration boundary after resume"
    ), out.stdout
    again = run.cli("checkpoint", "--json", timeout=30)
    assert again.returncode == 0 and again.json["scheduled"] is True and again.json["path"] is None, again.stdout
    return learner.ltime.iteration


def test_a_checkpoint_asked_for_while_paused_is_taken_after_resume_kept_and_resumes_bitwise(runs):
    first = runs("first", COMMON).start()
    first.wait_iteration(2, timeout=120)
    paused_at = pause_and_schedule(first)
    assert paused_at < ITERATIONS - 10, "paused too late to see the rotation work"
    assert checkpoints.MANUAL not in kinds(first.run_dir).values(), "taken while paused"
    resumed = first.cli("resume")
    assert resumed.returncode == 0 and resumed.stdout.startswith("resumed after"), resumed.stdout + resumed.stderr
    first.finish()
    run_dir = first.run_dir
    # the first boundary after the pause: the end of the update it stood in (or was to start), or the
    # boundary itself when it paused there, holding for the periodic checkpoint (which the request joins)
    (manual,) = [iteration for iteration, kind in kinds(run_dir).items() if kind == checkpoints.MANUAL]
    assert manual in (paused_at, paused_at + 1), (manual, paused_at)
    assert kinds(run_dir) == {
        manual: checkpoints.MANUAL,
        ITERATIONS - 1: checkpoints.PERIODIC,
        ITERATIONS: checkpoints.END,
    }, sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    said = {
        iteration: first.cli("inspect", str(run_dir / "checkpoints" / f"{checkpoints.PREFIX}{iteration:08d}"))
        for iteration in (manual, ITERATIONS - 1, ITERATIONS)
    }
    assert "kind: manual; kept: asked for by hand" in said[manual].stdout, said[manual].stdout
    assert "kind: periodic; periodic: one of the last 1 kept" in said[ITERATIONS - 1].stdout
    assert "kind: end; kept: taken at the end of training" in said[ITERATIONS].stdout
    final = inspect_hash(first, run_dir)

    # a copy holding only the manual checkpoint: resumed, paused, asked again, stopped
    copy = first.tmp / "copy" / run_dir.name
    shutil.copytree(run_dir, copy)
    for path in checkpoints.complete(copy / "checkpoints"):
        if path.name != f"{checkpoints.PREFIX}{manual:08d}":
            shutil.rmtree(path)
    second = runs("second", [*COMMON, f"resume={copy}"]).start()
    second.wait_iteration(manual + 2, timeout=120)
    again_at = pause_and_schedule(second)
    out = second.cli("stop", "--json", timeout=60)
    assert out.returncode == 0, out.stderr
    stopped = Path(out.json["checkpoint"])
    second.finish()
    manifest = checkpoints.verify(stopped)
    assert manifest["kind"] == checkpoints.MANUAL and manifest["iteration"] in (again_at, again_at + 1), manifest

    # on to the end from the checkpoint the stop took: bitwise the first run
    third = runs("third", [*COMMON, f"resume={copy}"]).start()
    third.finish()
    assert checkpoints.latest_good(copy / "checkpoints").name == f"{checkpoints.PREFIX}{ITERATIONS:08d}"
    assert inspect_hash(third, copy) == final, "resuming from checkpoints asked for while paused changed the run"
    assert training_columns(read_metrics(copy)) == training_columns(first.metrics())
