"""`dynamicrl evaluate --video`: real frames rendered and encoded (CartPole here, Hopper-v5 in
test_evaluate.py), returns equal with and without recording, and an env that cannot render."""

from __future__ import annotations

import gc
import json
import os
import warnings
from pathlib import Path
from typing import Any

import imageio.v2 as imageio
import pytest
from helpers import Run, run_cli

from dynamicrl.core import checkpoints

pytestmark = pytest.mark.e2e

PLUGINS = str(Path(__file__).resolve().parent / "plugins")


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None):
    return run_cli(*args, cwd=cwd, env=env, timeout=120)


def decoded(path: Path) -> tuple[int, tuple[int, ...], float]:
    """The frame count, frame shape and frame rate of an MP4, every frame decoded by imageio's ffmpeg plugin.

    imageio-ffmpeg leaves its ffmpeg's pipes to the garbage collector: collected here, warnings off.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        reader: Any = imageio.get_reader(path, format="FFMPEG")
        with reader:
            shapes = [frame.shape for frame in reader]
            fps = reader.get_meta_data()["fps"]
        del reader
        gc.collect()
    assert len(set(shapes)) == 1, shapes
    return len(shapes), shapes[0], fps


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory) -> Path:
    """A short CartPole run (episodes of at most 40 steps) that checkpoints at iteration 2 and at the end (4)."""
    tmp_path = tmp_path_factory.mktemp("video")
    overrides = [
        "env.num_envs=2",
        "env.kwargs={max_episode_steps: 40}",  # episodes of a few dozen steps: short videos
        "algo.num_steps=64",
        "run.total_env_steps=512",
        "checkpoint.every_iterations=2",
    ]
    with Run(tmp_path, overrides) as run:
        run.start().finish()
    (run_dir,) = (tmp_path / "runs").iterdir()
    return run_dir


def test_evaluate_video_records_the_episodes_it_plays(cartpole_run, tmp_path):
    plain = cli("evaluate", str(cartpole_run), "-n", "3", "--json", cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    video = tmp_path / "cartpole.mp4"
    args = ("evaluate", str(cartpole_run), "-n", "3", "--video", str(video), "--video-episodes", "2")
    recorded = cli(*args, "--json", cwd=tmp_path)
    assert recorded.returncode == 0, recorded.stderr
    result = json.loads(recorded.stdout)
    assert result == {**json.loads(plain.stdout), "video": str(video)}, "recording changes nothing evaluated"
    # classic control draws its own 600x400 frames; one frame at each reset and after each step
    assert decoded(video)[:2] == (sum(result["lengths"][:2]) + 2, (400, 600, 3))

    text = cli(*args, "--fps", "25", cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    (r0, r1), (n0, n1) = result["returns"][:2], result["lengths"][:2]
    line = f"  video {video}: episode 0 return {r0:.1f}, length {n0}; episode 1 return {r1:.1f}, length {n1}"
    assert text.stdout.strip().splitlines()[-1] == line
    assert decoded(video)[2] == 25


def test_evaluate_all_writes_one_video_per_checkpoint(cartpole_run, tmp_path):
    out = cli("evaluate", str(cartpole_run), "--all", "-n", "1", "--video-dir", str(tmp_path / "v"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    names = [c.name for c in reversed(checkpoints.complete(cartpole_run / "checkpoints"))]
    assert names == ["iter-00000002", "iter-00000004"]
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == [f"{n}.mp4" for n in names]
    lines = [line for line in out.stdout.splitlines() if line.startswith("  video ")]
    assert [line.split(":")[0] for line in lines] == [f"  video {tmp_path / 'v' / n}.mp4" for n in names]

    for wrong in (("--video-dir", "d"), ("--video", "x.mp4", "--all"), ("--video", "x.mp4", "--size", "481x360")):
        bad = cli("evaluate", str(cartpole_run), *wrong, cwd=tmp_path)
        assert bad.returncode == 2 and "Error" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    assert not (tmp_path / "x.mp4").exists() and not (tmp_path / "d").exists()


def test_an_env_that_cannot_render_fails_evaluate_video_only(cartpole_run, tmp_path):
    """The same policy on an env registered (by a plugin) without an rgb_array mode."""
    final = checkpoints.latest_good(cartpole_run / "checkpoints")
    _, controller, parts = checkpoints.read(final)
    controller["config"] |= {
        "plugins": ["no_render_env"],
        "env": {**controller["config"]["env"], "id": "NoRenderCartPole-v0"},
    }
    checkpoint = checkpoints.write(tmp_path / "ckpt", 4, 512, list(parts.values()), controller, keep=1)
    env = {"PYTHONPATH": PLUGINS + os.pathsep + os.environ.get("PYTHONPATH", "")}

    plugin = ("--plugin", "no_render_env")  # never imported from the checkpoint: passed
    plain = cli("evaluate", str(checkpoint), "-n", "1", "--json", *plugin, cwd=tmp_path, env=env)
    assert plain.returncode == 0, plain.stderr
    out = cli("evaluate", str(checkpoint), "-n", "1", "--video", "v.mp4", *plugin, cwd=tmp_path, env=env)
    expected = "Error: env 'NoRenderCartPole-v0' cannot be recorded: it has no 'rgb_array' render mode (it has [])"
    assert out.returncode == 1 and out.stderr.strip() == expected and out.stdout == ""
    assert not (tmp_path / "v.mp4").exists()
