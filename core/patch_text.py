"""A patch application as one readable line, the same in every log, the console and `history`:
``patch 3 by cli@root: ppo.lr 0.0025 -> 0.0001 at iteration 34, env step 8704, minibatch 6 (learner.1)``."""

from __future__ import annotations

from collections.abc import Mapping

from dynamicrl.protocol.messages import JournalEntry, ParamValue, Position, ValueChange


def patch_line(
    patch_id: str,
    author: str,
    changes: Mapping[str, ValueChange | tuple[ParamValue, ParamValue]],
    position: Position,
) -> str:
    pairs = [(c.old, c.new) if isinstance(c, ValueChange) else c for c in changes.values()]
    what = ", ".join(f"{name} {old!r} -> {new!r}" for name, (old, new) in zip(changes, pairs)) or "no change"
    where = f"iteration {position.ltime.iteration}, env step {position.ltime.env_step}"
    if position.minibatch is not None:
        where += f", minibatch {position.minibatch}"
    return f"patch {patch_id} by {author}: {what} at {where} ({position.service})"


def entry_line(entry: JournalEntry) -> str:
    """``patch_line`` of a journal entry (``patches.jsonl``, ``control.patch``, ``history``)."""
    position = Position(service=entry.service, ltime=entry.ltime, minibatch=entry.minibatch)
    return patch_line(entry.patch_id, entry.author, entry.changes, position)
