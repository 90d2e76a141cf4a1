"""Checkpoint files: written atomically, verified before use, never unpickled.

Layout: ``<run_dir>/checkpoints/iter-00000042/`` holding, per member,
``<service>.npz`` (arrays, saved without pickle) and ``<service>.json`` (plain
data), the controller's ``controller.json``, and ``manifest.json`` written
last with the sha256 of every other file. Everything is written into a
``.tmp-*`` directory, each file fsynced, then the directory is renamed into
place and the parent fsynced: a crash leaves either a complete checkpoint or
a temp directory that is never taken for one.

Only plain files inside the checkpoint: every name written or read is a plain file name (no
separator, no leading dot), checked again on the resolved path, and a directory is never reused: a
boundary written again (or an ``iter-*`` someone else created) gets the next free ``iter-<k>.<n>``.
A manifest that names anything else, or a policy whose hash is not the manifest's, is refused.

The manifest's ``kind`` says why a checkpoint was taken. Only periodic ones
(``checkpoint.every_iterations``) rotate under ``checkpoint.keep``: the others
are what a person asked for, or what ``resume-run`` continues from. A manifest
without ``kind`` (written before it existed) rotates, as every one did then.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dynamicrl.core import tunables
from dynamicrl.core.settings import CheckpointConfig

FORMAT_VERSION = 1
PREFIX = "iter-"
POLICY_PREFIX = "policy."  # learner arrays holding the policy's parameters

PERIODIC, MANUAL, STOP, END = "periodic", "manual", "stop", "end"  # the manifest's "kind"
#: the kinds the rotation never removes, and why (as `dynamicrl inspect` says it)
KEPT_BECAUSE = {
    MANUAL: "asked for by hand",
    STOP: "taken by a stop (resume-run continues from it)",
    END: "taken at the end of training",
}


class CheckpointError(ValueError):
    """A checkpoint is missing a file, fails its checksum, or has another format; the message names it."""


@dataclass(frozen=True)
class Part:
    service: str
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]


def plain_name(name: object) -> bool:
    """A file name of a checkpoint: a non-empty string without separators, not starting with a dot."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= 255
        and not name.startswith(".")
        and "/" not in name
        and "\\" not in name
        and "\0" not in name
    )


def inside(path: Path, root: Path) -> Path:
    """``path`` resolved, if it lies inside ``root`` (resolved); CheckpointError naming it otherwise."""
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise CheckpointError(f"{path}: resolves to {resolved}, outside {root}")
    return resolved


def json_problem(data: Any) -> str:
    """Why ``data`` cannot be written as JSON ('' when it can): bytes, NaN, a non-string key..."""
    try:
        json.dumps(data, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        text = str(exc)
        return text if len(text) <= 200 else text[:197] + "..."
    return ""


def policy_sha256(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over the policy's parameters in name order: equal hashes mean bitwise-equal policies."""
    digest = hashlib.sha256()
    for name in sorted(k for k in arrays if k.startswith(POLICY_PREFIX)):
        array = np.ascontiguousarray(arrays[name])
        digest.update(name.encode())
        digest.update(array.dtype.str.encode())
        digest.update(str(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def write(
    root: Path,
    iteration: int,
    env_step: int,
    parts: list[Part],
    controller: dict[str, Any],
    keep: int,
    kind: str = PERIODIC,
) -> Path:
    """Write a complete checkpoint of ``kind`` under ``root``, rotate the periodic ones; return its directory."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{PREFIX}{iteration:08d}-{os.getpid()}-{time.monotonic_ns()}"
    tmp.mkdir()
    files: dict[str, str] = {}
    for part in parts:
        if not plain_name(part.service):
            raise CheckpointError(f"{part.service!r:.80}: not a plain name for a checkpoint file")
        buffer = io.BytesIO()
        np.savez(buffer, **part.arrays)  # type: ignore[arg-type]  # mypy matches **arrays to savez's allow_pickle: bool
        files[f"{part.service}.npz"] = _write(tmp, f"{part.service}.npz", buffer.getvalue())
        files[f"{part.service}.json"] = _write(tmp, f"{part.service}.json", _json(part.meta))
    files["controller.json"] = _write(tmp, "controller.json", _json(controller))
    learner = next(p for p in parts if p.service == controller["learner"])
    manifest = {
        "format": FORMAT_VERSION,
        "kind": kind,
        "iteration": iteration,
        "env_step": env_step,
        "created": time.time(),
        "services": [p.service for p in parts],
        "policy_sha256": policy_sha256(learner.arrays),
        "files": files,
    }
    _write(tmp, "manifest.json", _json(manifest))
    final = _free_name(root, iteration)
    os.rename(tmp, final)  # never over a non-empty directory or a file (the name was free a moment ago)
    _fsync_dir(root)
    prune(root, keep)
    return final


def _free_name(root: Path, iteration: int) -> Path:
    """``iter-<k>``, or when that exists (the same boundary again, or made by someone else: never reused)
    the first free ``iter-<k>.<n>``."""
    name = f"{PREFIX}{iteration:08d}"
    for n in range(1000):
        final = root / (name if n == 0 else f"{name}.{n}")
        if not os.path.lexists(final):
            return final
    raise CheckpointError(f"{root / name}: 1000 checkpoints of that boundary exist already")


def _write(folder: Path, name: str, data: bytes) -> str:
    """Write ``folder/name`` (a new plain file inside ``folder``) and fsync it; its sha256."""
    path = folder / name
    if not plain_name(name):
        raise CheckpointError(f"{path}: not a plain file name")
    inside(path, folder)
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return hashlib.sha256(data).hexdigest()


def _json(data: Any) -> bytes:
    return json.dumps(data, indent=1, sort_keys=True).encode()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def verify(path: Path) -> dict[str, Any]:
    """The manifest of a complete, intact checkpoint, or CheckpointError naming file and problem."""
    manifest_path = path / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{manifest_path}: missing (the checkpoint was not completed)") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{manifest_path}: unreadable: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"{manifest_path}: format {manifest.get('format') if isinstance(manifest, dict) else '?'!r}"
            f" is not {FORMAT_VERSION}"
        )
    files, services = manifest.get("files"), manifest.get("services")
    if not isinstance(files, dict) or not isinstance(services, list):
        raise CheckpointError(f"{manifest_path}: no 'files' map or 'services' list")
    for service in services:
        if not plain_name(service) or f"{service}.npz" not in files or f"{service}.json" not in files:
            raise CheckpointError(f"{manifest_path}: service {service!r:.80} has no files listed")
    if "controller.json" not in files:
        raise CheckpointError(f"{manifest_path}: controller.json is not listed")
    for name, expected in files.items():
        file = path / name
        if not plain_name(name):
            raise CheckpointError(f"{manifest_path}: {name!r:.80} is not a plain file name in the checkpoint")
        try:
            inside(file, path)
            if not os.path.lexists(file):
                raise FileNotFoundError(file)
            if not file.is_file() or file.is_symlink():  # not a device, a pipe, or a link to elsewhere
                raise CheckpointError(f"{file}: not a regular file")
            actual = hashlib.sha256(file.read_bytes()).hexdigest()
        except FileNotFoundError:
            raise CheckpointError(f"{file}: missing") from None
        except OSError as exc:
            raise CheckpointError(f"{file}: unreadable: {exc}") from None
        if actual != expected:
            raise CheckpointError(f"{file}: sha256 {actual[:12]}... does not match the manifest's {expected[:12]}...")
    return manifest


def read(path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Part]]:
    """(manifest, controller data, parts by service) of a verified checkpoint."""
    manifest = verify(path)
    parts = {}
    for service in manifest["services"]:
        try:
            # our own file object: np.load leaks its handle when the zip is damaged
            with open(path / f"{service}.npz", "rb") as f, np.load(f, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
            meta = json.loads((path / f"{service}.json").read_text())
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # a damaged npz is a zip error
            raise CheckpointError(f"{path / service}: cannot load: {exc}") from None
        parts[service] = Part(service, arrays, meta)
    try:
        controller = json.loads((path / "controller.json").read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path / 'controller.json'}: unreadable: {exc}") from None
    learner = controller.get("learner") if isinstance(controller, dict) else None
    if not isinstance(learner, str) or learner not in parts:
        raise CheckpointError(f"{path / 'controller.json'}: the learner {learner!r:.80} is not in the manifest")
    actual = policy_sha256(parts[learner].arrays)
    if actual != manifest.get("policy_sha256"):
        raise CheckpointError(
            f"{path / (learner + '.npz')}: policy sha256 {actual[:12]}... does not match the manifest's "
            f"{str(manifest.get('policy_sha256'))[:12]}..."
        )
    return manifest, controller, parts


def complete(root: Path) -> list[Path]:
    """Checkpoint directories (not temp ones), newest first."""
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX)), reverse=True)


def latest_good(root: Path, report=print) -> Path:
    """The newest checkpoint that verifies; bad ones are reported and skipped."""
    for path in complete(root):
        try:
            verify(path)
            return path
        except CheckpointError as exc:
            report(f"skipping a bad checkpoint: {exc}")
    raise CheckpointError(f"{root}: no complete checkpoint to resume from")


def policy_part(path: Path, parts: dict[str, Part]) -> Part:
    """The member whose arrays hold the policy (the learner's), or CheckpointError."""
    for part in parts.values():
        if any(name.startswith(POLICY_PREFIX) for name in part.arrays):
            return part
    raise CheckpointError(f"{path}: no member holds a policy ({POLICY_PREFIX}* arrays)")


def resolve(path: Path, report=print) -> Path:
    """A checkpoint directory as given, or a run directory's latest good checkpoint."""
    if not (path / "manifest.json").exists() and (path / "checkpoints").is_dir():
        return latest_good(path / "checkpoints", report=report)
    return path


def rotates(path: Path) -> bool:
    """Whether the rotation may remove this checkpoint: periodic, unrecorded, or unreadable (as before kinds)."""
    try:
        return json.loads((path / "manifest.json").read_text()).get("kind", PERIODIC) not in KEPT_BECAUSE
    except (OSError, ValueError, AttributeError):
        return True


def retention(path: Path, manifest: dict[str, Any], controller: dict[str, Any]) -> str:
    """Whether the rotation keeps this checkpoint, and why: ``kept: asked for by hand``,
    ``periodic: one of the last 3 kept``, ... (``keep`` is the run's, from ``controller.json``)."""
    keep = controller.get("config", {}).get("checkpoint", {}).get("keep", CheckpointConfig().keep)
    kind = manifest.get("kind")
    if kind in KEPT_BECAUSE:
        return f"kept: {KEPT_BECAUSE[kind]}"
    newer = sum(1 for p in complete(path.parent) if p.name > path.name and rotates(p))
    fate = f"one of the last {keep} kept" if newer < keep else f"older than the last {keep}: the next write removes it"
    return f"periodic: {fate}" + ("" if kind else " (kind not recorded: an older checkpoint)")


def prune(root: Path, keep: int) -> None:
    """Keep the newest ``keep`` checkpoints that rotate, and every other one; drop stale temp directories."""
    for path in [p for p in complete(root) if rotates(p)][keep:]:
        shutil.rmtree(path, ignore_errors=True)
    for stale in root.glob(".tmp-*"):  # a crash mid-write leaves these; never used, safe to drop
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)


def check_budget(total_env_steps: int, manifest: dict, path: Path) -> None:
    """A new budget must lie past the checkpoint: CheckpointError naming both otherwise."""
    problem = tunables.budget_problem(total_env_steps, manifest["iteration"], manifest["env_step"])
    if problem:
        raise CheckpointError(f"{path}: {problem}")
