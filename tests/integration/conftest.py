"""Fixtures shared by the integration tests."""

import pytest
import zmq


@pytest.fixture
def ctx():
    """A ZeroMQ context of the test's own, terminated after it (sockets must be closed by then)."""
    context = zmq.Context()
    yield context
    context.term()
