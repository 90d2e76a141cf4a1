"""Videos while training (`video.every_iterations`): the previewer films beside the run, never in it.

One pair of CartPole runs, started together: without videos and with a clip every 2 iterations.
Their final policies are bitwise equal; each clip decodes with its episode's frame count and size;
its `metrics.video` event, read by a plain msgpack subscriber, validates against the JSON Schema;
the real `tensorboard` lists the clip's image tag and serves the GIF. A third run, on an env that
cannot render, trains on with one warning; a fourth films Hopper-v5 at 64x48.
"""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import msgpack
import pytest
import zmq
from helpers import log_text, logs, wait_until
from test_checkpoint_resume import final_hash
from test_evaluate_video import PLUGINS, decoded
from test_observability import TensorBoard

from dynamicrl.protocol import security
from dynamicrl.protocol.sockets import connect

pytestmark = pytest.mark.e2e

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "docs" / "protocol.schema.json").read_text())
SMALL = [
    "env.num_envs=2",
    "env.kwargs={max_episode_steps: 40}",  # clips of 41 frames at most
    "algo.num_steps=64",
    "run.total_env_steps=2048",  # 16 iterations
    "logger.console=false",
]
#: at full speed: by default the previewer films within 2% of the machine's CPU, at nice 10
FILMING = ["video.nice=0", "video.cpu_budget=null"]


def plain_subscriber(endpoint: str, topic: str = "metrics.video") -> tuple[zmq.Context, zmq.Socket]:
    """docs/protocol.md's plain subscriber: a SUB on the bus for one topic, no dynamicrl code."""
    ctx = security.context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, topic.encode())
    connect(sub, endpoint)
    return ctx, sub


def received(sub: zmq.Socket, topic: str = "metrics.video") -> list[dict]:
    """Each queued event, its envelope and body validated against docs/protocol.schema.json."""
    jsonschema = pytest.importorskip("jsonschema")
    events = []
    while sub.poll(0):
        frame, payload, *_ = sub.recv_multipart()
        envelope = msgpack.unpackb(payload, raw=False)
        jsonschema.validate(envelope, SCHEMA["envelope"])
        jsonschema.validate(envelope["body"], SCHEMA["messages"][topic])
        assert frame == topic.encode() and envelope["type"] == topic
        events.append(envelope["body"])
    return events


def test_videos_while_training_change_no_bit_of_it(runs, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(PLUGINS)  # the blind run's config names a plugin env
    plain = runs("plain", SMALL)
    filmed = runs("filmed", [*SMALL, *FILMING, "video.every_iterations=2"])
    blind = runs(
        "blind",
        [
            *SMALL,
            "run.total_env_steps=512",
            "plugins=[no_render_env]",
            "env.id=NoRenderCartPole-v0",
            "video.every_iterations=1",
        ],
        env={"PYTHONPATH": PLUGINS + os.pathsep + os.environ.get("PYTHONPATH", "")},
    )
    hopper = runs(
        "hopper",
        ["env.id=Hopper-v5", "env.num_envs=2", "algo.num_steps=64", "normalize.obs=true"]
        + ["run.total_env_steps=2048", "video.every_iterations=2", "video.size=64x48", "video.max_steps=10", *FILMING],
    )
    ctx, sub = plain_subscriber(filmed.bus_out)
    try:
        for run in (plain, filmed, blind, hopper):
            run.start()
        for run in (plain, filmed, blind, hopper):
            run.finish()
        events = received(sub)
    finally:
        sub.close(linger=0)
        ctx.term()
    (plain_dir,), (filmed_dir,) = ((r.tmp / "runs").iterdir() for r in (plain, filmed))
    # started first: tensorboard starts and loads the events while the checks before its own ones run
    tensorboard = TensorBoard(filmed_dir, tmp_path / "tensorboard.log")
    try:
        assert final_hash(filmed, filmed_dir, 16) == final_hash(plain, plain_dir, 16)

        clips = sorted((filmed_dir / "videos").glob("iter-*.mp4"))
        assert clips and not list((filmed_dir / "videos").glob("*.part.mp4")), logs(filmed.procs)
        assert sorted(e["path"] for e in events) == [str(c) for c in clips], "one event per clip"
        for event in events:
            mp4 = Path(event["path"])
            iteration = event["iteration"]
            assert mp4.name == f"iter-{iteration}.mp4"
            assert decoded(mp4)[:2] == (event["length"] + 1, (400, 600, 3)) == (event["frames"], (400, 600, 3))
            assert (event["width"], event["height"], event["seed"]) == (600, 400, 1 + 999_999 + iteration)
            assert event["env_step"] == iteration * 128 and 1 <= event["length"] <= 40
            beside = json.loads(mp4.with_suffix(".json").read_text())
            assert beside == {k: event[k] for k in ("iteration", "env_step", "episode_return", "length", "seed")}
            assert Path(event["gif"]).read_bytes().startswith(b"GIF89a")

        (hopper_dir,) = (hopper.tmp / "runs").iterdir()
        filmed_hopper = sorted((hopper_dir / "videos").glob("iter-*.json"))
        assert filmed_hopper, logs(hopper.procs)
        for summary in filmed_hopper:  # MuJoCo offscreen (EGL here) at the asked size, max_steps at most
            length = json.loads(summary.read_text())["length"]
            assert decoded(summary.with_suffix(".mp4"))[:2] == (length + 1, (48, 64, 3)) and 1 <= length <= 10

        previewer = log_text(blind.procs[-1])
        warning = "env 'NoRenderCartPole-v0' cannot be recorded: it has no 'rgb_array' render mode (it has [])"
        assert previewer.count("WARNING") == 1 and warning in previewer, previewer
        (blind_dir,) = (blind.tmp / "runs").iterdir()
        assert not (blind_dir / "videos").exists()

        wait_until(
            lambda: "video/episode" in (tensorboard.get("/data/plugin/images/tags") or {}).get(".", {}),
            timeout=60,
            message=f"tensorboard never listed the image tag:\n{log_text(tensorboard.proc)}",
        )
        shown = tensorboard.get("/data/plugin/images/images?run=.&tag=video/episode")
        assert sorted(row["step"] for row in shown) == sorted(e["env_step"] for e in events)
        with urllib.request.urlopen(f"{tensorboard.url}/data/plugin/images/individualImage?{shown[-1]['query']}") as r:
            assert r.read().startswith(b"GIF89a")
    finally:
        tensorboard.proc.terminate()
        tensorboard.proc.wait(timeout=10)
