"""Patches: validate a change whole, send each owner its part, journal what they apply.

The data (patches in flight, the ``patches.jsonl`` journal, a journal to replay) is
``patches.py``; this is the controller's side: ``PatchRequest`` -> ``ApplyPatch`` to each owner
-> ``PatchApplied`` from each -> journaled, published on ``control.patch``, and ``PatchReply`` to
the requests still waiting once every owner has applied its part (or ``pending`` when that takes
longer than ``timing.patch_wait_s``).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from dynamicrl.core import tunables
from dynamicrl.protocol.messages import (
    ApplyPatch,
    ErrorCode,
    ErrorReply,
    Health,
    LogicalTime,
    Message,
    PatchApplied,
    PatchEvent,
    PatchReply,
    PatchRequest,
    PatchStatus,
    RunState,
)
from dynamicrl.protocol.sockets import Routed

from .defer import DEFER, Defer
from .members import cut, quote, refuse
from .patches import Journal, PendingPatch, load_replay, new_id

if TYPE_CHECKING:
    from .app import Controller

log = logging.getLogger(__name__)


class Patching:
    def __init__(self, controller: Controller, journal_entries: int | None) -> None:
        """``journal_entries``: on resume, how many journal lines the checkpoint had seen (the rest go)."""
        self.controller = controller
        self.patches: dict[str, PendingPatch] = {}
        self.journal = Journal(controller.run_dir / "patches.jsonl", keep=journal_entries)
        config = controller.config
        self.replay = load_replay(config.patches, config) if config.patches and not config.resume else {}

    def expect_replay(self) -> None:
        """At the start: track the replayed patches, and on resume those still queued in the members' saved
        state, like any other, so their applications are accepted and journaled."""
        queued = {
            service: [ApplyPatch.model_validate(p) for p in part.meta.get("pending_patches", [])]
            for service, part in self.controller.restore.items()
        }
        for plan in (self.replay, queued):
            for service, scheduled in plan.items():
                for patch in scheduled:
                    pending = self.patches.setdefault(patch.patch_id, PendingPatch(patch.patch_id, patch.author, {}))
                    pending.owed.setdefault(service, set()).update(patch.changes)

    def on_patch(self, routed: Routed[PatchRequest]) -> Message | Defer:
        controller = self.controller
        request: PatchRequest = routed.received.message
        if controller.state not in (RunState.RUNNING, RunState.PAUSING, RunState.PAUSED):
            return ErrorReply(code=ErrorCode.CONFLICT, message=f"cannot patch: the run is {controller.state.value}")
        try:
            new_config, diff = tunables.validate(controller.config, request.changes)
        except tunables.PatchError as exc:
            return ErrorReply(code=ErrorCode.REJECTED, message=str(exc), problems=exc.problems)
        if "run.total_env_steps" in diff:
            budget = diff["run.total_env_steps"][1]
            problem = self.behind(budget)
            if problem:
                said = f"run.total_env_steps={budget!r}: {problem}"
                return ErrorReply(
                    code=ErrorCode.REJECTED,
                    message=f"patch rejected, nothing changed:\n  {said}",
                    problems={"run.total_env_steps": said},
                )
        specs, now = tunables.specs(controller.config), time.monotonic()
        counted = controller.roster.counted(now, controller.config.timing.missing_after_s)
        owed: dict[str, set[str]] = {}
        for name in diff:
            owners = [m for m in counted if m.role is specs[name].owner]
            if not owners:
                return ErrorReply(
                    code=ErrorCode.REJECTED,
                    message=f"patch rejected, nothing changed: {name} belongs to the "
                    f"{specs[name].owner.value}, and none is in the run",
                )
            for owner in owners:
                health = owner.health(now, controller.config.timing.missing_after_s)
                if health is not Health.OK:
                    return ErrorReply(
                        code=ErrorCode.REJECTED,
                        message=f"patch rejected, nothing changed: {owner.name} ({name}) is "
                        f"{health.value}, last seen {now - owner.last_seen:.1f} s ago",
                    )
                owed.setdefault(owner.name, set()).add(name)
        controller.config = new_config
        author = request.author or routed.received.envelope.sender
        pending = PendingPatch(new_id(), author, owed, deadline=now + controller.config.timing.patch_wait_s)
        self.patches[pending.patch_id] = pending
        at = LogicalTime(iteration=request.at_iteration, env_step=0) if request.at_iteration is not None else None
        for member in counted:
            if member.name in owed:
                controller.membership.send(
                    member,
                    ApplyPatch(
                        patch_id=pending.patch_id,
                        author=author,
                        at=at,
                        changes={name: diff[name][1] for name in owed[member.name]},
                    ),
                )
        log.info(
            "patch %s by %s accepted: %s",
            pending.patch_id,
            author,
            ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in diff.items()),
        )
        if at is not None:
            status = PatchStatus.SCHEDULED
        elif controller.state is not RunState.RUNNING:
            status = PatchStatus.ON_RESUME
        elif request.wait:
            pending.waiters.append(routed.received.envelope.id)
            return DEFER
        else:
            status = PatchStatus.PENDING
        return PatchReply(patch_id=pending.patch_id, status=status)

    def behind(self, budget: int) -> str:
        """Why ``budget`` is not past the run's progress ('' if it is). The latest ``metrics.train`` may lag
        the learner by an update; a budget it has passed by then ends the run at the next boundary."""
        metrics = self.controller.last_metrics
        at = (
            LogicalTime(iteration=metrics.iteration, env_step=metrics.env_steps)
            if metrics is not None
            else self.controller.resumed_from
        )
        return tunables.budget_problem(budget, at.iteration, at.env_step) if at is not None else ""

    def on_patch_applied(self, routed: Routed[PatchApplied]) -> None:
        """Journaled only from an owner the patch was sent to, for a patch in flight, naming only what that
        owner still owes, with values the patch's own validation takes; anything else is refused."""
        controller = self.controller
        message: PatchApplied = routed.received.message
        problem = self.applied_problem(routed)
        if problem:
            refuse(routed, f"patch_id={quote(message.patch_id)}: {problem}")
            return None
        pending = self.patches[message.patch_id]
        if message.changes:  # a replayed or resumed patch was never validated here: keep `params` true to what runs
            controller.config, _ = tunables.validate(
                controller.config, {k: new for k, (_, new) in message.changes.items()}
            )
        entry = self.journal.record(pending, message)
        controller.bus.publish(PatchEvent(entry=entry), ltime=message.position.ltime)
        pending.applied.append(entry)
        pending.owed.get(message.position.service, set()).difference_update(message.changes)
        if pending.done:
            self.answer_patch(pending, PatchStatus.APPLIED)
            del self.patches[pending.patch_id]
        return None

    def applied_problem(self, routed: Routed[PatchApplied]) -> str:
        """Why this PatchApplied cannot be journaled ('' when it can); nothing is changed."""
        message: PatchApplied = routed.received.message
        member = self.controller.roster.sender(routed)
        pending = self.patches.get(message.patch_id)
        if member is None:
            return "not from a member of the run"
        if message.position.service != member.name:
            return f"position.service={quote(message.position.service)} but the sender is {member.name}"
        if pending is None:
            return "no such patch in flight"
        owed = pending.owed.get(member.name)
        if owed is None:
            return f"the patch was not sent to {member.name}"
        unowed = sorted(set(message.changes) - owed)
        if unowed:
            return f"changes: {cut(', '.join(unowed))} not owed by {member.name}"
        try:  # an owner that refused the patch reports no change (nothing to validate)
            for values in (
                {k: new for k, (_, new) in message.changes.items()},
                {k: old for k, (old, _) in message.changes.items()},
            ):
                if values:  # the old values too: each is one the owner ran with
                    tunables.validate(self.controller.config, values)
        except tunables.PatchError as exc:
            return f"changes: {cut(' '.join(str(exc).split()), 200)}"
        return ""

    def answer_overdue(self, now: float) -> None:
        """Requests that waited ``timing.patch_wait_s`` get ``pending``; the patch still applies."""
        for pending in [p for p in self.patches.values() if p.waiters and now > p.deadline]:
            self.answer_patch(pending, PatchStatus.PENDING)

    def answer_patch(self, pending: PendingPatch, status: PatchStatus) -> None:
        reply = PatchReply(patch_id=pending.patch_id, status=status, applied=list(pending.applied))
        for request_id in pending.waiters:
            self.controller.answer(request_id, reply)
        pending.waiters = []
