"""Fixtures shared by the end-to-end tests."""

import pytest
from helpers import Run


@pytest.fixture
def runs(tmp_path):
    """Make runs for one test: ``runs(name, overrides, **options)`` is ``Run(tmp_path / name, ...)``
    (not started); every process each one started is stopped by pid at the end (bounded)."""
    made: list[Run] = []

    def make(name: str, overrides=(), **options) -> Run:
        made.append(Run(tmp_path / name, overrides, **options))
        return made[-1]

    yield make
    for run in made:
        run.close()
