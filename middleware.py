"""HTTP plumbing: the body-size limit, error handlers (JSON, never a traceback), documented security."""

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from db import is_outage

log = logging.getLogger("todo")


class AsciiJSONResponse(JSONResponse):
    """JSON that stays encodable whatever the client sent (lone surrogates in echoed input)."""

    def render(self, content: object) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


class BodyLimit:
    """Refuse request bodies over `limit` bytes with a JSON 413, before reading more of them;
    and let at most `large_at_once` requests with a large body (over LARGE_BODY_BYTES, or of no
    declared length) in at a time.

    A large body is read and parsed on the event loop, which every request shares: a flood of
    them would hold other users' requests behind their parsing, and their memory adds up. The
    others wait for a turn (the server stops reading their bodies meanwhile) for up to
    `large_wait` seconds, then get 503 with Retry-After.
    """

    def __init__(self, app: ASGIApp, limit: int, large_at_once: int, large_wait: float) -> None:
        self.app = app
        self.limit = limit
        self.detail = f"Request body is larger than {limit} bytes"
        self.large = asyncio.Semaphore(large_at_once)
        self.large_wait = large_wait

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.limit:
            await JSONResponse({"detail": self.detail}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:  # a body sent without Content-Length
                raise HTTPException(413, self.detail)
            return message

        large = int(length) > LARGE_BODY_BYTES if length.isdigit() else "transfer-encoding" in headers
        if not large:
            await self.app(scope, limited_receive, send)
            return
        try:
            await asyncio.wait_for(self.large.acquire(), self.large_wait)
        except TimeoutError:
            response = JSONResponse({"detail": LARGE_BUSY}, status_code=503, headers={"Retry-After": "1"})
            await response(scope, receive, send)
            return
        try:
            await self.app(scope, limited_receive, send)
        finally:
            self.large.release()


LARGE_BODY_BYTES = 64 * 1024  # a bulk create of 25 full tasks; a single task is at most ~10 KiB
LARGE_BUSY = "Too many large requests at once; retry after the time Retry-After says"


class AllowedHosts:
    """Refuse a request whose `Host` is not one the service answers to (ALLOWED_HOSTS), with a
    JSON 400: `Location` and `Link` are built from it, so a forged one would send clients
    elsewhere. The health probes and /metrics answer whatever the host: load balancers and
    Prometheus reach the service by address."""

    def __init__(self, app: ASGIApp, hosts: Sequence[str]) -> None:
        self.app = app
        self.any = "*" in hosts
        self.exact = frozenset(host.lower().rstrip(".") for host in hosts if not host.startswith("*."))
        self.suffixes = tuple(host.lower()[1:] for host in hosts if host.startswith("*."))  # ".example.com"

    def allows(self, host: str) -> bool:
        host = host.lower()
        if host.startswith("["):  # an IPv6 address, with or without a port: [::1]:8000
            name = host[1 : host.find("]")] if "]" in host else host
        else:
            name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        name = name.rstrip(".")
        return name in self.exact or (bool(self.suffixes) and name.endswith(self.suffixes))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.any or scope["type"] not in ("http", "websocket") or scope["path"].startswith(ANY_HOST_PATHS):
            await self.app(scope, receive, send)
            return
        host = next((value for name, value in scope["headers"] if name == b"host"), None)
        if host is None or self.allows(host.decode("latin-1")):
            await self.app(scope, receive, send)
            return
        await JSONResponse({"detail": BAD_HOST}, status_code=400)(scope, receive, send)


BAD_HOST = "The Host header names a host this service does not answer to (see ALLOWED_HOSTS)"
# Probes and Prometheus reach the service by address; neither answer is built from the host.
ANY_HOST_PATHS = ("/health", "/metrics")


API_PATHS = ("/api/", "/auth/")
RATE_LIMIT_STATE = "rate_limit"
BASE_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
# JSON answers need nothing loaded and no framing. The docs pages (docs.py) set their own policy,
# naming the hashes of their inline scripts.
CSP = b"content-security-policy"
API_POLICY = (CSP, b"default-src 'none'; frame-ancestors 'none'")
HSTS = (b"strict-transport-security", b"max-age=63072000; includeSubDomains")
NO_STORE = (b"cache-control", b"no-store")


class SecurityHeaders:
    """Security headers on every response: no sniffing, no referrer, no framing, a content
    policy that loads nothing (unless a route set its own: the docs pages), `Cache-Control:
    no-store` on the API's answers (unless a route set its own), and HSTS when the request came
    over HTTPS (directly, or through a proxy trusted to say so). Also the RateLimit-* headers of
    the request's limit."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        api = path.startswith(API_PATHS)
        extra = [*BASE_HEADERS, HSTS] if scope.get("scheme") == "https" else BASE_HEADERS

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", ()), *extra]
                # A second policy would not replace the route's: the browser would enforce both.
                if not any(name.lower() == CSP for name, _ in headers):
                    headers.append(API_POLICY)
                if api and not any(name.lower() == b"cache-control" for name, _ in headers):
                    headers.append(NO_STORE)
                verdict = scope.get("state", {}).get(RATE_LIMIT_STATE)  # set by ratelimit.RateLimits
                if verdict is not None:
                    headers += verdict.headers()
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class EmptyQueryValues:
    """Take `?status=&q=&limit=` as not sent: what a form's empty fields and many frontends'
    query builders produce. Refusing them would protect nothing; a value sent is validated."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        query: bytes = scope.get("query_string", b"")
        if query:
            pairs = query.split(b"&")
            kept = [pair for pair in pairs if pair.partition(b"=")[2]]
            if len(kept) != len(pairs):
                # In place, not in a copy: the route the router records in this scope is what
                # observability.Observe, outside, reads for the access log and the metrics.
                scope["query_string"] = b"&".join(kept)
        await self.app(scope, receive, send)


MAX_ECHO = 100


def readable_errors(errors: Sequence[Any], *, with_input: bool = True) -> list[dict[str, Any]]:
    """Validation errors as JSON: the input echoed short, never a password, always encodable."""
    readable = []
    for error in errors:
        loc = error.get("loc", ())
        item = {"type": error.get("type"), "loc": [echo(part) for part in loc], "msg": error.get("msg")}
        if with_input and "input" in error and not any(is_secret(part) for part in loc):
            item["input"] = echo(error["input"])
        readable.append(item)
    return readable


SOURCES = ("body", "query", "path", "header", "cookie")


def one_line(errors: Sequence[Any]) -> str:
    """The errors as one line a client can show as it is: `title: String should have ...`."""
    parts = []
    for error in errors:
        loc = list(error.get("loc", ()))
        if loc and loc[0] in SOURCES:
            loc = loc[1:]
        msg = str(error.get("msg", "")).removeprefix("Value error, ")
        parts.append(f"{'.'.join(str(echo(part)) for part in loc)}: {msg}" if loc else msg)
    return "; ".join(parts)


def is_secret(name: object) -> bool:
    return isinstance(name, str) and "password" in name.lower()


def echo(value: Any, depth: int = 0) -> Any:
    """A short, JSON-safe copy of what the client sent, with any password left out at any depth."""
    if value is None or isinstance(value, bool) or (isinstance(value, str) and len(value) <= MAX_ECHO):
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**63 else "<a very large number>"
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes):
        return echo(value.decode("utf-8", "replace"), depth)
    if isinstance(value, str):
        return value[:MAX_ECHO] + "..."
    if depth < 2 and isinstance(value, dict):
        return {
            str(k)[:MAX_ECHO]: "<hidden>" if is_secret(k) else echo(v, depth + 1)
            for k, v in list(value.items())[:10]
        }
    if depth < 2 and isinstance(value, list | tuple):
        return [echo(v, depth + 1) for v in value[:10]]
    return f"<{type(value).__name__}>"


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        allowed = allowed_methods(app, request)
        if allowed and request.method not in allowed:
            # PUT /tasks/bulk reached PUT /tasks/{task_id}, whose id "bulk" is no integer: the
            # answer is about the method, which that path does not serve.
            return JSONResponse(
                {"detail": "Method Not Allowed"}, status_code=405, headers={"Allow": ", ".join(allowed)}
            )
        errors = exc.errors()
        # What a client sends to /auth holds credentials, whatever the field is called, or a
        # whole body that could not be read as an object: echo none of it.
        with_input = not request.url.path.startswith(AUTH_PREFIX)
        content = {"detail": readable_errors(errors, with_input=with_input), "message": one_line(errors)}
        return AsciiJSONResponse(status_code=422, content=content)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 422 and isinstance(exc.detail, str):  # a 422 the code raises itself
            content = {"detail": exc.detail, "message": exc.detail}
            return JSONResponse(status_code=422, content=content, headers=exc.headers)
        if exc.status_code == 405:  # Starlette names only the methods of the first route matched
            allowed = allowed_methods(app, request)
            headers = {**(exc.headers or {}), **({"Allow": ", ".join(allowed)} if allowed else {})}
            return JSONResponse({"detail": exc.detail}, status_code=405, headers=headers)
        return await http_exception_handler(request, exc)


class Errors:
    """The last word on a request that raised: JSON, answered on a connection that stays open.

    A database outage (db.is_outage: refused, dropped, frozen past its deadline) is a 503 with
    Retry-After, an outage to the client rather than a bug; anything else is a 500 with a
    request id, whose traceback goes to the log only. FastAPI's own catch-all handler would
    answer too, but then re-raise, and uvicorn closes the connection after every such error:
    a client cannot tell a dropped connection from an unanswered POST. Inside the CORS and
    security-header middleware, so that these answers carry their headers like any other.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.said_at = -float("inf")  # when an outage was last logged
        self.unsaid = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except Exception as error:
            if started:  # half an answer is out: only closing the connection can say so
                raise
            await self.answer(scope, error)(scope, receive, send)

    def answer(self, scope: Scope, error: Exception) -> Response:
        # Given to every request, and written on every answer, by observability.Observe.
        request_id = scope.get("state", {}).get("request_id")
        where = f"{scope.get('method')} {scope.get('path')} [request {request_id}]"
        if is_outage(error):
            # Once per OUTAGE_LOG_SECONDS, with how many went unsaid: an outage answers every
            # request 503, and a line for each would bury the log (the access log has them all).
            now = time.monotonic()
            self.unsaid += 1
            if now - self.said_at >= OUTAGE_LOG_SECONDS:
                log.warning(
                    "Database unavailable on %s: %s (%d answered 503 since the last line)",
                    where,
                    error,
                    self.unsaid,
                )
                self.said_at, self.unsaid = now, 0
            return JSONResponse(
                {"detail": DATABASE_DOWN, "request_id": request_id},
                status_code=503,
                headers={"Retry-After": str(RETRY_AFTER_OUTAGE)},
            )
        log.error("Unhandled error on %s", where, exc_info=error)
        return JSONResponse({"detail": "Internal server error", "request_id": request_id}, status_code=500)


DATABASE_DOWN = "The database is unavailable; retry after the time Retry-After says"
OUTAGE_LOG_SECONDS = 10.0
RETRY_AFTER_OUTAGE = 2


AUTH_PREFIX = "/auth/"


def allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """Every method the API documents at this path (HEAD wherever GET is): what `Allow` says.

    Read from the OpenAPI document, which lists every route of every router.
    """
    path = request.url.path
    methods: set[str] = set()
    # The most specific paths that match win, as in routing: /tasks/stats is not /tasks/{task_id}.
    matching = [
        (params, documented)
        for pattern, params, documented in documented_methods(app)
        if pattern.fullmatch(path)
    ]
    fewest = min((params for params, _ in matching), default=0)
    for params, documented in matching:
        if params == fewest:
            methods |= documented
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


def documented_methods(app: FastAPI) -> list[tuple[re.Pattern[str], int, frozenset[str]]]:
    """Each documented path: its pattern, how many parameters it has, and its methods."""
    cached: list[tuple[re.Pattern[str], int, frozenset[str]]] | None = getattr(
        app.state, "documented_methods", None
    )
    if cached is None:
        cached = [
            (compile_path(path)[0], path.count("{"), frozenset(method.upper() for method in operations))
            for path, operations in app.openapi()["paths"].items()
        ]
        app.state.documented_methods = cached
    return cached


ERROR_DETAIL = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorDetail"}}}
BODY_ERRORS = {
    "400": {
        "description": "The body cannot be read at all: not UTF-8, or nested too deep",
        "content": ERROR_DETAIL,
    },
    "413": {"description": "The body is over MAX_BODY_BYTES", "content": ERROR_DETAIL},
}


# Every 422 has a `detail` (FastAPI's list of errors, or a sentence from a rule of the route's own:
# contradicting filters, an alias with its name...) and `message`, one line to show.
VALIDATION_FAILURE = {
    "type": "object",
    "title": "ValidationFailure",
    "required": ["detail", "message"],
    "properties": {
        "detail": {
            "anyOf": [
                {"type": "array", "items": {"$ref": "#/components/schemas/ValidationError"}},
                {"type": "string"},
            ]
        },
        "message": {"type": "string", "description": "The errors as one line a client can show"},
    },
}
STRING = {"schema": {"type": "string"}}
# The headers that come with these answers wherever they are given.
ERROR_HEADERS = {
    "401": {"WWW-Authenticate": {"description": "`Bearer`", **STRING}},
    "429": {"Retry-After": {"description": "Seconds to wait", **STRING}},
    "503": {"Retry-After": {"description": "Seconds to wait", **STRING}},
}


def document_errors(spec: dict[str, Any]) -> None:
    """Say what every error answer holds: one 422 shape for all, and the headers above."""
    spec.setdefault("components", {}).setdefault("schemas", {})["ValidationFailure"] = VALIDATION_FAILURE
    for operations in spec["paths"].values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            if "422" in responses:
                responses["422"]["content"] = {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ValidationFailure"}}
                }
            for code, headers in ERROR_HEADERS.items():
                if code in responses:
                    responses[code].setdefault("headers", {}).update(headers)


def document_security(app: FastAPI, *, password_login: bool, token_error: str) -> None:
    """Offer Swagger's Authorize dialog both ways in, on every operation that checks a token,
    and document the 400 and 413 that every operation with a body may answer.

    Written into the OpenAPI document once, rather than declared as security dependencies that
    FastAPI would run on every request only to document them (the token dependency does the work).
    The operations that check a token are those documenting its 401 (`token_error`).
    """
    schemes: dict[str, Any] = {"bearerToken": {"type": "http", "scheme": "bearer"}}
    if password_login:
        schemes["passwordLogin"] = {
            "type": "oauth2",
            "flows": {"password": {"scopes": {}, "tokenUrl": "/auth/login"}},
        }
    requirement: list[dict[str, list[str]]] = [{name: []} for name in schemes]
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = build()
            spec.setdefault("components", {})["securitySchemes"] = schemes
            for operations in spec["paths"].values():
                for operation in operations.values():
                    if operation.get("responses", {}).get("401", {}).get("description") == token_error:
                        operation["security"] = requirement
                    if "requestBody" in operation:  # answered before any route reads the body
                        for code, response in BODY_ERRORS.items():
                            operation["responses"].setdefault(code, response)
            document_errors(spec)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
