"""Fixtures shared by the integration tests."""

import pytest
from helpers import start_controller
from helpers_members import FakeRun

from dynamicrl.protocol import security


@pytest.fixture
def ctx():
    """A ZeroMQ context of the test's own, terminated after it (sockets must be closed by then)."""
    context = security.context()
    yield context
    context.term()


@pytest.fixture(scope="module")
def controller(tmp_path_factory):
    """A real controller process (and its bus) for the tests of one module, stopped by pid after them."""
    with start_controller(tmp_path_factory.mktemp("controller")) as running:
        yield running


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real controller whose learner, env-runner and logger the test plays (``FakeRun``), running,
    for the tests of one module; stopped by pid after them."""
    fake = FakeRun(tmp_path_factory.mktemp("fake-run"))
    yield fake
    fake.close()
