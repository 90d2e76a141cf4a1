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
    controller = {**controller, "iteration": iteration, "env_step": env_step}  # checked against the manifest's
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
    for field in ("iteration", "env_step"):
        _count(manifest, field, manifest_path)
    named = name_iteration(path.name)
    if path.name.startswith(PREFIX) and named != manifest["iteration"]:
        said = "is not iter-<k> or iter-<k>.<n>" if named is None else f"says iteration {named}"
        raise CheckpointError(
            f"{manifest_path}: iteration {manifest['iteration']} does not match the directory: {path.name!r:.80} {said}"
        )
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
    _check_record(path, manifest)
    return manifest


def name_iteration(name: str) -> int | None:
    """k of a checkpoint directory's name ``iter-<k>`` or ``iter-<k>.<n>`` (digits only); None otherwise."""
    k, dot, n = name.removeprefix(PREFIX).partition(".")
    if not name.startswith(PREFIX) or not (k.isascii() and k.isdigit()) or (dot and not (n.isascii() and n.isdigit())):
        return None
    return int(k)


def _count(data: dict[str, Any], field: str, file: Path) -> int:
    """``data[field]``, a non-negative integer, or CheckpointError naming the file and the field."""
    value = data.get(field)
    if field not in data:
        raise CheckpointError(f"{file}: no {field!r}")
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise CheckpointError(f"{file}: {field!r} is {value!r:.40}, not a non-negative integer")
    return value


def _load_json(file: Path) -> Any:
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{file}: unreadable: {exc}") from None


def _check_record(path: Path, manifest: dict[str, Any]) -> None:
    """A boundary the run reached: controller.json agrees with the manifest's iteration and env_step,
    and, when it records the run's config, the iteration is within the run's budget and env_step is
    that many iterations of ``algo.num_steps x env.num_envs x env-runners``. A forged ``iter-99999999``
    (a copy of a real checkpoint, edited) is refused here, so resuming skips it."""
    file = path / "controller.json"
    controller = _load_json(file)
    if not isinstance(controller, dict):
        raise CheckpointError(f"{file}: not a JSON object")
    for field, key in (("iteration", "iteration"), ("env_step", "env_step")):
        if _count(controller, key, file) != manifest[field]:
            raise CheckpointError(f"{file}: {key!r} {controller[key]} is not the manifest's {manifest[field]}")
    learner = controller.get("learner")
    if not isinstance(learner, str) or learner not in manifest["services"]:
        raise CheckpointError(f"{file}: the learner {learner!r:.80} is not in the manifest")
    meta = _load_json(path / f"{learner}.json")
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path / (learner + '.json')}: not a JSON object")
    config = controller.get("config")
    if not isinstance(config, dict):
        raise CheckpointError(f"{file}: 'config' is not a JSON object")
    per_iteration = steps_per_iteration(config, manifest["services"], learner)
    budget = recorded_budget(config, meta)
    if per_iteration is None or budget is None:
        return  # no run's config recorded (written by hand or by a test): nothing to hold it against
    iteration, env_step = manifest["iteration"], manifest["env_step"]
    planned = -(-budget // per_iteration)
    if iteration > planned:
        raise CheckpointError(
            f"{path / 'manifest.json'}: iteration {iteration} is past the run's end: its budget of {budget} env "
            f"steps at {per_iteration} per iteration is {planned} iteration(s) (controller.json's config)"
        )
    if env_step != iteration * per_iteration:
        raise CheckpointError(
            f"{path / 'manifest.json'}: env_step {env_step} is not iteration {iteration} x {per_iteration} env "
            f"steps per iteration (controller.json's config) = {iteration * per_iteration}"
        )


def steps_per_iteration(config: dict[str, Any], services: list[str], learner: str) -> int | None:
    """Env steps per iteration of a recorded run config: ``algo.num_steps x env.num_envs x`` the
    checkpoint's env-runners (as resuming counts them); None if the config does not say."""
    algo, env = config.get("algo"), config.get("env")
    num_steps = algo.get("num_steps") if isinstance(algo, dict) else None
    num_envs = env.get("num_envs") if isinstance(env, dict) else None
    runners = sum(1 for s in services if s != learner and s.startswith("envrunner"))
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (num_steps, num_envs, runners)):
        return None
    return num_steps * num_envs * runners  # type: ignore[operator]  # ints, checked above


def recorded_budget(config: dict[str, Any], learner_meta: dict[str, Any]) -> int | None:
    """The run's budget at the checkpoint: the larger of its config's ``run.total_env_steps`` and the
    learner's (a live patch may have moved it); None if the config does not say."""
    run = config.get("run")
    found = [
        v
        for v in (
            run.get("total_env_steps") if isinstance(run, dict) else None,
            (learner_meta.get("tunables") or {}).get("run.total_env_steps")
            if isinstance(learner_meta.get("tunables"), dict)
            else None,
        )
        if isinstance(v, int) and not isinstance(v, bool) and v > 0
    ]
    return max(found) if found and isinstance(run, dict) and "total_env_steps" in run else None


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
        if not isinstance(meta, dict):
            raise CheckpointError(f"{path / (service + '.json')}: not a JSON object")
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


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one line (torch's span several), bounded."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_problem(arrays: dict[str, np.ndarray], meta: dict[str, Any], algorithm: Any) -> str:
    """Load the learner's saved state into ``algorithm`` (built from the run's config): '' when it loaded,
    else why not, naming the array that does not fit (the algorithm checks it all before it loads
    anything). The one way every reader loads it: evaluate, inspect, a resuming learner."""
    try:
        algorithm.load_state(arrays, meta)
    except NotImplementedError:
        raise
    except (KeyError, ValueError, RuntimeError, TypeError, IndexError, AttributeError) as exc:
        return f"does not fit the run's model: {one_line(exc)}"
    return ""


def load_state(path: Path, part: Part, algorithm: Any) -> None:
    """``load_problem``, as CheckpointError naming the checkpoint's file."""
    problem = load_problem(part.arrays, part.meta, algorithm)
    if problem:
        raise CheckpointError(f"{path / (part.service + '.npz')}: {problem}")


def check_model(path: Path, controller: dict[str, Any], parts: dict[str, Part], plugins: tuple[str, ...] = ()) -> str:
    """Build the model the checkpoint's config describes (its env's spaces, its algorithm) and load the
    learner's state into it: CheckpointError if it does not fit. '' when checked, else why it was not
    (no run config recorded, or a plugin not imported: a checkpoint never makes this import one)."""
    from dynamicrl.core.algorithms import get_algorithm, load_class
    from dynamicrl.core.envs import make_env
    from dynamicrl.core.settings import ConfigError, PluginError, config_from_dict, plugins_text

    data = controller.get("config")
    if not (isinstance(data, dict) and isinstance(data.get("algo"), dict) and isinstance(data.get("env"), dict)):
        return "controller.json records no run config"
    try:
        config = config_from_dict(data, origin=str(path / "controller.json"), imported=plugins)
    except PluginError as exc:
        return f"trained with plugin(s) {plugins_text(exc.missing)[1:-1]}, never imported from a checkpoint"
    except (ConfigError, KeyError) as exc:
        raise CheckpointError(f"{path / 'controller.json'}: no usable run config: {one_line(exc)}") from None
    learner = policy_part(path, parts)
    try:
        env = make_env(config.env)
    except Exception as exc:  # an env that cannot be made here (not installed): the model is not checked
        return f"its env {config.env.id} cannot be made here: {one_line(exc, 120)}"
    try:
        algorithm = load_class(get_algorithm(config.algo.name).learner)(
            config.algo, env.observation_space, env.action_space, seed=config.run.seed, num_iterations=1
        )
    finally:
        env.close()
    try:
        load_state(path, learner, algorithm)
    except NotImplementedError as exc:
        return one_line(exc)
    return ""
