"""The dashboard's door: a token for every request, no cross-site commands, and few guesses.

Jupyter's model: one token per dashboard, printed once with the URL and kept in a 0600 file.
Opening ``/?token=...`` sets an HttpOnly, SameSite=Strict cookie so the page needs no token
in its JavaScript; scripts send ``Authorization: Bearer <token>``. A state-changing request
authenticated by the cookie must carry the dashboard's own ``Origin``: another site cannot make
a browser press the buttons. Failed logins are logged and, past a few a minute from one
address, refused before the token is even compared.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

log = logging.getLogger(__name__)

COOKIE = "dynamicrl_dashboard"
#: Failed logins one address may make per window before it is refused with 429.
MAX_FAILURES = 10
FAILURE_WINDOW_S = 60.0
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def default_token_file(port: int) -> Path:
    return Path.home() / ".dynamicrl" / f"dashboard-{port}.token"


def load_or_create_token(path: Path) -> str:
    """The token in ``path``, or a new one written there readable by its owner alone."""
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = ""
    if token:
        return token
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(path, 0o600)  # O_CREAT's mode does not apply to a file that was already there
    return token


class FailedLogins:
    """Failures per client address in a sliding window: how many, and whether it is locked out."""

    def __init__(self, limit: int = MAX_FAILURES, window_s: float = FAILURE_WINDOW_S) -> None:
        self.limit, self.window_s = limit, window_s
        self.by_address: dict[str, deque[float]] = {}

    def _recent(self, address: str, now: float) -> deque[float]:
        times = self.by_address.setdefault(address, deque())
        while times and now - times[0] > self.window_s:
            times.popleft()
        return times

    def locked_for_s(self, address: str) -> float:
        """Seconds until ``address`` may try again (0: it may)."""
        now = time.monotonic()
        times = self._recent(address, now)
        if len(times) < self.limit:
            if not times:
                self.by_address.pop(address, None)
            return 0.0
        return max(0.0, self.window_s - (now - times[0]))

    def record(self, address: str) -> int:
        times = self._recent(address, time.monotonic())
        times.append(time.monotonic())
        return len(times)


class TokenGuard:
    """ASGI middleware: 401 without the right token, 403 for a cross-site command, 429 when locked out."""

    def __init__(self, app: ASGIApp, token: str, failures: FailedLogins | None = None) -> None:
        self.app, self.token = app, token.encode()
        self.failures = failures or FailedLogins()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        address = (scope.get("client") or ("?", 0))[0]
        locked = self.failures.locked_for_s(address)
        if locked:
            await _reply(
                send,
                429,
                "locked_out",
                f"too many failed logins from {address}; try again in {locked:.0f} s",
                [(b"retry-after", str(int(locked) + 1).encode())],
            )
            return
        bearer = headers.get("authorization", "")
        by_header = bearer[7:].strip() if bearer.lower().startswith("bearer ") else None
        by_cookie = _cookie(headers.get("cookie", ""))
        by_query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [None])[0]
        if scope["method"] not in SAFE_METHODS:
            by_query = None  # a link must never be able to press a button
        source, given = next(
            (
                (name, t)
                for name, t in (("header", by_header), ("query", by_query), ("cookie", by_cookie))
                if t is not None
            ),
            (None, None),
        )
        if given is None or not secrets.compare_digest(given.encode(), self.token):
            count = self.failures.record(address)
            what = "no token" if given is None else "a wrong token"
            if count <= self.failures.limit:
                log.warning(
                    "dashboard: %s from %s for %s %s (%d in the last minute)",
                    what,
                    address,
                    scope["method"],
                    scope["path"],
                    count,
                )
            await _reply(
                send,
                401,
                "unauthorized",
                f"{what}: open the URL `dynamicrl dashboard` printed, or send Authorization: Bearer <token>",
            )
            return
        if scope["method"] not in SAFE_METHODS:
            problem = _cross_site(headers, scope, source == "header")
            if problem:
                log.warning("dashboard: refused %s %s from %s: %s", scope["method"], scope["path"], address, problem)
                await _reply(send, 403, "cross_site", problem)
                return
        if source == "query" and scope["path"] == "/":
            await _login(send, by_query)  # the printed URL: set the cookie and drop the token from the address bar
            return
        await self.app(scope, receive, send)


def _cookie(header: str) -> str | None:
    if not header:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except Exception:  # a malformed cookie header is no token
        return None
    return jar[COOKIE].value if COOKIE in jar else None


def _cross_site(headers: dict[str, str], scope: Scope, by_header: bool) -> str:
    """Why a state-changing request may be a forgery ('' if it is not)."""
    if headers.get("sec-fetch-site") == "cross-site":
        return "a cross-site request (Sec-Fetch-Site: cross-site)"
    origin = headers.get("origin")
    host = headers.get("host", "")
    own = f"{scope.get('scheme', 'http')}://{host}"
    if origin is not None and origin != own:
        return f"Origin {origin} is not this dashboard ({own})"
    if origin is None and not by_header:
        return (
            "a command authenticated by the cookie needs the page's Origin header (scripts: send the token as a header)"
        )
    return ""


async def _reply(
    send: Send, status: int, code: str, message: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:

    body = json.dumps({"error": code, "message": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": body})


async def _login(send: Send, token: str) -> None:
    cookie = f"{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"
    headers = [(b"location", b"/"), (b"set-cookie", cookie.encode()), (b"content-length", b"0")]
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
