"""A preview at every pause: the previewer draws each env-runner's sub-envs as they stand, from copies.

One CartPole pair, started together: without a previewer and never paused, and with a previewer
and three `dynamicrl pause --preview`. Their final policies are bitwise equal; each pause's PNGs
are where the command says, one per sub-env, decodable at the env's size; the `metrics.previews`
events, read by a plain msgpack subscriber, validate against the JSON Schema. Beside them, Hopper-v5
previews at 64x48 (MuJoCo offscreen), and an env that cannot render: `pause --preview` fails naming
it, the pause itself holds and the run trains on after the resume.
"""

from __future__ import annotations

import os
from pathlib import Path

import imageio.v2 as imageio
import pytest
from helpers import log_text, wait_until
from test_checkpoint_resume import final_hash
from test_evaluate_video import PLUGINS
from test_videos import FILMING, plain_subscriber, received

from dynamicrl.protocol.messages import ResumeRequest, Role

pytestmark = pytest.mark.e2e

SMALL = ["env.num_envs=2", "algo.num_steps=64", "run.total_env_steps=10240", "logger.console=false"]  # 80 its
ENDLESS = ["env.num_envs=2", "algo.num_steps=64", "run.total_env_steps=100000000", "logger.console=false"]


def training(run) -> None:
    """Past its first iteration: the learner is in its training loop, where a pause's barrier reaches it
    (just after the run goes running, a loaded machine may still hold it in its set-up for seconds)."""
    run.wait_iteration(1, timeout=120)


def trains_on(run, iterations: int) -> None:
    ltime = run.status().ltime
    run.wait_iteration((ltime.iteration if ltime else 0) + iterations, timeout=60)


def previewer_joined(run) -> None:
    wait_until(lambda: any(s.role is Role.PREVIEWER for s in run.status().services), timeout=120)


def pause_with_previews(run, pause: int, envs: int, shape: tuple[int, int, int]) -> list[str]:
    """`dynamicrl pause --preview --json` as pause number ``pause``: its PNGs, checked, then resumed."""
    done = run.cli("pause", "--preview", "--json", timeout=120)
    assert done.returncode == 0, done.stderr
    reply = done.json
    assert (reply["pause"], reply["previews"], reply["already"]) == (pause, envs, False), reply
    paths = reply["followed"]["paths"]
    assert [Path(p).name for p in paths] == [f"envrunner.1-{k}.png" for k in range(envs)]
    for path in paths:
        png = run.tmp / path  # relative to the run's directory of work, as run.root is
        assert png.parent.name == f"pause-{pause}" and png.parent.parent.name == "previews"
        assert imageio.imread(png).shape == shape
    again = run.cli("pause", "--preview", "--json")  # already paused: the same previews, read back
    assert again.returncode == 0 and again.json["already"], again.stderr
    assert again.json["followed"]["paths"] == sorted(paths)
    run.call(ResumeRequest())
    return paths


def test_pause_previews_change_no_bit_of_the_run(runs, monkeypatch):
    monkeypatch.syspath_prepend(PLUGINS)  # the blind run's config names a plugin env
    plain = runs("plain", SMALL)
    previewed = runs("previewed", [*SMALL, *FILMING, "video.pause_previews=true"])
    hopper = runs("hopper", ["env.id=Hopper-v5", *ENDLESS, *FILMING, "video.pause_previews=true", "video.size=64x48"])
    blind = runs(
        "blind",
        [*ENDLESS, *FILMING, "plugins=[no_render_env]", "env.id=NoRenderCartPole-v0", "video.pause_previews=true"],
        env={"PYTHONPATH": PLUGINS + os.pathsep + os.environ.get("PYTHONPATH", "")},
    )
    ctx, sub = plain_subscriber(previewed.bus_out, "metrics.previews")
    try:
        for run in (plain, previewed, hopper, blind):
            run.start()
        training(previewed)
        previewer_joined(previewed)
        drawn = []
        for pause in (1, 2, 3):
            drawn.append(pause_with_previews(previewed, pause, envs=2, shape=(400, 600, 3)))
            if pause < 3:
                trains_on(previewed, 3)

        # while the pair trains on: Hopper and the blind run, then stopped (their CPU back to the pair)
        training(hopper)
        previewer_joined(hopper)
        pause_with_previews(hopper, 1, envs=2, shape=(48, 64, 3))  # MuJoCo offscreen at the asked size
        hopper.close()

        training(blind)
        previewer_joined(blind)
        refused = blind.cli("pause", "--preview")
        reason = "env 'NoRenderCartPole-v0' cannot be recorded: it has no 'rgb_array' render mode (it has [])"
        assert refused.returncode == 1 and f"no previews of pause 1: {reason}" in refused.stderr, refused.stderr
        assert "pause 1: paused in" in refused.stdout  # the pause itself holds
        blind.call(ResumeRequest())
        trains_on(blind, 2)
        previewer = log_text(blind.procs[-1])
        assert previewer.count("WARNING") == 1 and reason in previewer, previewer
        blind.close()

        for run in (plain, previewed):
            run.finish()
        events = received(sub, "metrics.previews")
    finally:
        sub.close(linger=0)
        ctx.term()
    (plain_dir,), (previewed_dir,) = ((r.tmp / "runs").iterdir() for r in (plain, previewed))
    assert final_hash(previewed, previewed_dir, 80) == final_hash(plain, plain_dir, 80)
    assert [(e["pause"], e["paths"], e["error"]) for e in events] == [(n, p, None) for n, p in zip((1, 2, 3), drawn)]
    assert all((e["width"], e["height"]) == (600, 400) for e in events)
