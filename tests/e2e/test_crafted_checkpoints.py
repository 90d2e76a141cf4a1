"""Crafted and damaged checkpoints that pass the checksums (issue #16, items 3 and 9).

Each case copies a real checkpoint of one short CartPole run, edits it, and fixes the manifest's
sha256 (and policy_sha256) so the hash check passes. Then the real `dynamicrl` command must
refuse it: a non-zero exit, exactly one ``Error:`` line naming the checkpoint's directory and
the file and field at fault, and no traceback. Cases: learner arrays of another shape (inspect,
evaluate, resume-run, and `dynamicrl run resume=...`, where the learner finds it); a manifest or
controller.json without a usable ``iteration``; a controller.json that is not JSON; and
checkpoints of boundaries the run never reached (a forged ``iter-99999999``, an iteration that
is not the directory's, an env_step that is not the iteration's), which ``latest_good`` skips.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers import Run, run_cli

from dynamicrl.core import checkpoints

pytestmark = pytest.mark.e2e

#: 4 iterations of 1 env-runner x 4 envs x 16 steps; checkpoints at iterations 2 and 4 (the end)
OVERRIDES = [
    "env.num_envs=4",
    "algo.num_steps=16",
    "algo.hidden_sizes=[16, 16]",
    "algo.update_epochs=1",
    "algo.num_minibatches=2",
    "run.total_env_steps=256",
    "checkpoint.every_iterations=2",
]
ARRAY = "policy.actor.0.weight"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("crafted")
    with Run(tmp, OVERRIDES) as run:
        run.start().finish(timeout=120)
    (found,) = (tmp / "runs").iterdir()
    assert [p.name for p in checkpoints.complete(found / "checkpoints")] == ["iter-00000004", "iter-00000002"]
    return found


def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    return copy


def rehash(path: Path, *names: str, **fields) -> None:
    """The manifest with the sha256 of ``names`` as they are now, and ``fields`` set (None: removed)."""
    manifest = json.loads((path / "manifest.json").read_text())
    for name in names:
        manifest["files"][name] = hashlib.sha256((path / name).read_bytes()).hexdigest()
    for key, value in fields.items():
        if value is None:
            manifest.pop(key, None)
        else:
            manifest[key] = value
    (path / "manifest.json").write_text(json.dumps(manifest))


def edit_json(path: Path, name: str, **fields) -> None:
    data = json.loads((path / name).read_text())
    for key, value in fields.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    (path / name).write_text(json.dumps(data))
    rehash(path, name)


def wrong_shape(path: Path) -> None:
    """The learner's ARRAY one column wider, every hash (policy_sha256 too) made to agree."""
    _, controller, parts = checkpoints.read(path)
    learner = parts[controller["learner"]]
    arrays = dict(learner.arrays)
    rows, cols = arrays[ARRAY].shape
    arrays[ARRAY] = np.zeros((rows, cols + 1), arrays[ARRAY].dtype)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]  # as checkpoints.write
    (path / f"{learner.service}.npz").write_bytes(buffer.getvalue())
    rehash(path, f"{learner.service}.npz", policy_sha256=checkpoints.policy_sha256(arrays))


def one_error(out, *named: str) -> str:
    """The command failed with exactly one ``Error:`` line (and nothing else on stderr) naming ``named``."""
    text = out.stdout + out.stderr
    assert out.returncode != 0, text
    assert "Traceback" not in text, text
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), out.stderr
    for name in named:
        assert name in lines[0], (name, lines[0])
    return lines[0]


# -- a. arrays of another shape --------------------------------------------------------------------
@pytest.mark.parametrize("command", [["inspect"], ["evaluate", "-n", "1"]])
def test_arrays_of_another_shape_are_refused_naming_the_array(run_dir, tmp_path, command):
    path = copy_run(run_dir, tmp_path) / "checkpoints" / "iter-00000004"
    wrong_shape(path)
    checkpoints.verify(path)  # every hash agrees: only the model can tell
    line = one_error(run_cli(*command, str(path), cwd=tmp_path), str(path / "learner.1.npz"), ARRAY, "(16, 5)")
    print(f"\n[{command[0]}] {line}")


def test_resume_run_of_arrays_of_another_shape_fails_before_anything_starts(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path)
    path = run / "checkpoints" / "iter-00000004"
    wrong_shape(path)
    before = (run / "metrics.csv").read_bytes()
    out = run_cli("resume-run", str(run), "--total-env-steps", "512", cwd=tmp_path, timeout=60)
    text = out.stdout + out.stderr
    assert out.returncode != 0 and "Traceback" not in text and "started (pid" not in text, text
    errors = [line for line in text.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and str(path / "learner.1.npz") in errors[0] and ARRAY in errors[0], text
    assert (run / "metrics.csv").read_bytes() == before


def test_a_resumed_learner_refuses_arrays_of_another_shape_and_the_run_exits_non_zero(runs, run_dir, tmp_path):
    """`dynamicrl run resume=RUN_DIR` skips resume-run's check: the learner finds it, says it in one line
    and leaves; the controller stops the run with exit 1."""
    run = copy_run(run_dir, tmp_path)
    path = run / "checkpoints" / "iter-00000004"
    wrong_shape(path)
    launched = runs("launch").launch(f"resume={run}", "resume_total_env_steps=512")
    try:
        code = launched.wait(60)
    finally:
        launched.stop()
    text = launched.log()
    assert code != 0 and "Traceback" not in text, text[-4000:]
    said = [line for line in text.splitlines() if "ERROR" in line and "cannot resume" in line]
    assert len(said) == 1 and str(path / "learner.1.npz") in said[0] and ARRAY in said[0], text[-4000:]
    assert "resumed at iteration 4" not in [line for line in text.splitlines() if "learner.1" in line]
    print(f"\n[run resume=] exit {code}: {said[0]}")


# -- b, c. the iteration field, a controller.json that is not JSON -----------------------------------
def manifest_iteration(value) -> Callable[[Path], tuple[str, str]]:
    def craft(path: Path) -> tuple[str, str]:
        rehash(path, iteration=value)
        return "manifest.json", "'iteration'"

    return craft


def controller_without_iteration(path: Path) -> tuple[str, str]:
    edit_json(path, "controller.json", iteration=None)
    return "controller.json", "'iteration'"


def controller_not_json(path: Path) -> tuple[str, str]:
    (path / "controller.json").write_text('{"run_id": "cut here')
    rehash(path, "controller.json")
    return "controller.json", "unreadable"


FIELDS = {
    "manifest without iteration": manifest_iteration(None),
    "manifest iteration 'four'": manifest_iteration("four"),
    "manifest iteration -4": manifest_iteration(-4),
    "manifest iteration true": manifest_iteration(True),
    "controller.json without iteration": controller_without_iteration,
    "controller.json not JSON": controller_not_json,
}


@pytest.mark.parametrize("case", list(FIELDS))
def test_a_bad_iteration_field_or_controller_json_is_refused_naming_file_and_field(run_dir, tmp_path, case):
    path = copy_run(run_dir, tmp_path) / "checkpoints" / "iter-00000004"
    file, field = FIELDS[case](path)
    for command in (["inspect"], ["evaluate", "-n", "1"]) if case == "controller.json not JSON" else (["inspect"],):
        line = one_error(run_cli(*command, str(path), cwd=tmp_path), str(path / file), field)
        print(f"\n[{case}: {command[0]}] {line}")


# -- d. boundaries the run never reached -----------------------------------------------------------
def test_a_forged_far_iteration_is_refused_and_latest_good_takes_the_real_latest(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path)
    real = run / "checkpoints" / "iter-00000004"
    forged = run / "checkpoints" / "iter-99999999"
    shutil.copytree(real, forged)
    edit_json(forged, "controller.json", iteration=99999999)  # both records agree, every hash fixed
    rehash(forged, iteration=99999999)

    line = one_error(run_cli("inspect", str(forged), cwd=tmp_path), str(forged / "manifest.json"), "99999999")
    assert "past the run's end" in line, line
    reports: list[str] = []
    assert checkpoints.latest_good(run / "checkpoints", report=reports.append) == real
    assert len(reports) == 1 and str(forged) in reports[0] and "past the run's end" in reports[0], reports
    out = run_cli("inspect", str(run), cwd=tmp_path)  # a run directory: its latest good checkpoint, reported
    assert out.returncode == 0 and f"checkpoint {real}" in out.stdout, out.stdout + out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and str(forged) in out.stderr, out.stderr
    print(f"\n[iter-99999999] {line}")


def renamed(path: Path) -> tuple[Path, str]:
    """iteration 4's checkpoint under iteration 3's name."""
    moved = path.with_name("iter-00000003")
    path.rename(moved)
    return moved, "does not match the directory"


def env_step_off(path: Path) -> tuple[Path, str]:
    edit_json(path, "controller.json", env_step=200)
    rehash(path, env_step=200)
    return path, "env_step 200 is not iteration 4"


@pytest.mark.parametrize("craft", [renamed, env_step_off], ids=["iteration not the name's", "env_step off"])
def test_an_iteration_the_run_did_not_reach_there_is_refused(run_dir, tmp_path, craft):
    path, problem = craft(copy_run(run_dir, tmp_path) / "checkpoints" / "iter-00000004")
    line = one_error(run_cli("inspect", str(path), cwd=tmp_path), str(path / "manifest.json"), problem)
    print(f"\n[{craft.__name__}] {line}")
