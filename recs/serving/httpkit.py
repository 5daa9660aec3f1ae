"""The HTTP service's plumbing, apart from its routes: the body-size limit, Prometheus metrics,
the error bodies (one line, never a stack trace) and the admin token."""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from recs.errors import NotFittedError, RecsError, UnknownItemError, UnknownUserError

__all__ = ["BodyLimit", "HttpError", "Metrics", "check_admin", "install_error_handlers", "limit_error"]

log = logging.getLogger("recs.serving")

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


class HttpError(Exception):
    """An answer other than 200 with a one-line message (admin refusals, a failed reload)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.headers, self.extra = status, message, headers, extra


def _error(status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def _status_of(err: RecsError) -> int:
    if isinstance(err, UnknownUserError | UnknownItemError):
        return 404
    if isinstance(err, NotFittedError):
        return 409  # the model lacks the part (e.g. no set scorer): the request is fine
    return 400


def _readable(errors: list[Any]) -> list[dict[str, Any]]:
    """Pydantic's errors without the `input` they quote (a huge or private body is not echoed)."""
    out = []
    for e in errors:
        loc = [str(p) for p in e.get("loc", ()) if p != "body"]
        out.append({"loc": loc, "msg": str(e.get("msg", "invalid")).removeprefix("Value error, "), "type": e.get("type", "")})
    return out


def limit_error(field: str, message: str) -> RequestValidationError:
    """A serving limit (k, history length, text length) refused as pydantic refuses a bad body."""
    return RequestValidationError([{"loc": ("body", field), "msg": message, "type": "limit"}])


def install_error_handlers(app: FastAPI) -> None:
    """Every error body is `{"error": "<one line>"}` (422s add `detail`: each field and why)."""

    async def validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail = _readable(list(exc.errors()))
        first = detail[0] if detail else {"loc": [], "msg": "invalid request"}
        where = ".".join(first["loc"]) or "body"
        return JSONResponse({"error": f"{where}: {first['msg']}", "detail": detail}, status_code=422)

    async def recs_error(_: Request, exc: RecsError) -> JSONResponse:
        return _error(_status_of(exc), str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

    async def http_error(_: Request, exc: HttpError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.headers, **exc.extra)

    async def starlette_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, "internal error (logged by the service)")

    app.add_exception_handler(RequestValidationError, validation)  # type: ignore[arg-type]
    app.add_exception_handler(RecsError, recs_error)  # type: ignore[arg-type]
    app.add_exception_handler(HttpError, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, starlette_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, unexpected)


def check_admin(request: Request, token_env: str) -> None:
    """`Authorization: Bearer <token>` equal to the variable `token_env`; with none set, every admin
    route is refused (a service must not be administrable by default)."""
    expected = os.environ.get(token_env, "")
    if not expected:
        raise HttpError(403, f"admin routes are disabled: set {token_env} to a token to enable them")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise HttpError(401, "admin routes need 'Authorization: Bearer <token>' with the right token",
                        headers={"WWW-Authenticate": "Bearer"})


class BodyLimit:
    """Refuses a request body over `max_bytes` with 413 before any route reads it: by its
    Content-Length, or while it streams in when it has none (chunked)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._refuse(scope, receive, send)
            return
        if length is not None:
            await self.app(scope, receive, send)
            return
        # No length: read it all (bounded) first, then hand it on.
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body, sent = b"".join(chunks), False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Any, send: Any) -> None:
        response = _error(413, f"request body over {self.max_bytes} bytes (serving.http.max_body_bytes)")
        await response(scope, receive, send)


class Metrics:
    """Prometheus metrics in the app's own registry (several apps in one process do not clash).
    Under `recs serve --workers N`, PROMETHEUS_MULTIPROC_DIR is set and /metrics sums the workers'
    counters and histograms (prometheus-client's multiprocess mode; model info per worker pid)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("recs_requests", "HTTP requests answered", ["endpoint", "method", "status"], registry=self.registry)
        self.latency = Histogram(
            "recs_request_seconds", "Time to answer a request", ["endpoint", "method"], registry=self.registry,
            buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0),
        )
        self.degraded = Counter("recs_degraded_answers", "Answers served without the cross-encoder (time budget)",
                                ["endpoint"], registry=self.registry)
        self.model = Gauge("recs_model_info", "The model being served (1; a replaced one 0)", ["version", "path", "backend"],
                           registry=self.registry, multiprocess_mode="liveall")
        self._model_labels: tuple[str, str, str] | None = None
        self.reloads = Counter("recs_reloads", "Model reloads by outcome", ["outcome"], registry=self.registry)
        self.events = Counter("recs_events_stored", "Events appended to the event store by POST /events", registry=self.registry)

    def set_model(self, served: Any) -> None:
        """`served`: a recs.serving.holder.Served (version, path, backend)."""
        labels = (served.version or "unknown", str(served.path or ""), served.backend)
        if self._model_labels is not None and self._model_labels != labels:
            self.model.labels(*self._model_labels).set(0)  # what multiprocess mode keeps of it
            self.model.remove(*self._model_labels)
        self.model.labels(*labels).set(1)
        self._model_labels = labels

    def text(self) -> bytes:
        """The Prometheus text exposition of this app, or of every worker in multiprocess mode."""
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)

    def install(self, app: FastAPI) -> None:
        @app.middleware("http")
        async def measure(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
            start = time.perf_counter()
            status = 500
            try:
                response = await call_next(request)
                status = response.status_code
                return response
            finally:
                route = request.scope.get("route")
                # The route's template (/items/{item_id}), never the raw path: labels stay few.
                endpoint = getattr(route, "path", None) or "unmatched"
                self.requests.labels(endpoint, request.method, str(status)).inc()
                self.latency.labels(endpoint, request.method).observe(time.perf_counter() - start)
