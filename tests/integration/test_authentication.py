"""CURVE against a real controller: who is let in, who is refused, and what is counted and logged.

Each refused peer here is what another user of the machine would be: a socket without CURVE, or
one with a key ring of its own (another server key, or its own client key next to a copy of the
server's public key). A member's key speaks only as that member.
"""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import zmq
from helpers import CLI, base_overrides, controller_status, free_ports, log_text, start_service, user_env, wait_until
from helpers_members import Peer

from dynamicrl.clients.control import ControlClient, RequestTimeout
from dynamicrl.protocol import security
from dynamicrl.protocol.codec import Session
from dynamicrl.protocol.messages import ErrorReply, Role, StatusReply, StatusRequest


def _refused(address: str) -> int:
    status = controller_status(address)
    assert status is not None and status.security is not None and status.security.curve
    return status.security.refused_handshakes


def _ask_without_curve(address: str) -> bool:
    """A plain REQ (no CURVE, as a pre-1.6 or foreign client): True if anything answered."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(address)
        sock.send_multipart(Session("plain").encode(StatusRequest()))
        return bool(sock.poll(1500))
    finally:
        sock.close(linger=0)
        ctx.term()


def _ask_with(ctx: zmq.Context | None, address: str) -> StatusReply | None:
    try:
        with ControlClient(address, timeout_s=1.0, retries=0, ctx=ctx) as client:
            return client.status()
    except RequestTimeout:
        return None


def test_a_client_without_curve_is_refused_counted_and_logged_once(controller):
    before = _refused(controller.controller)
    assert not _ask_without_curve(controller.controller)
    assert not _ask_without_curve(controller.controller)
    wait_until(lambda: _refused(controller.controller) >= before + 2, timeout=10, message="refusals not counted")
    text = log_text(controller.proc)
    assert text.count(f"refused a connection to {controller.controller}") == 1, text
    # The server sees the mismatch itself, or the plain client's hang-up after it saw it first.
    reason = rf"refused a connection to {re.escape(controller.controller)}: (MECHANISM_MISMATCH|EPIPE|ECONNRESET) "
    assert re.search(reason, text), text
    assert controller.proc.poll() is None


def test_another_users_keys_are_refused(controller, tmp_path):
    """Their own ring: another server key (the handshake fails), then a copy of our server's public key
    but their own client key (ZAP refuses it, naming the key once)."""
    theirs = tmp_path / "their-keys"
    ctx = security.context(keys=str(theirs))
    try:
        before = _refused(controller.controller)
        assert _ask_with(ctx, controller.controller) is None
        ours = Path(security.DEFAULT_KEYS).expanduser() / "server" / "server.key"
        shutil.copy(ours, theirs / "server" / "server.key")
        assert _ask_with(ctx, controller.controller) is None
        assert _ask_with(ctx, controller.controller) is None
        wait_until(lambda: _refused(controller.controller) >= before + 3, timeout=10, message="refusals not counted")
        their_key = security.Keyring(theirs).pair(security.CLIENT, security.CLIENT)[0]
        text = log_text(controller.proc)
        assert text.count(f"refused a peer whose key {their_key[:8].decode()}... is not in") == 1, text
        assert isinstance(_ask_with(None, controller.controller), StatusReply)  # ours (the default) still work
    finally:
        ctx.term()


def test_keys_are_private_and_made_once(tmp_path):
    keys = tmp_path / "keys"
    ring = security.Keyring(keys)
    first = ring.pair("envrunner", "envrunner.7")
    assert ring.pair("envrunner", "envrunner.7") == first
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    assert stat.S_IMODE((keys / "envrunner").stat().st_mode) == 0o700
    assert stat.S_IMODE((keys / "envrunner" / "envrunner.7.key_secret").stat().st_mode) == 0o600
    assert ring.peers() == {first[0]: security.Peer("envrunner", "envrunner.7")}
    keys.chmod(0o755)  # readable by others: refused, naming the fix
    with pytest.raises(security.SecurityError, match="chmod 700"):
        security.Keyring(keys).pair("client", "client")
    with pytest.raises(security.SecurityError, match="cannot keep a key"):
        ring.pair("envrunner", "../escape")


def test_a_member_registers_and_speaks_only_with_its_own_key(controller):
    """envrunner.2's key cannot register as envrunner.1, nor a client's as the learner; a forged
    envelope sender changes nothing (the key names the peer)."""
    peers = [
        Peer(controller.controller, "envrunner.1", key="envrunner.2"),
        Peer(controller.controller, "learner.1", key="outsider"),
        Peer(controller.controller, "envrunner.3", key="envrunner.3"),
    ]
    try:
        as_other = peers[0].register(Role.ENVRUNNER, rank=0)
        assert isinstance(as_other, ErrorReply) and "must register with its own key" in as_other.message, as_other
        assert "envrunner/envrunner.2" in as_other.message
        as_client = peers[1].register(Role.LEARNER)
        assert isinstance(as_client, ErrorReply) and "client/outsider" in as_client.message, as_client
        wrong_role = peers[2].register(Role.LOGGER)  # its key is an env-runner's
        assert isinstance(wrong_role, ErrorReply) and "envrunner/envrunner.3" in wrong_role.message, wrong_role
        status = controller_status(controller.controller)
        assert status is not None and not status.services, status.services  # nobody joined
    finally:
        for peer in peers:
            peer.close()


def test_curve_off_allows_loopback_only_and_warns(tmp_path):
    """Off is for debugging: a non-loopback address refuses to start (one line, exit 2); on loopback
    the run starts, warns, answers a client with curve off, and counts nothing as refused."""
    ports = free_ports(4)
    bad = subprocess.run(
        [
            *CLI,
            "service",
            "controller",
            *base_overrides(tmp_path, ports),
            "security.curve=false",
            f"addresses.controller=tcp://192.0.2.1:{ports[0]}",
        ],
        cwd=tmp_path,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2, bad.stderr
    assert "security.curve is off, which allows loopback addresses only" in bad.stderr
    assert "Traceback" not in bad.stderr
    controller = start_service("controller", [*base_overrides(tmp_path, ports), "security.curve=false"], tmp_path)
    try:
        address = f"tcp://127.0.0.1:{ports[0]}"
        assert wait_until(lambda: _ask_without_curve(address), timeout=30, message="curve-off controller silent")
        text = log_text(controller)
        assert "security.curve is off: any process on this machine" in text
        status = subprocess.run(
            [*CLI, "status", *base_overrides(tmp_path, ports), "security.curve=false"],
            cwd=tmp_path,
            env=user_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0 and "security  CURVE OFF" in status.stdout, status.stdout + status.stderr
    finally:
        from helpers import stop

        stop(controller)
