"""`dynamicrl --help` groups its commands, and every command's own --help shows an example."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from dynamicrl.clients.cli import COMMANDS, SECTIONS, main


def test_help_lists_every_command_once_under_its_section():
    out = CliRunner().invoke(main, ["--help"], terminal_width=120).output
    titles = [f"{title}:" for title in SECTIONS]
    assert [line for line in out.splitlines() if line in titles] == titles, out
    listed = []
    for title, section in SECTIONS.items():
        block = out.split(f"{title}:", 1)[1].split("\n\n", 1)[0]
        names = [line.split()[0] for line in block.strip().splitlines()]
        assert names == list(section), block
        listed += names
    assert sorted(listed) == sorted(COMMANDS)  # each once


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_a_summary_and_an_example(name):
    out = CliRunner().invoke(main, [name, "--help"], terminal_width=120).output
    assert "Example: dynamicrl " + name.split()[0] in out, out
