"""The task service assembled: settings, engine, security, routers, middleware, error handlers."""

import json
import logging
import math
import re
import secrets
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from anyio import to_thread
from fastapi import FastAPI, HTTPException, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer, OAuth2PasswordBearer
from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from db import make_engine, migrate
from routes import auth, health, tasks
from security import FailureLimiter, RevocationList, TokenVerifier, password_hasher
from settings import Settings

log = logging.getLogger("todo")
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

DESCRIPTION = """
A multi-user task API. Every `/api/{user_id}/...` route needs a bearer token whose subject is
`user_id`: a Better Auth token (shared secret or JWKS) or one from `/auth/login`.
Use **Authorize** to paste a token or to log in with email and password.
"""


class AsciiJSONResponse(JSONResponse):
    """JSON that stays encodable whatever the client sent (lone surrogates in echoed input)."""

    def render(self, content: object) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


class BodyLimit:
    """Refuse request bodies over `limit` bytes with a JSON 413, before reading more of them."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.detail = f"Request body is larger than {limit} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length", "")
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

        await self.app(scope, limited_receive, send)


MAX_ECHO = 100


def readable_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Validation errors as JSON: the input echoed short, never a password, always encodable."""
    readable = []
    for error in errors:
        item = {"type": error.get("type"), "loc": [echo(part) for part in error.get("loc", ())]}
        item["msg"] = error.get("msg")
        if "input" in error and not any("password" in str(part) for part in error.get("loc", ())):
            item["input"] = echo(error["input"])
        readable.append(item)
    return readable


def echo(value: Any, depth: int = 0) -> Any:
    """A short, JSON-safe copy of what the client sent."""
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
        return {str(k)[:MAX_ECHO]: echo(v, depth + 1) for k, v in list(value.items())[:10]}
    if depth < 2 and isinstance(value, list | tuple):
        return [echo(v, depth + 1) for v in value[:10]]
    return f"<{type(value).__name__}>"


def load_settings() -> Settings:
    """Settings from the environment; a bad value stops start-up with its message, not a traceback."""
    try:
        return Settings()
    except ValidationError as exc:
        messages = "\n".join(
            f"  {'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        raise SystemExit(f"Cannot start: invalid settings\n{messages}") from None


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    logging.basicConfig(level=settings.log_level)
    engine = make_engine(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.migrate_on_startup:
            await to_thread.run_sync(migrate, engine)
        yield
        engine.dispose()

    app = FastAPI(
        title="Todo API",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        swagger_ui_parameters={"persistAuthorization": True},
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.verifier = TokenVerifier(settings)
    app.state.revocations = RevocationList(engine, settings.revocation_refresh_seconds)

    # Documented ways in for Swagger's Authorize dialog; the token itself is checked by the
    # routes' own dependency, so both schemes are optional here.
    schemes = [Security(HTTPBearer(auto_error=False, scheme_name="bearerToken"))]
    if settings.accounts_enabled:
        hasher = password_hasher(settings)
        app.state.hasher = hasher
        app.state.dummy_hash = hasher.hash(secrets.token_urlsafe(16))
        app.state.email_limiter = FailureLimiter(
            settings.login_max_failures_per_email, settings.login_failure_window_seconds
        )
        app.state.client_limiter = FailureLimiter(
            settings.login_max_failures_per_client, settings.login_failure_window_seconds
        )
        schemes.append(
            Security(
                OAuth2PasswordBearer(tokenUrl="/auth/login", auto_error=False, scheme_name="passwordLogin")
            )
        )
        app.include_router(auth.router)
        app.include_router(auth.session_router, dependencies=schemes)

    app.include_router(health.router)
    app.include_router(tasks.router, dependencies=schemes)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(  # added last, so it also wraps the body limit's 413
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_credentials=True,
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=["X-Total-Count", "Link", "Location"],
    )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return AsciiJSONResponse(status_code=422, content={"detail": readable_errors(exc.errors())})

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        request_id = request.headers.get("x-request-id", "")
        if not REQUEST_ID.fullmatch(request_id):
            request_id = uuid.uuid4().hex
        log.error(
            "Unhandled error on %s %s [request %s]",
            request.method,
            request.url.path,
            request_id,
            exc_info=exc,
        )
        headers = {"X-Request-ID": request_id}
        # This handler runs outside the CORS middleware: repeat its headers, so that a browser
        # lets the frontend read the error instead of reporting a CORS failure.
        origin = request.headers.get("origin")
        if origin in settings.cors_origins:
            headers |= {
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Credentials": "true",
                "Access-Control-Expose-Headers": "X-Request-ID",
                "Vary": "Origin",
            }
        return JSONResponse(
            status_code=500,
            content={"detail": "Internal server error", "request_id": request_id},
            headers=headers,
        )

    return app


app = create_app()
