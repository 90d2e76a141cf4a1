"""Patches in flight and the journal of applied ones (``patches.jsonl``).

A patch is validated whole by the controller, split by owner, and applied
by each owner at its apply point; every application is one journal line
(who, what, old -> new, logical time), appended and fsynced before it is
published, so the journal is the authority a replay reads.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from dynamicrl.core import tunables
from dynamicrl.core.settings import Config
from dynamicrl.protocol.messages import ApplyPatch, JournalEntry, LogicalTime, PatchApplied, ValueChange


@dataclass
class PendingPatch:
    patch_id: str
    author: str
    owed: dict[str, set[str]]  # service -> names it still has to apply
    waiters: list[str] = field(default_factory=list)  # request ids awaiting the reply
    applied: list[JournalEntry] = field(default_factory=list)
    deadline: float = 0.0

    @property
    def done(self) -> bool:
        return not any(self.owed.values())


def new_id() -> str:
    """A fresh patch or checkpoint id: 12 hex digits, unique enough within one run."""
    return uuid.uuid4().hex[:12]


class Journal:
    """``patches.jsonl``; on resume only the entries the checkpoint had seen are kept."""

    def __init__(self, path: Path, keep: int | None = None) -> None:
        self.path = path
        self.entries: list[JournalEntry] = []
        if keep is not None and path.exists():
            lines = [line for line in path.read_text().splitlines() if line.strip()][:keep]
            self.entries = [JournalEntry.model_validate_json(line) for line in lines]
            tmp = path.with_suffix(".tmp")
            tmp.write_text("".join(line + "\n" for line in lines))
            os.replace(tmp, path)

    def record(self, pending: PendingPatch, message: PatchApplied) -> JournalEntry:
        entry = JournalEntry(
            patch_id=message.patch_id,
            author=pending.author,
            service=message.position.service,
            changes={name: ValueChange(old=old, new=new) for name, (old, new) in message.changes.items()},
            ltime=message.position.ltime,
            minibatch=message.position.minibatch,
            time=round(time.time(), 3),
        )
        with self.path.open("a") as f:
            f.write(entry.model_dump_json() + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.entries.append(entry)
        return entry


def load_replay(path: str, config: Config) -> dict[str, list[ApplyPatch]]:
    """A journal to replay, as each service's patches at their exact logical times.

    Every entry must be one a run of ``config`` could have journaled: known hyperparameters, valid
    values. Raises ValueError naming the file and line of the first bad entry, so a run never
    starts with a replay it would only partly apply.
    """
    schedule: dict[str, list[ApplyPatch]] = {}
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"patches={path}: cannot read: {str(exc)[:200]}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = JournalEntry.model_validate_json(line)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "the line"
            raise ValueError(f"{path}:{number}: not a journal entry: {where[:100]}: {first['msg']}") from None
        try:
            tunables.validate(config, {name: change.new for name, change in entry.changes.items()})
        except tunables.PatchError as exc:
            problems = "; ".join(exc.problems.values()) or str(exc)
            raise ValueError(f"{path}:{number}: cannot be replayed: {problems[:300]}") from None
        schedule.setdefault(entry.service, []).append(
            ApplyPatch(
                patch_id=entry.patch_id,
                author=f"replay:{entry.author}",
                changes={name: change.new for name, change in entry.changes.items()},
                at=LogicalTime(iteration=entry.ltime.iteration, env_step=entry.ltime.env_step),
                at_minibatch=entry.minibatch,
            )
        )
    return schedule
