"""Checkpoint kinds on disk: only periodic checkpoints rotate under ``keep``; the others, and what
`dynamicrl inspect` says about each, stay; a manifest from before kinds rotates as it did then."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dynamicrl.core import checkpoints

CONTROLLER = {"run_id": "kinds", "learner": "learner.1", "config": {"checkpoint": {"keep": 2}}, "journal_entries": 0}


def write(root: Path, iteration: int, kind: str, keep: int = 2) -> Path:
    part = checkpoints.Part("learner.1", {"policy.w": np.full(3, iteration, np.float32)}, {"iteration": iteration})
    return checkpoints.write(root, iteration, iteration * 64, [part], CONTROLLER, keep=keep, kind=kind)


def names(root: Path) -> list[str]:
    return sorted(p.name.removeprefix(checkpoints.PREFIX).lstrip("0") for p in checkpoints.complete(root))


def test_only_periodic_checkpoints_rotate(tmp_path):
    root = tmp_path / "checkpoints"
    kinds = {3: checkpoints.MANUAL, 5: checkpoints.STOP, 9: checkpoints.MANUAL}
    for iteration in range(1, 13):
        write(root, iteration, kinds.get(iteration, checkpoints.PERIODIC))
    write(root, 13, checkpoints.END)
    assert names(root) == ["11", "12", "13", "3", "5", "9"]
    for path in checkpoints.complete(root):
        manifest = checkpoints.verify(path)
        assert manifest["kind"] == kinds.get(manifest["iteration"], manifest["kind"])
    said = {p.name: checkpoints.retention(p, checkpoints.verify(p), CONTROLLER) for p in checkpoints.complete(root)}
    assert said == {
        "iter-00000013": "kept: taken at the end of training",
        "iter-00000012": "periodic: one of the last 2 kept",
        "iter-00000011": "periodic: one of the last 2 kept",
        "iter-00000009": "kept: asked for by hand",
        "iter-00000005": "kept: taken by a stop (resume-run continues from it)",
        "iter-00000003": "kept: asked for by hand",
    }, said
    fewer = {**CONTROLLER, "config": {"checkpoint": {"keep": 1}}}  # fewer kept than there are
    assert checkpoints.retention(root / "iter-00000011", {"kind": "periodic"}, fewer) == (
        "periodic: older than the last 1: the next write removes it"
    )


def test_a_checkpoint_without_a_kind_loads_and_rotates_as_before(tmp_path):
    root = tmp_path / "checkpoints"
    old = write(root, 1, checkpoints.MANUAL)
    manifest_path = old / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["kind"]  # as written before kinds existed
    manifest_path.write_text(json.dumps(manifest))
    assert checkpoints.read(old)[0]["iteration"] == 1
    assert checkpoints.retention(old, manifest, {}) == (
        "periodic: one of the last 3 kept (kind not recorded: an older checkpoint)"  # keep: the default
    )
    write(root, 2, checkpoints.PERIODIC, keep=1)
    assert names(root) == ["2"]
