"""Checkpoints: collect every member's state at one iteration boundary, write it, release the learner.

The files (layout, atomic write, verification) are ``checkpoints.py``; this is the controller's
side: ``CheckpointRequest`` (or the learner's own, every N iterations and at the end) ->
``CheckpointCommand`` to the learner -> its ``CheckpointPart`` names the boundary ->
``CheckpointCommand`` to every env-runner -> their parts -> written -> ``CheckpointDone`` to the
learner (which holds its weights until then) and ``CheckpointReply`` to the requests. Also
reading a checkpoint back when the run resumes.

A paused run stands where no checkpoint can be taken (the learner may be mid-update, the
env-runners mid-rollout): a request then is answered ``scheduled`` at once and the checkpoint is
begun when the run goes on, at its first iteration boundary (a stop resumes the run for it).
Each checkpoint records its kind (``core/checkpoints.py``): only periodic ones rotate.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dynamicrl.core import checkpoints
from dynamicrl.core.settings import Config, ConfigError, config_from_dict, missing_plugins, plugins_text
from dynamicrl.protocol.messages import (
    CheckpointCommand,
    CheckpointDone,
    CheckpointPart,
    CheckpointReply,
    CheckpointRequest,
    CheckpointSaved,
    ErrorCode,
    ErrorReply,
    LogicalTime,
    Message,
    Role,
    RunState,
    SavedCheckpoint,
    StopReply,
)
from dynamicrl.protocol.sockets import Routed

from .defer import DEFER, Defer
from .members import Roster, cut, quote, refuse
from .patches import new_id

if TYPE_CHECKING:
    from .app import Controller

log = logging.getLogger(__name__)


KIND_PRECEDENCE = (checkpoints.PERIODIC, checkpoints.END, checkpoints.STOP, checkpoints.MANUAL)


def learner_kind(ckpt_id: str) -> str:
    """The kind of a checkpoint the learner takes on its own: its id is ``periodic-<k>`` or ``end-<k>``."""
    return checkpoints.END if ckpt_id.startswith(checkpoints.END + "-") else checkpoints.PERIODIC


@dataclass
class CheckpointInProgress:
    ckpt_id: str
    waiters: list[str] = field(default_factory=list)
    parts: dict = field(default_factory=dict)  # service -> CheckpointPart
    learner: str | None = None
    learner_ckpt_id: str | None = None  # the id the learner holds for
    asked: set[str] = field(default_factory=set)  # env-runners sent CheckpointCommand for it
    boundary: int | None = None
    env_step: int = 0
    stop_waiters: list[str] = field(default_factory=list)  # `dynamicrl stop` requests to answer
    stop_reason: str | None = None  # set: the run stops when this checkpoint ends
    kind: str = checkpoints.PERIODIC
    started: float = field(default_factory=time.monotonic)

    def also(self, kind: str) -> None:
        """One checkpoint serves several askers: it takes the kind that keeps it longest (manual first)."""
        if KIND_PRECEDENCE.index(kind) > KIND_PRECEDENCE.index(self.kind):
            self.kind = kind

    def missing(self, roster: Roster) -> list[str]:
        expected = [m.name for m in roster.active() if m.role in (Role.LEARNER, Role.ENVRUNNER)]
        return [name for name in expected if name not in self.parts]


@dataclass
class Resume:
    """What a resumed run takes from its latest good checkpoint."""

    config: Config
    run_dir: Path
    run_id: str
    path: Path  # the checkpoint
    parts: dict[str, checkpoints.Part]  # every member's saved state, by service
    ltime: LogicalTime
    journal_entries: int  # journal lines the checkpoint had seen


def load_resume(run_dir: Path, config: Config) -> Resume:
    """Take config, run id and every member's state from the run's latest good checkpoint.

    Only ``addresses`` and ``timing`` stay those of ``config`` (this controller's), and its
    ``resume_total_env_steps``, if set, becomes the run's budget: a run can train longer, not shorter.
    ``plugins`` too are ``config``'s, the ones this process imported from its own config and command line:
    a checkpoint's are never imported; one it names that ``config`` lacks is a ConfigError naming it.
    """
    path = checkpoints.latest_good(run_dir / "checkpoints", report=log.warning)
    manifest, controller, parts = checkpoints.read(path)
    data = controller["config"]
    missing = missing_plugins(data, config.plugins)
    if missing:
        wanted = plugins_text(missing)
        raise ConfigError(
            f"{path}: this checkpoint was trained with plugin(s) {wanted[1:-1]}, which are never imported from "
            f"a checkpoint: pass plugins={wanted} (dynamicrl resume-run {run_dir} plugins={wanted})"
        )
    data["plugins"] = list(config.plugins)
    data.update(
        addresses=config.addresses.model_dump(),
        resume=str(run_dir),
        timing=config.timing.model_dump(),
        resume_total_env_steps=config.resume_total_env_steps,
    )
    if config.resume_total_env_steps is not None:
        checkpoints.check_budget(config.resume_total_env_steps, manifest, path)
        data["run"]["total_env_steps"] = config.resume_total_env_steps
        for part in parts.values():  # members restore the tunables they saved: the budget is one of them
            saved = part.meta.get("tunables", {})
            if "run.total_env_steps" in saved:
                saved["run.total_env_steps"] = config.resume_total_env_steps
    data["run"].update(
        dir=str(run_dir), envrunners=sum(1 for s in parts if s != controller["learner"] and s.startswith("envrunner"))
    )
    resume = Resume(
        config_from_dict(data, origin=str(path / "controller.json"), imported=config.plugins),
        run_dir,
        controller["run_id"],
        path,
        parts,
        LogicalTime(iteration=manifest["iteration"], env_step=manifest["env_step"]),
        controller["journal_entries"],
    )
    log.info(
        "resuming run %s from %s (iteration %d, %d env steps)%s",
        resume.run_id,
        path,
        manifest["iteration"],
        manifest["env_step"],
        "" if config.resume_total_env_steps is None else f", on to {config.resume_total_env_steps} env steps",
    )
    return resume


def part_problem(part: CheckpointPart, role: Role) -> str:
    """Why a part cannot be written ('' when it can): its meta must be plain JSON, and the learner's must
    name its boundary (``iteration``, ``env_steps``; ``boundary`` in overlap mode)."""
    problem = checkpoints.json_problem(part.meta)
    if problem:
        return f"meta: {problem}"
    if role is Role.LEARNER:
        for key in ("iteration", "env_steps", *(["boundary"] if "boundary" in part.meta else [])):
            value = part.meta.get(key)
            if type(value) is not int or value < 0:
                return f"meta.{key}={quote(value)}: not a count"
    return ""


class Checkpointing:
    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.checkpoint: CheckpointInProgress | None = None  # one at a time
        self.scheduled = False  # asked for while paused: begun when the run goes on

    def ask_learner(self, kind: str) -> CheckpointInProgress | None:
        """Begin a checkpoint: the learner picks the boundary (its next one) and sends its part first.
        None when the learner cannot be reached (killed a moment ago: not yet missing, but gone)."""
        learner = self.controller.roster.active(Role.LEARNER)[0]
        checkpoint = CheckpointInProgress(new_id(), kind=kind)
        if not self.controller.membership.send(learner, CheckpointCommand(ckpt_id=checkpoint.ckpt_id)):
            return None
        self.checkpoint = checkpoint
        return checkpoint

    def on_checkpoint(self, routed: Routed[CheckpointRequest]) -> Message | Defer:
        controller = self.controller
        request_id = routed.received.envelope.id
        if controller.state in (RunState.PAUSED, RunState.PAUSING):
            self.scheduled = True
            log.info("checkpoint scheduled: taken at the first iteration boundary after resume")
            return CheckpointReply(scheduled=True)
        if self.checkpoint is not None:
            self.checkpoint.also(checkpoints.MANUAL)
            self.checkpoint.waiters.append(request_id)
            return DEFER
        if controller.state is not RunState.RUNNING:
            return ErrorReply(
                code=ErrorCode.CONFLICT, message=f"cannot checkpoint: the run is {controller.state.value}"
            )
        checkpoint = self.ask_learner(checkpoints.MANUAL)
        if checkpoint is None:
            return ErrorReply(code=ErrorCode.CONFLICT, message="cannot checkpoint: the learner cannot be reached")
        checkpoint.waiters.append(request_id)
        return DEFER

    def take_scheduled(self) -> None:
        """The run goes on: begin the checkpoint asked for while it was paused (once the one in progress,
        held at the boundary the learner stood at, has ended: then it is the next boundary)."""
        if not self.scheduled or self.checkpoint is not None:
            return
        self.scheduled = False
        if self.ask_learner(checkpoints.MANUAL) is None:
            log.error("the checkpoint asked for while paused is not taken: the learner cannot be reached")

    def for_stop(self, reason: str) -> CheckpointInProgress | None:
        """The checkpoint a stop waits for: the one in progress, the one scheduled while paused (the run
        is resumed for it), or a new one; None when the learner cannot be reached."""
        if self.scheduled and self.controller.state is RunState.PAUSED:
            self.controller.pausing.release(f"{reason}: resumed for the checkpoint asked for while paused")
        checkpoint = self.checkpoint or self.ask_learner(checkpoints.STOP)
        if checkpoint is not None:
            if self.scheduled:  # one was in progress: the run stops after it, so it serves the request too
                self.scheduled = False
                checkpoint.also(checkpoints.MANUAL)
            checkpoint.also(checkpoints.STOP)
        return checkpoint

    def on_checkpoint_part(self, routed: Routed[CheckpointPart]) -> None:
        """A part counts only from the member it names: the learner (for our request, or its own every N
        iterations and at the end), or an env-runner asked for the checkpoint in progress. A part of the
        checkpoint in progress that cannot be written (its meta does not serialise, the learner's has no
        boundary) abandons it; anything else is refused and changes nothing."""
        controller = self.controller
        part: CheckpointPart = routed.received.message
        member = controller.roster.sender(routed)
        ck = self.checkpoint
        if member is None:
            return refuse(routed, "not from a member of the run")
        if part.service != member.name:
            return refuse(routed, f"service={quote(part.service)} but the sender is {member.name}")
        if member.role is Role.LEARNER:
            if ck is not None and ck.boundary is None:  # our request: its boundary
                if part.ckpt_id != ck.ckpt_id:
                    ck.also(learner_kind(part.ckpt_id))
                    part = part.model_copy(update={"ckpt_id": ck.ckpt_id})
            elif ck is None:  # the learner's own (every N, at the end)
                ck = self.checkpoint = CheckpointInProgress(part.ckpt_id, kind=learner_kind(part.ckpt_id))
            else:
                return refuse(routed, f"ckpt_id={quote(part.ckpt_id)}: the learner's part of {ck.ckpt_id} is in")
        elif ck is None or part.ckpt_id != ck.ckpt_id:
            return refuse(routed, f"ckpt_id={quote(part.ckpt_id)}: no such checkpoint in progress")
        elif member.name not in ck.asked:
            return refuse(routed, f"ckpt_id={quote(part.ckpt_id)}: {member.name} was not asked for a part")
        if "error" in part.meta:
            if member.role is Role.LEARNER:
                ck.learner = None  # it does not hold: nothing to release
            self.finish_checkpoint(error=f"{part.service}: {cut(str(part.meta['error']), 200)}")
            return None
        if member.role is Role.LEARNER:
            ck.learner, ck.learner_ckpt_id = part.service, routed.received.message.ckpt_id  # it holds from now
        problem = part_problem(part, member.role)
        if problem:
            self.finish_checkpoint(error=f"{part.service}: {problem}")
            return None
        ck.parts[part.service] = part
        if member.role is Role.LEARNER:
            ck.boundary, ck.env_step = part.meta["iteration"], part.meta["env_steps"]
            # rollouts sent: one more than the updates when the learner saved unanswered ones (overlap)
            at = part.meta.get("boundary", ck.boundary)
            for runner in controller.roster.active(Role.ENVRUNNER):
                ck.asked.add(runner.name)
                controller.membership.send(runner, CheckpointCommand(ckpt_id=part.ckpt_id, at_iteration=at))
        if not ck.missing(controller.roster):
            self.finish_checkpoint()
        return None

    def abandon_if_overdue(self, now: float) -> None:
        """A part that never comes must not hold the learner (and the run) for ever."""
        timeout_s = self.controller.config.checkpoint.timeout_s
        if self.checkpoint is not None and now - self.checkpoint.started > timeout_s:
            self.finish_checkpoint(
                error=f"not complete after {timeout_s:g} s; no state from "
                f"{', '.join(self.checkpoint.missing(self.controller.roster)) or '?'}"
            )

    def finish_checkpoint(self, error: str = "") -> None:
        """Write the parts (unless it failed), release the learner, answer, and stop if a stop waited for it."""
        controller = self.controller
        ck, self.checkpoint = self.checkpoint, None
        assert ck is not None  # called only while a checkpoint is in progress
        reply: Message
        if not error:
            assert ck.boundary is not None  # set by the learner's part, which every other part follows
            try:
                started = time.monotonic()
                root = controller.run_dir / "checkpoints"
                checkpoints.inside(root, controller.run_dir)  # the controller writes only inside the run directory
                path = checkpoints.write(
                    root,
                    ck.boundary,
                    ck.env_step,
                    [checkpoints.Part(p.service, dict(p.arrays), p.meta) for p in ck.parts.values()],
                    {
                        "run_id": controller.run_id,
                        "config": controller.config.to_dict(),
                        "learner": ck.learner,
                        "journal_entries": len(controller.patching.journal.entries),
                        "iteration": ck.boundary,
                        "env_step": ck.env_step,
                    },
                    keep=controller.config.checkpoint.keep,
                    kind=ck.kind,
                )
                size = sum(f.stat().st_size for f in path.iterdir())
                manifest = checkpoints.verify(path)
                log.info(
                    "checkpoint %s (%s): %d bytes in %.3f s (write), %.3f s since it began (request or boundary)",
                    path,
                    ck.kind,
                    size,
                    time.monotonic() - started,
                    time.monotonic() - ck.started,
                )
                controller.last_checkpoint = SavedCheckpoint(
                    path=str(path),
                    kind=ck.kind,
                    ltime=LogicalTime(iteration=ck.boundary, env_step=ck.env_step),
                    bytes=size,
                    kept=len(checkpoints.complete(path.parent)),
                )
                controller.bus.publish(CheckpointSaved(checkpoint=controller.last_checkpoint))
                reply = CheckpointReply(
                    path=str(path),
                    ltime=LogicalTime(iteration=ck.boundary, env_step=ck.env_step),
                    bytes=size,
                    seconds=round(time.monotonic() - ck.started, 4),
                    policy_sha256=manifest["policy_sha256"],
                )
            except Exception as exc:  # whatever failed, abandon it cleanly: the learner is released below
                error = f"writing failed: {type(exc).__name__}: {cut(str(exc), 300)}"
        if error:
            log.error("checkpoint %s abandoned: %s", ck.ckpt_id, error)
            reply = ErrorReply(
                code=ErrorCode.TIMEOUT if "not complete" in error else ErrorCode.INTERNAL,
                message=f"checkpoint abandoned (the run goes on): {error}",
            )
        learner = controller.roster.members.get(ck.learner or "")
        if learner is not None and ck.learner_ckpt_id:
            controller.membership.send(learner, CheckpointDone(ckpt_id=ck.learner_ckpt_id, ok=not error, message=error))
        for request_id in ck.waiters:
            controller.answer(request_id, reply)
        if ck.stop_reason:
            saved = None if error else str(path)
            for request_id in ck.stop_waiters:
                controller.answer(request_id, StopReply(checkpoint=saved, message=error))
            controller.stopping.begin_stop(ck.stop_reason + (f" after checkpoint {saved}" if saved else f" ({error})"))
        elif controller.state is RunState.RUNNING:
            self.take_scheduled()
