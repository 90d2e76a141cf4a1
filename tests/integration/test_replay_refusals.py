"""A journal to replay that a run could not have written refuses to start the run: one line naming
the file and line, exit 2, no traceback (it used to start anyway, exit 0, and apply part of it)."""

from __future__ import annotations

import json

import pytest
from helpers import base_overrides, free_ports, log_text, start_service, stop, wait_exit

ENTRY = {
    "patch_id": "p1",
    "author": "cli",
    "service": "learner.1",
    "changes": {"ppo.lr": {"old": 0.0025, "new": 0.001}},
    "ltime": {"iteration": 3, "env_step": 768},
    "minibatch": None,
    "time": 0.0,
}


def _line(**changes) -> str:
    return json.dumps({**ENTRY, **changes})


@pytest.mark.parametrize(
    ("second", "said"),
    [
        (_line(changes={"ppo.lr": {"old": 0.0025, "new": -1.0}}), "journal.jsonl:2: cannot be replayed: ppo.lr=-1.0"),
        (_line(changes={"ppo.bogus": {"old": 1, "new": 2}}), "journal.jsonl:2: cannot be replayed: ppo.bogus=2"),
        ('{"patch_id": "p2"}', "journal.jsonl:2: not a journal entry"),
        (b"\xff\xfe\x00garbage", "cannot read"),
    ],
    ids=["invalid value", "unknown name", "not an entry", "binary garbage"],
)
def test_a_journal_that_cannot_be_replayed_refuses_to_start(tmp_path, second, said):
    journal = tmp_path / "journal.jsonl"
    first = (_line() + "\n").encode()
    journal.write_bytes(first + (second if isinstance(second, bytes) else second.encode()) + b"\n")
    controller = start_service("controller", [*base_overrides(tmp_path, free_ports(4)), f"patches={journal}"], tmp_path)
    try:
        assert wait_exit([controller], timeout=30), log_text(controller)
        text = log_text(controller)
        assert controller.returncode == 2, text
        assert said in text and "Traceback" not in text, text
        assert len([line for line in text.splitlines() if line.strip()]) == 1, text
    finally:
        stop(controller)
