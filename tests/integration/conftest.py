"""Fixtures shared by the integration tests."""

import pytest
import zmq
from helpers import start_controller


@pytest.fixture
def ctx():
    """A ZeroMQ context of the test's own, terminated after it (sockets must be closed by then)."""
    context = zmq.Context()
    yield context
    context.term()


@pytest.fixture(scope="module")
def controller(tmp_path_factory):
    """A real controller process (and its bus) for the tests of one module, stopped by pid after them."""
    with start_controller(tmp_path_factory.mktemp("controller")) as running:
        yield running
