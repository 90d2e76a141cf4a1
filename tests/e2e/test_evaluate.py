"""`dynamicrl evaluate`: a run's final checkpoint played offline, checked against an independent
replay (the learner's torch network and the normalisation formula written out), and bad input."""

from __future__ import annotations

import ctypes.util
import json
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from helpers import Run, run_cli

from dynamicrl.core import checkpoints
from dynamicrl.core.algorithms.ppo.policy import ActorCritic

pytestmark = pytest.mark.e2e

HIDDEN = [16, 16]


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None):
    return run_cli(*args, cwd=cwd, env=env, timeout=120)


@pytest.fixture(scope="module")
def hopper_run(tmp_path_factory) -> Path:
    """A short Hopper-v5 run with observation normalisation; it checkpoints at iteration 4 and at the end."""
    tmp_path = tmp_path_factory.mktemp("evaluate")
    overrides = [
        "run.envrunners=auto",
        "env.id=Hopper-v5",
        "env.num_envs=2",
        "algo.num_steps=64",
        "algo.num_minibatches=4",
        "algo.update_epochs=2",
        f"algo.hidden_sizes={json.dumps(HIDDEN)}",
        "algo.init_log_std=-0.5",
        "normalize.obs=true",
        "normalize.reward=true",
        "run.total_env_steps=1024",
        "checkpoint.every_iterations=4",
    ]
    with Run(tmp_path, overrides) as run:
        run.start().finish()
    assert int(run.metrics()[-1]["iteration"]) == 8
    (run_dir,) = (tmp_path / "runs").iterdir()
    return run_dir


def replay_first_episode(checkpoint: Path, seed: int) -> tuple[float, int]:
    """The deterministic policy's episode from the checkpoint's arrays, by other code than the evaluator's."""
    _, controller, parts = checkpoints.read(checkpoint)
    arrays = parts[controller["learner"]].arrays
    env = gym.make("Hopper-v5")
    net = ActorCritic(env.observation_space, env.action_space, HIDDEN)
    net.load_state_dict(
        {k.removeprefix("policy."): torch.tensor(v) for k, v in arrays.items() if k.startswith("policy.")}
    )
    mean, var = arrays["norm.obs.mean"], arrays["norm.obs.var"]
    assert arrays["norm.obs.count"][0] == 1024  # real statistics, not the identity
    obs, _ = env.reset(seed=seed)
    total, steps, done = 0.0, 0, False
    while not done:
        x = np.clip((obs - mean) / np.sqrt(var + 1e-8), -10, 10).astype(np.float32)
        with torch.no_grad():
            action = net.actor(torch.tensor(x[None]))[0].numpy()
        obs, reward, terminated, truncated, _ = env.step(np.clip(action, -1, 1))
        total, steps, done = total + float(reward), steps + 1, terminated or truncated
    env.close()
    return total, steps


def test_evaluate_plays_the_final_policy_deterministically(hopper_run, tmp_path):
    out = cli("evaluate", str(hopper_run), "--episodes", "3", "--seed", "7", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    final = checkpoints.latest_good(hopper_run / "checkpoints")
    assert result["checkpoint"] == str(final) and result["iteration"] == 8 and result["env_steps"] == 1024
    assert result["env_id"] == "Hopper-v5" and result["deterministic"] is True
    assert len(result["returns"]) == len(result["lengths"]) == 3
    assert result["mean"] == pytest.approx(np.mean(result["returns"]))

    expected_return, expected_length = replay_first_episode(final, seed=7)
    assert result["lengths"][0] == expected_length
    assert result["returns"][0] == pytest.approx(expected_return, rel=1e-4)

    again = json.loads(cli("evaluate", str(final), "-n", "3", "--seed", "7", "--json", cwd=tmp_path).stdout)
    assert again["returns"] == result["returns"], "same checkpoint, same seed: the same episodes"
    sampled = json.loads(
        cli("evaluate", str(final), "-n", "3", "--seed", "7", "--stochastic", "--json", cwd=tmp_path).stdout
    )
    assert sampled["deterministic"] is False and sampled["returns"] != result["returns"]

    text = cli("evaluate", str(hopper_run), "-n", "2", cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.strip().splitlines()
    assert lines[0] == f"checkpoint {final}" and len(lines) == 4
    assert lines[1].startswith("  episode 0 (seed 0): return ")
    assert lines[3].startswith("Hopper-v5 at iteration 8 (1024 env steps), 2 deterministic episode(s) from seed 0")


def test_evaluate_refuses_bad_checkpoints_with_one_message(hopper_run, tmp_path):
    final = checkpoints.latest_good(hopper_run / "checkpoints")
    damaged = shutil.copytree(final, tmp_path / "damaged")
    npz = next(damaged.glob("learner*.npz"))
    data = bytearray(npz.read_bytes())
    data[len(data) // 2] ^= 0x01
    npz.write_bytes(bytes(data))
    empty_run = tmp_path / "empty-run"
    (empty_run / "checkpoints").mkdir(parents=True)
    # intact, but no member saved a policy (an algorithm that saves none under policy.*)
    no_policy = checkpoints.write(
        tmp_path / "no-policy",
        1,
        64,
        [checkpoints.Part("learner.1", {"optim.0.step": np.zeros(1)}, {})],
        {"run_id": "x", "learner": "learner.1", "config": {}, "journal_entries": 0},
        keep=1,
    )
    cases = {
        damaged: f"{npz}: sha256",
        empty_run: "no complete checkpoint",
        tmp_path: "manifest.json: missing",
        no_policy: "no member holds a policy",
    }
    for path, problem in cases.items():
        for command in ("evaluate", "inspect"):  # the two readers of a checkpoint's policy say the same
            out = cli(command, str(path), cwd=tmp_path)
            lines = out.stderr.strip().splitlines()
            assert out.returncode == 1 and out.stdout == "", f"{command}: {out.stderr}"
            assert len(lines) == 1 and lines[0].startswith("Error: ") and problem in lines[0], out.stderr
    out = cli("evaluate", "--all", str(empty_run), cwd=tmp_path)
    expected = f"Error: {empty_run / 'checkpoints'}: no complete checkpoint to evaluate"
    assert out.returncode == 1 and out.stderr.strip() == expected


def test_evaluate_all_plays_every_checkpoint_and_names_the_best(hopper_run, tmp_path):
    """--all is the single evaluation repeated per checkpoint, oldest first; a bad one is skipped, said on stderr."""
    run = shutil.copytree(hopper_run, tmp_path / "run")
    out = cli("evaluate", str(run), "--all", "-n", "2", "--stochastic", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout)
    assert [(r["iteration"], r["env_steps"]) for r in results] == [(4, 512), (8, 1024)]
    for r in results:
        single = json.loads(cli("evaluate", r["checkpoint"], "-n", "2", "--stochastic", "--json", cwd=tmp_path).stdout)
        assert single == r
    assert results[0]["returns"] != results[1]["returns"], "two policies, two sets of episodes"

    text = cli("evaluate", str(run), "--all", "-n", "2", "--stochastic", cwd=tmp_path)
    lines = text.stdout.strip().splitlines()
    assert lines[0] == "2 checkpoint(s), 2 stochastic episode(s) each from seed 0:" and len(lines) == 4
    assert lines[1].startswith("  iteration       4 (       512 env steps): return ")
    best = max(results, key=lambda r: r["mean"])
    assert lines[3] == f"best: {best['checkpoint']} (iteration {best['iteration']}, return {best['mean']:.1f})"

    (run / "checkpoints" / "iter-00000004" / "manifest.json").unlink()  # as if the write had been cut short
    out = cli("evaluate", str(run), "--all", "-n", "1", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert [r["iteration"] for r in json.loads(out.stdout)] == [8]
    assert out.stderr.count("skipping a bad checkpoint") == 1 and "iter-00000004/manifest.json: missing" in out.stderr


def test_evaluate_video_records_a_mujoco_env_through_headless_gl(hopper_run, tmp_path):
    """Hopper-v5 rendered offscreen (EGL here) at the asked size; the same returns as without video."""
    from test_evaluate_video import decoded

    plain = cli("evaluate", str(hopper_run), "-n", "2", "--json", cwd=tmp_path)
    video = tmp_path / "hopper.mp4"
    out = cli("evaluate", str(hopper_run), "-n", "2", "--video", str(video), "--size", "96x64", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result == {**json.loads(plain.stdout), "video": str(video)}, "recording changes nothing evaluated"
    assert decoded(video) == (result["lengths"][0] + 1, (64, 96, 3), 125.0)  # Hopper's render_fps: 1 / dt

    if ctypes.util.find_library("OSMesa"):
        pytest.skip("libOSMesa is installed: no back-end left that lacks its GL library")
    # PyOpenGL's platform too: a mujoco imported in this process (EGL, tests/conftest.py) set it for its children
    osmesa = {"MUJOCO_GL": "osmesa", "PYOPENGL_PLATFORM": "osmesa"}
    no_gl = cli("evaluate", str(hopper_run), "-n", "1", "--video", "v.mp4", cwd=tmp_path, env=osmesa)
    lines = no_gl.stderr.strip().splitlines()
    assert no_gl.returncode == 1 and no_gl.stdout == "" and len(lines) == 1, no_gl.stderr
    assert lines[0].startswith("Error: env 'Hopper-v5' cannot render: ") and "MUJOCO_GL=osmesa" in lines[0]
    assert not (tmp_path / "v.mp4").exists()
