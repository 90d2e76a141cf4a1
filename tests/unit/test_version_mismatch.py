"""A message of another major protocol version raises ProtocolVersionMismatch (a ProtocolError)."""

from __future__ import annotations

import msgpack
import pytest

from dynamicrl.protocol import PROTOCOL_VERSION
from dynamicrl.protocol.codec import ProtocolError, ProtocolVersionMismatch, Session, decode
from dynamicrl.protocol.messages import StatusRequest


def _with(**changes) -> list[bytes]:
    topic, payload = (bytes(f) for f in Session("version-test").encode(StatusRequest()))
    raw = msgpack.unpackb(payload)
    raw.update(changes)
    raw = {k: v for k, v in raw.items() if v is not _DROP}
    return [topic, msgpack.packb(raw)]


_DROP = object()


@pytest.mark.parametrize("version", ["2.0", "0.1", "10.3", "2"])
def test_another_major_version_is_a_mismatch(version: str) -> None:
    with pytest.raises(ProtocolVersionMismatch) as caught:
        decode(_with(v=version))
    error = caught.value
    assert isinstance(error, ProtocolError)
    assert error.version == version and error.expected == PROTOCOL_VERSION
    assert error.sender == "version-test"
    assert f"version {version!r}" in str(error) and "version-test" in str(error)


@pytest.mark.parametrize("version", [1, None, "one.1", ""])
def test_a_broken_version_is_plain_garbage(version) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode(_with(v=version))
    assert not isinstance(caught.value, ProtocolVersionMismatch)
    assert f"version {version!r}" in str(caught.value)


def test_same_major_other_minor_is_accepted() -> None:
    major = PROTOCOL_VERSION.split(".")[0]
    assert isinstance(decode(_with(v=f"{major}.99")).message, StatusRequest)
