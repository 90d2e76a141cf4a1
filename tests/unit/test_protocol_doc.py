"""Drift guard: the published docs name every message, enum value and CLI command the code has.

docs/protocol.md is the contract for third parties and README.md the user's manual; both are
written by hand. These tests fail as soon as a message type, an enum value or a `dynamicrl`
command is added (or renamed) without being documented.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import pytest

from dynamicrl.clients.cli import main as cli
from dynamicrl.protocol.messages import MESSAGE_TYPES, ErrorCode, Health, PatchStatus, Role, RunState

ROOT = Path(__file__).resolve().parents[2]
PROTOCOL_DOC = ROOT / "docs" / "protocol.md"
README = ROOT / "README.md"


@pytest.fixture(scope="module")
def protocol_doc() -> str:
    return PROTOCOL_DOC.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def readme() -> str:
    return README.read_text(encoding="utf-8")


@pytest.mark.parametrize("type_name", sorted(MESSAGE_TYPES))
def test_every_message_type_is_documented(protocol_doc: str, type_name: str) -> None:
    cls = MESSAGE_TYPES[type_name]
    assert f"`{type_name}`" in protocol_doc, f"docs/protocol.md does not mention the type `{type_name}`"
    assert cls.__name__ in protocol_doc, f"docs/protocol.md does not mention the class {cls.__name__}"
    heading = f"#### `{type_name}` ({cls.__name__})"
    assert heading in protocol_doc, f"docs/protocol.md has no section {heading!r}"


def _enum_values() -> list[tuple[str, str]]:
    enums: tuple[type[Enum], ...] = (RunState, ErrorCode, PatchStatus, Health, Role)
    return [(enum.__name__, member.value) for enum in enums for member in enum]


@pytest.mark.parametrize(("enum_name", "value"), _enum_values(), ids=lambda v: str(v))
def test_every_enum_value_is_documented(protocol_doc: str, enum_name: str, value: str) -> None:
    # values travel as strings; the doc quotes them as on the wire, e.g. "pausing"
    assert f'"{value}"' in protocol_doc, f'docs/protocol.md does not list {enum_name} value "{value}"'


@pytest.mark.parametrize("command", sorted(cli.commands))
def test_every_cli_command_is_in_the_readme(readme: str, command: str) -> None:
    assert f"dynamicrl {command}" in readme, f"README.md never shows `dynamicrl {command}`"


def test_the_guard_sees_the_whole_contract() -> None:
    # a refactor that empties these tables would make the tests above pass vacuously
    assert len(MESSAGE_TYPES) >= 33
    assert {"status", "pause", "resume", "params", "patch", "history"} <= set(cli.commands)
