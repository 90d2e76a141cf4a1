"""Drift guard: the published docs name every message, enum value and CLI command the code has.

docs/protocol.md is the contract for third parties and docs/cli.md the command reference; both
are written by hand. These tests fail as soon as a message type, an enum value or a `dynamicrl`
command is added (or renamed) without being documented, when the README or a docs page shows a
command that does not exist, or when a docs page is left out of the site's nav (mkdocs.yml).
"""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path

import click
import pytest
import yaml

from dynamicrl.clients.cli import main as cli
from dynamicrl.protocol.messages import MESSAGE_TYPES, ErrorCode, Health, PatchStatus, Role, RunState

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PROTOCOL_DOC = DOCS / "protocol.md"
CLI_DOC = DOCS / "cli.md"
README = ROOT / "README.md"
#: every hand-written page that may show a command (the README and every docs page)
PAGES = [README, ROOT / "CONTRIBUTING.md", *sorted(DOCS.rglob("*.md"))]
#: every top-level command by name (the group imports each from its module when asked)
COMMANDS = {name: cli.get_command(click.Context(cli), name) for name in cli.list_commands(click.Context(cli))}


@pytest.fixture(scope="module")
def protocol_doc() -> str:
    return PROTOCOL_DOC.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def cli_doc() -> str:
    return CLI_DOC.read_text(encoding="utf-8")


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


def _commands() -> list[str]:
    """Every command line the CLI has, subcommands included: "status", "protocol schema", ..."""
    found: list[str] = []
    for name, command in COMMANDS.items():
        found.append(name)
        if isinstance(command, click.Group):
            found += [f"{name} {sub}" for sub in command.commands]
    return sorted(found)


@pytest.mark.parametrize("command", _commands())
def test_every_cli_command_is_in_the_cli_doc(cli_doc: str, command: str) -> None:
    assert f"dynamicrl {command}" in cli_doc, f"docs/cli.md never shows `dynamicrl {command}`"
    section = re.compile(rf"^#+ .*`dynamicrl {re.escape(command.split()[0])}(?![\w-])", re.MULTILINE)
    page = cli_doc + (DOCS / "checkpoints.md").read_text(encoding="utf-8")
    assert section.search(page), f"no section of docs/cli.md or docs/checkpoints.md is headed `dynamicrl {command}`"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_the_docs_show_exists(page: Path) -> None:
    # a renamed or removed command must not live on in the README or a docs page
    if not page.is_file():
        pytest.skip(f"{page.relative_to(ROOT)} does not exist")
    shown = set(re.findall(r"\bdynamicrl ([a-z][a-z-]*)", page.read_text(encoding="utf-8")))
    unknown = sorted(shown - set(COMMANDS))
    assert not unknown, f"{page.relative_to(ROOT)} shows commands the CLI does not have: {unknown}"


def test_every_docs_page_is_in_the_site_nav() -> None:
    def pages(nav: object) -> list[str]:
        if isinstance(nav, str):
            return [nav]
        if isinstance(nav, dict):
            return [p for value in nav.values() for p in pages(value)]
        return [p for item in nav for p in pages(item)] if isinstance(nav, list) else []

    nav = pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"])
    on_disk = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(nav) == on_disk, "mkdocs.yml's nav must list every page under docs/, once"


def test_the_guard_sees_the_whole_contract() -> None:
    # a refactor that empties these tables would make the tests above pass vacuously
    assert len(MESSAGE_TYPES) >= 33
    assert {"status", "pause", "resume", "params", "patch", "history"} <= set(COMMANDS)
    assert {"protocol schema", "provider mock-bci", "rule engagement"} <= set(_commands())
