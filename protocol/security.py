"""Who may connect to a run: CURVE keys kept per user, and a ZAP handler that names each peer.

Every socket that binds is a CURVE server holding the user's server key; every socket that
connects is a CURVE client holding the key of its own identity (one per member name, one shared
by every client: the CLI, dashboards, monitors, streams). The keys are made on first use in one
directory only the user can read (``security.keys``, 0700, secrets 0600), as Jupyter keeps a
kernel's key in a 0600 file: one user never sees them, and another user's process, which cannot
read them, fails the handshake. The ZAP handler accepts only keys found in that directory and
tags every message it lets in with ``User-Id`` = ``<role>/<name>``, so a receiver knows who
really sent it whatever the message claims (:func:`peer_of`).

A socket's identity and the keys come from its context: make every context with
:func:`context`; :func:`bind` and :func:`connect` in ``sockets.py`` do the rest. ``curve=False``
(``security.curve: off``) is for debugging on loopback only.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import re
import stat
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

log = logging.getLogger(__name__)

DEFAULT_KEYS = "~/.dynamicrl/keys"
#: The role (and name) of every process that is not a member: CLI commands, dashboards, monitors, streams.
CLIENT = "client"
SERVER = "server"
ZAP_DOMAIN = b"dynamicrl"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_REFUSALS = zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH
_PROTOCOL_ERRORS = {
    getattr(zmq, n): n.removeprefix("PROTOCOL_ERROR_ZMTP_") for n in dir(zmq) if n.startswith("PROTOCOL_ERROR_")
}


def _refusal_reason(event: int, value: int) -> str:
    """Why a handshake failed, by name. pyzmq's parser casts every value to ``zmq.Event``, which is
    meaningless here: the value is a ZMTP protocol error or, without detail, an errno (a CURVE server
    meeting a plain client sees MECHANISM_MISMATCH or, when the client hangs up first, EPIPE)."""
    code = int(value)
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        return _PROTOCOL_ERRORS.get(code, f"protocol error {code:#x}")
    return errno.errorcode.get(code, f"errno {code}")


_KEY_WAIT_S = 2.0


class SecurityError(RuntimeError):
    """The keys cannot be used safely (a directory others can read, a key missing) or the settings are unsafe."""


@dataclass(frozen=True)
class Peer:
    """Who sent a message, as its key proves: ``role`` is ``client`` or a member role."""

    role: str
    name: str


class Keyring:
    """A directory of CURVE key pairs, one per identity, each made the first time it is asked for.

    ``<role>/<name>.key`` is the public half (all a server needs to admit a peer);
    ``<role>/<name>.key_secret`` holds both halves. Two processes that make the same key at once
    agree on one: a pair is linked into place, and the one that loses the race reads the winner's.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser()

    def pair(self, role: str, name: str) -> tuple[bytes, bytes]:
        """``(public, secret)`` of the identity, z85-encoded; made now on its first use."""
        secret_file = self._path(role, name, ".key_secret")
        if not secret_file.exists():
            self._make(role, name)
        public, secret = zmq.auth.load_certificate(secret_file)
        assert secret is not None
        return public, secret

    def server_public(self) -> bytes:
        """The servers' public key: all a client needs of them (a host that only connects holds only it)."""
        public_file = self._path(SERVER, SERVER, ".key")
        if not public_file.exists():
            self._make(SERVER, SERVER)
        return zmq.auth.load_certificate(public_file)[0]

    def peers(self) -> dict[bytes, Peer]:
        """Every public key in the ring (the server's excepted), z85 -> the identity it proves."""
        known: dict[bytes, Peer] = {}
        for public_file in self.root.glob("*/*.key"):
            role = public_file.parent.name
            if role == SERVER:
                continue
            try:
                public, _ = zmq.auth.load_certificate(public_file)
            except (OSError, ValueError):
                continue  # being written, or not a key: it admits nobody
            known[public] = Peer(role, public_file.stem)
        return known

    def _path(self, role: str, name: str, suffix: str) -> Path:
        for what, value in (("role", role), ("name", name)):
            if not _NAME.match(value):
                raise SecurityError(f"cannot keep a key for {what} {value[:80]!r}: use letters, digits, '_', '.', '-'")
        return self.root / role / f"{name}{suffix}"

    def _private_dir(self, path: Path) -> None:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.stat()
        if info.st_uid != os.getuid() or info.st_mode & 0o077:
            raise SecurityError(
                f"{path} is not private to this user (mode {stat.filemode(info.st_mode)}, owner uid {info.st_uid}): "
                f"run chmod 700 {path}, or point security.keys elsewhere"
            )

    def _make(self, role: str, name: str) -> None:
        public_file, secret_file = self._path(role, name, ".key"), self._path(role, name, ".key_secret")
        self._private_dir(self.root)
        self._private_dir(public_file.parent)
        with tempfile.TemporaryDirectory(dir=public_file.parent) as tmp:
            new_public, new_secret = zmq.auth.create_certificates(tmp, name)
            os.chmod(new_secret, 0o600)
            try:
                os.link(new_public, public_file)
            except FileExistsError:  # another process is making it: wait for its secret
                deadline = time.monotonic() + _KEY_WAIT_S
                while not secret_file.exists():
                    if time.monotonic() > deadline:
                        raise SecurityError(f"{public_file} exists without {secret_file.name}: delete it") from None
                    time.sleep(0.01)
                return
            os.link(new_secret, secret_file)
        log.info("made the CURVE key %s", secret_file)


@dataclass
class Gatekeeper:
    """One process's ZAP handler and its count of refused handshakes.

    A key is admitted when the keyring holds it (re-read on a miss, so a member made after
    start-up gets in); each unknown key is logged once. Handshakes refused before ZAP is asked
    (a peer without CURVE, or with another user's server key) are seen by monitoring the bound
    sockets: counted, and logged once per socket.
    """

    ctx: zmq.Context
    keyring: Keyring
    refused: int = 0
    known: dict[bytes, Peer] = field(default_factory=dict)
    _logged: set[bytes | str] = field(default_factory=set)
    _monitors: list[tuple[zmq.Socket, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        gatekeeper = self

        class Authenticator(ThreadAuthenticator):
            def curve_user_id(self, client_public_key: bytes) -> str:
                peer = gatekeeper.known[z85.encode(client_public_key)]
                return f"{peer.role}/{peer.name}"

        self.authenticator = Authenticator(self.ctx, log=logging.getLogger("dynamicrl.zap"))
        self.authenticator.start()
        self.authenticator.configure_curve_callback(ZAP_DOMAIN.decode(), credentials_provider=self)
        self._watcher = threading.Thread(target=self._watch, name="refusals", daemon=True)
        self._watcher.start()

    def callback(self, domain: str, key: bytes) -> bool:
        """ZAP's question for a CURVE client key (z85): is it one of ours?"""
        if key not in self.known:
            self.known = self.keyring.peers()
        if key in self.known:
            return True
        with self._lock:
            first = key not in self._logged and len(self._logged) < 1024
            self._logged.add(key)
        if first:
            log.warning("refused a peer whose key %s... is not in %s", key[:8].decode(), self.keyring.root)
        return False

    def watch(self, sock: zmq.Socket, endpoint: str) -> None:
        with self._lock:
            self._monitors.append((sock.get_monitor_socket(_REFUSALS), endpoint))

    def _watch(self) -> None:
        poller = zmq.Poller()
        polled: set[zmq.Socket] = set()
        while not self._stop.is_set():
            with self._lock:
                monitors = dict(self._monitors)
            for monitor in monitors.keys() - polled:
                poller.register(monitor, zmq.POLLIN)
                polled.add(monitor)
            for monitor, _ in poller.poll(200):
                event = recv_monitor_message(monitor)
                endpoint = monitors[monitor]
                with self._lock:
                    self.refused += 1
                    first = endpoint not in self._logged
                    self._logged.add(endpoint)
                if first and event["event"] != zmq.EVENT_HANDSHAKE_FAILED_AUTH:  # ZAP said why already
                    log.warning(
                        "refused a connection to %s: %s (no CURVE, or another user's keys; counted in status)",
                        endpoint,
                        _refusal_reason(event["event"], event["value"]),
                    )
        with self._lock:
            for monitor, _ in self._monitors:
                monitor.close(linger=0)

    def stop(self) -> None:
        self._stop.set()
        self._watcher.join(timeout=1.0)
        self.authenticator.stop()


@dataclass
class Security:
    """A process's identity and how its sockets prove it; held by its :class:`Context`."""

    curve: bool
    keyring: Keyring
    role: str
    name: str
    gatekeeper: Gatekeeper | None = None

    @property
    def refused(self) -> int:
        return self.gatekeeper.refused if self.gatekeeper is not None else 0


class Context(zmq.Context):
    """A ZeroMQ context that knows whose keys its sockets use."""

    security: Security | None = None

    @property
    def refused(self) -> int:
        """Handshakes refused at this context's bound sockets so far."""
        return self.security.refused if self.security is not None else 0

    def term(self) -> None:
        if self.security is not None and self.security.gatekeeper is not None:
            self.security.gatekeeper.stop()
            self.security.gatekeeper = None
        super().term()


def context(*, curve: bool = True, keys: str = DEFAULT_KEYS, role: str = CLIENT, name: str = CLIENT) -> Context:
    """A context whose sockets authenticate as ``role``/``name`` with the keys in ``keys``."""
    ctx = Context()
    ctx.security = Security(curve, Keyring(keys), role, name)
    return ctx


class Settings(Protocol):
    """What :func:`context_for` reads: a config's ``security:`` section."""

    curve: bool
    keys: str


def context_for(settings: Settings, role: str = CLIENT, name: str = CLIENT) -> Context:
    """:func:`context` from a config's ``security:`` section."""
    return context(curve=settings.curve, keys=settings.keys, role=role, name=name)


def _security(sock: zmq.Socket) -> Security:
    security = getattr(sock.context, "security", None)
    if security is None:
        raise SecurityError("this socket's context has no identity: make it with dynamicrl.protocol.security.context()")
    return security


def serve(sock: zmq.Socket, endpoint: str) -> None:
    """Make ``sock`` a CURVE server before it binds ``endpoint`` (nothing with curve off)."""
    security = _security(sock)
    if not security.curve:
        require_loopback(endpoint)
        return
    if security.gatekeeper is None:  # ZAP must answer before the first peer arrives
        security.gatekeeper = Gatekeeper(sock.context, security.keyring)
    public, secret = security.keyring.pair(SERVER, SERVER)
    sock.curve_server = True
    sock.curve_publickey, sock.curve_secretkey = public, secret
    sock.zap_domain = ZAP_DOMAIN
    security.gatekeeper.watch(sock, endpoint)


def join(sock: zmq.Socket, endpoint: str) -> None:
    """Make ``sock`` a CURVE client of the user's server key before it connects ``endpoint``."""
    security = _security(sock)
    if not security.curve:
        require_loopback(endpoint)
        return
    sock.curve_serverkey = security.keyring.server_public()
    sock.curve_publickey, sock.curve_secretkey = security.keyring.pair(security.role, security.name)


def peer_of(frame: zmq.Frame) -> Peer | None:
    """The identity the sender's key proved (None with curve off)."""
    try:
        user_id = frame.get("User-Id")
    except zmq.ZMQError:
        return None
    role, sep, name = str(user_id).partition("/")
    return Peer(role, name) if sep else None


def require_loopback(endpoint: str) -> None:
    """With curve off only this machine may connect: refuse any other address."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return
    host = urlsplit(endpoint).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise SecurityError(
            f"security.curve is off, which allows loopback addresses only, and {endpoint} is not one: "
            "turn security.curve on to use other hosts"
        )


__all__ = [
    "CLIENT",
    "DEFAULT_KEYS",
    "Context",
    "Gatekeeper",
    "Keyring",
    "Peer",
    "Security",
    "SecurityError",
    "context",
    "context_for",
    "join",
    "peer_of",
    "require_loopback",
    "serve",
]
