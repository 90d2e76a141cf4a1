"""The dashboard's web application: the REST API, the event stream and the page, on FastAPI.

Every route is a thin translation: an HTTP request becomes the controller request the CLI would
send (``clients.control.call``), the reply goes back as JSON, and a refusal becomes one error
shape, ``{"error", "message", "problems"}``, with a status code a browser understands. The only
state here is caches: the last status (shared by all viewers for ``STATUS_TTL_S``) and the event
buffer.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import json
import threading
import time
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Body, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.middleware.gzip import GZipMiddleware

from dynamicrl.clients import control
from dynamicrl.core.settings import Config
from dynamicrl.protocol.messages import (
    CheckpointRequest,
    ErrorCode,
    HistoryRequest,
    Message,
    ParamsRequest,
    ParamValue,
    PatchRequest,
    PauseRequest,
    ResumeRequest,
    RunState,
    StatusReply,
    StatusRequest,
    StopRequest,
)

from . import runfiles
from .auth import ASGIApp, FailedLogins, Receive, Scope, Send, TokenGuard
from .events import EventHub

#: One status request a second, however many viewers poll.
STATUS_TTL_S = 1.0
#: After a write, a reader waits this long before the next, so that a burst of events (an iteration's
#: metrics, sys and episode stats) costs one write per reader, not one each: a person cannot tell 50 ms.
COALESCE_S = 0.05
#: Largest request body accepted (a patch is a few hundred bytes).
MAX_BODY = 64 * 1024
STATIC = importlib.resources.files("dynamicrl.clients.dashboard") / "static"
#: The page's security headers: no framing (a click cannot be stolen), nothing from elsewhere.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' 'unsafe-eval'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}
HTTP_STATUS = {
    ErrorCode.REJECTED: 422,
    ErrorCode.CONFLICT: 409,
    ErrorCode.TIMEOUT: 504,
}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, problems: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.problems = status, code, message, problems or {}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PatchBody(Strict):
    changes: dict[str, ParamValue] = Field(description="hyperparameter name -> new value, all or nothing")
    at_iteration: int | None = Field(default=None, ge=0, description="apply once this many iterations are done")
    wait: bool = Field(default=True, description="answer once applied (else once accepted)")
    author: str | None = Field(default=None, max_length=128, description="recorded in the journal")


class StopBody(Strict):
    checkpoint: bool = Field(default=True, description="take a last checkpoint first")


class NoBody(Strict):
    pass


class RunLink:
    """The way to the controller: one call per request, and the status cached for every viewer."""

    def __init__(self, config: Config, hub: EventHub) -> None:
        self.config, self.hub = config, hub
        self.lock = threading.Lock()
        self.cached: tuple[float, StatusReply | ApiError] | None = None
        self.last_good: StatusReply | None = None
        self.encoded: tuple[StatusReply, bytes] | None = None

    def call(self, request: Message) -> Message:
        if not isinstance(request, StatusRequest):
            self.cached = None  # a command changes what status says: the next viewer asks again
        try:
            return control.call(self.config, request)
        except control.RequestTimeout:
            raise self.unreachable() from None
        except control.ControlError as exc:
            reply = exc.reply
            status = HTTP_STATUS.get(reply.code, 502)
            raise ApiError(status, reply.code.value, reply.message, reply.problems) from None

    def unreachable(self) -> ApiError:
        endpoint = self.config.addresses.controller
        return ApiError(503, "unreachable", f"no controller answered at {endpoint} (run not reachable)")

    def status(self) -> StatusReply:
        with self.lock:  # viewers polling together wait for one request, not one each
            now = time.monotonic()
            if self.cached is None or now - self.cached[0] > STATUS_TTL_S:
                try:
                    reply = self.call(StatusRequest())
                    assert isinstance(reply, StatusReply)
                    self.last_good = reply
                    self.cached = (now, reply)
                except ApiError as exc:
                    self.cached = (now, exc)
            value = self.cached[1]
        if isinstance(value, ApiError):
            raise value
        return value

    def status_json(self) -> bytes:
        """The status as the API sends it, encoded once per status request, not once per viewer."""
        reply = self.status()
        if self.encoded is None or self.encoded[0] is not reply:
            self.encoded = (reply, json.dumps({**reply.model_dump(mode="json"), "reachable": True}).encode())
        return self.encoded[1]

    def ended(self) -> bool:
        """The run said it was stopping: its controller is gone for good, not just unreachable."""
        seen = self.hub.last_state
        known = self.last_good.state if self.last_good is not None else None
        return RunState.STOPPED in (seen, known) or RunState.STOPPING in (seen, known)

    def run_dir(self) -> Path:
        try:
            reply = self.status()
        except ApiError:
            if self.last_good is None:
                raise
            reply = self.last_good
        return Path(reply.run_dir)


def create_app(config: Config, token: str, hub: EventHub, failures: FailedLogins | None = None) -> ASGIApp:
    """The whole dashboard as one ASGI app, behind its token guard and body limit."""
    link = RunLink(config, hub)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        hub.start(asyncio.get_running_loop())
        try:
            yield
        finally:
            hub.stop()

    app = FastAPI(
        title="DynamicRL dashboard",
        description="Watch and steer one run: the controller's commands over HTTP, its bus as Server-Sent Events.",
        version="1",
        lifespan=lifespan,
    )

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message, exc.problems)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return _error(400, "bad_json", "the body is not valid JSON: " + "; ".join(e["msg"] for e in errors))
        if any(tuple(e["loc"]) == ("body",) and isinstance(e.get("input"), (bytes, str)) for e in errors):
            return _error(400, "bad_json", "the body is not a JSON object (send Content-Type: application/json)")
        problems = {".".join(str(p) for p in e["loc"][1:]) or "body": e["msg"] for e in errors}
        said = "; ".join(f"{where}: {msg}" for where, msg in problems.items())
        return _error(422, "invalid", f"invalid request: {said}", problems)

    # -- the controller's commands ------------------------------------------------------------

    @app.get("/api/status", summary="The run's status (services, progress, last checkpoint)")
    def status() -> Response:
        try:
            return Response(link.status_json(), media_type="application/json")
        except ApiError:
            if link.last_good is not None and link.ended():  # the final state, not an outage
                final = {**link.last_good.model_dump(mode="json"), "state": RunState.STOPPED.value}
                return JSONResponse({**final, "reachable": False})
            raise

    @app.get("/api/params", summary="Every live-tunable hyperparameter")
    def params() -> dict[str, Any]:
        return _json(link.call(ParamsRequest()))

    @app.get("/api/history", summary="The patch journal")
    def history() -> dict[str, Any]:
        return _json(link.call(HistoryRequest()))

    @app.post("/api/pause", summary="Pause at every service's next safe point")
    def pause(body: Annotated[NoBody | None, Body()] = None) -> dict[str, Any]:
        return _json(link.call(PauseRequest()))

    @app.post("/api/resume", summary="Resume a paused run")
    def resume(body: Annotated[NoBody | None, Body()] = None) -> dict[str, Any]:
        return _json(link.call(ResumeRequest()))

    @app.post("/api/patch", summary="Change hyperparameters, all or nothing")
    def patch(body: PatchBody) -> dict[str, Any]:
        request = PatchRequest(
            changes=body.changes, at_iteration=body.at_iteration, wait=body.wait, author=body.author or "dashboard"
        )
        return _json(link.call(request))

    @app.post("/api/checkpoint", summary="A checkpoint at the next iteration boundary")
    def checkpoint(body: Annotated[NoBody | None, Body()] = None) -> dict[str, Any]:
        return _json(link.call(CheckpointRequest()))

    @app.post("/api/stop", summary="Stop the run cleanly")
    def stop(body: Annotated[StopBody | None, Body()] = None) -> dict[str, Any]:
        return _json(link.call(StopRequest(checkpoint=(body or StopBody()).checkpoint)))

    # -- the run directory --------------------------------------------------------------------

    @app.get("/api/metrics", summary="metrics.csv so far (thinned to at most 5,000 rows)")
    def metrics() -> dict[str, Any]:
        return runfiles.metrics(link.run_dir())

    @app.get("/api/checkpoints", summary="The run's checkpoints, newest first")
    def checkpoints() -> dict[str, Any]:
        return {"checkpoints": runfiles.checkpoint_list(link.run_dir())}

    @app.get("/api/videos", summary="Training clips (newest first) and each pause's previews (latest first)")
    def videos() -> dict[str, Any]:
        return runfiles.videos(link.run_dir())

    @app.get("/files/videos/{name}", summary="A clip (.mp4, .gif) or its .json", response_class=FileResponse)
    def video_file(name: str) -> FileResponse:
        return _media(link.run_dir(), "videos", name)

    @app.get("/files/previews/{pause}/{name}", summary="A pause preview (.png)", response_class=FileResponse)
    def preview_file(pause: str, name: str) -> FileResponse:
        return _media(link.run_dir(), "previews", pause, name)

    # -- the bus ------------------------------------------------------------------------------

    @app.get("/api/events", summary="The bus as Server-Sent Events; resumes from Last-Event-ID")
    async def events(last_event_id: Annotated[str | None, Header()] = None) -> EventSourceResponse:
        return EventSourceResponse(_stream(hub, last_event_id), ping=15, send_timeout=30)

    @app.get("/api/dashboard", summary="The dashboard itself: viewers, buffer, events dropped")
    def about() -> dict[str, Any]:
        return hub.stats()

    # -- the page -----------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    def page() -> Response:
        return Response((STATIC / "index.html").read_bytes(), media_type="text/html", headers=PAGE_HEADERS)

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        return _static(name)

    return BodyLimit(StaticGZip(TokenGuard(app, token, failures)))


async def _stream(hub: EventHub, last_event_id: str | None) -> AsyncIterator[ServerSentEvent | bytes]:
    """One reader's events: after its cursor, a gap first if the buffer moved past it. The events come
    as the frames the hub encoded, all that are there in one write: ten readers cost little more than one."""
    cursor, foreign = hub.cursor(last_event_id)
    hub.readers += 1
    try:
        if foreign:  # its id is from an earlier dashboard: what it missed in between is unknown
            yield _gap(hub, cursor, None, restarted=True)
        while True:
            batch = hub.after(cursor)
            if batch.missed:
                yield _gap(hub, cursor, batch.missed)
            if batch.events:
                yield b"".join(event.frame for event in batch.events)
                cursor = batch.events[-1].id
                await asyncio.sleep(COALESCE_S)  # what comes meanwhile goes out in the next write
            else:
                await hub.wait(cursor, timeout=15)
    finally:
        hub.readers -= 1


def _gap(hub: EventHub, cursor: int, missed: int | None, restarted: bool = False) -> ServerSentEvent:
    data = {"after": hub.event_id(cursor), "next": hub.event_id(max(cursor + 1, hub.oldest())), "missed": missed}
    return ServerSentEvent(data=json.dumps({**data, "on_bus": False, "restarted": restarted}), event="gap")


def _json(reply: Message) -> dict[str, Any]:
    return reply.model_dump(mode="json")


def _error(status: int, code: str, message: str, problems: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "message": message, "problems": problems or {}}, status_code=status)


def _media(run_dir: Path, kind: str, *parts: str) -> FileResponse:
    path = runfiles.media_file(run_dir, kind, *parts)
    if path is None:
        raise ApiError(404, "not_found", f"no {kind[:-1]} {'/'.join(parts)} in {run_dir / kind}")
    return FileResponse(path, media_type=runfiles.MEDIA[path.suffix])


def _static(name: str) -> Response:
    if name == "plotly.min.js":  # the chart library, from its own Python package: no CDN, no build step
        source = importlib.resources.files("plotly") / "package_data" / "plotly.min.js"
    elif name in ("dashboard.js", "dashboard.css"):
        source = STATIC / name
    else:
        raise ApiError(404, "not_found", f"no static file {name!r}")
    if not source.is_file():
        raise ApiError(404, "not_found", f"no static file {name!r} (is the package installed whole?)")
    media = "text/javascript" if name.endswith(".js") else "text/css"
    return Response(source.read_bytes(), media_type=media, headers={"Cache-Control": "private, max-age=3600"})


class StaticGZip:
    """Compress the page's scripts (plotly.js: 4.8 MB, 1.4 MB gzipped); never the event stream."""

    def __init__(self, app: ASGIApp) -> None:
        self.app, self.gzip = app, GZipMiddleware(app, minimum_size=1024)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        compress = scope["type"] == "http" and scope["path"].startswith("/static/")
        await (self.gzip if compress else self.app)(scope, receive, send)


class BodyLimit:
    """413 for a body over ``MAX_BODY``, announced or streamed, before any of it is parsed."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._too_large(send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.limit:
                await self._too_large(send)
                return
        body = b"".join(chunks)
        replayed = False

        async def replay() -> MutableMapping[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        body = json.dumps(
            {"error": "too_large", "message": f"the body is over {self.limit // 1024} KiB", "problems": {}}
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
