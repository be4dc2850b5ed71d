"""The task service assembled: settings, database, services, routers, middleware, error handlers."""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import timedelta

from anyio import to_thread
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from pydantic import ValidationError

import tasks as task_store
from db import Database, make_engine, migrate, tune_threads
from dependencies import TOKEN_ERRORS, Services
from logs import batched_access_log
from middleware import (
    AllowedHosts,
    BodyLimit,
    EmptyQueryValues,
    SecurityHeaders,
    add_error_handlers,
    document_security,
)
from passwords import LoginThrottle, PasswordHasher
from ratelimit import RateLimits
from routes import auth, health, tasks
from settings import Settings
from tokens import RevocationFeed, RevocationList, TokenVerifier

DESCRIPTION = """
A multi-user task API. Every `/api/{user_id}/...` route needs a bearer token whose subject is
`user_id`: a Better Auth token (shared secret or JWKS) or one from `/auth/login`.
Use **Authorize** to paste a token or to log in with email and password.
"""


logger = logging.getLogger("todo")


def load_settings() -> Settings:
    """Settings from the environment; a bad value stops start-up with its message, not a traceback."""
    try:
        return Settings()
    except ValidationError as exc:
        messages = "\n".join(
            f"  {'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        raise SystemExit(f"Cannot start: invalid settings\n{messages}") from None


def build_services(settings: Settings) -> Services:
    engine = make_engine(settings)
    revocations = RevocationList(engine, settings.revocation_refresh_seconds)
    accounts = settings.accounts_enabled
    limits = RateLimits(settings)
    shared = not settings.rate_limit_storage_uri.removeprefix("async+").startswith("memory")
    return Services(
        settings=settings,
        database=Database(engine),
        verifier=TokenVerifier(settings, revocations),
        revocations=revocations,
        limits=limits,
        revocation_feed=(
            RevocationFeed(
                settings.rate_limit_storage_uri, revocations, settings.rate_limit_storage_timeout_seconds
            )
            if shared
            else None
        ),
        hasher=PasswordHasher(settings) if accounts else None,
        logins=LoginThrottle(settings, limits) if accounts else None,
    )


@asynccontextmanager
async def sweeping(database: Database, settings: Settings) -> AsyncIterator[None]:
    """Purge expired tombstones and idempotency keys now, then every sweep interval."""
    ttl = timedelta(days=settings.tombstone_days)

    async def sweep() -> None:
        try:
            swept = await database.run(task_store.sweep, ttl)
        except Exception:  # a database outage must not stop the service, nor the sweeping
            logger.exception("purging expired tombstones and idempotency keys failed")
            return
        if swept.tombstones or swept.idempotency_keys:
            logger.info("purged %d tombstones, %d idempotency keys", swept.tombstones, swept.idempotency_keys)

    async def sweep_forever() -> None:
        while True:
            await asyncio.sleep(settings.sweep_interval_seconds)
            await sweep()

    await sweep()
    sweeper = asyncio.create_task(sweep_forever(), name="sweeper")
    try:
        yield
    finally:
        sweeper.cancel()
        with suppress(asyncio.CancelledError):
            await sweeper


@asynccontextmanager
async def feeding(services: Services) -> AsyncIterator[None]:
    """Listen to the other instances' logouts, when revocations are shared through Redis."""
    feed = services.revocation_feed
    if feed is None:
        yield
        return
    listener = asyncio.create_task(feed.listen(), name="revocation feed")
    try:
        yield
    finally:
        listener.cancel()
        with suppress(asyncio.CancelledError):
            await listener
        await feed.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    logging.basicConfig(level=settings.log_level)
    services = build_services(settings)
    engine = services.database.engine

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tune_threads(settings)
        if settings.migrate_on_startup:
            await to_thread.run_sync(migrate, engine)
        async with batched_access_log(), sweeping(services.database, settings), feeding(services):
            yield
        engine.dispose()

    app = FastAPI(
        title="Todo API",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        # A token kept in the browser's storage outlives the tab: convenient while developing,
        # not on a production host's /docs.
        swagger_ui_parameters={"persistAuthorization": settings.environment != "production"},
    )
    app.state.services = services

    app.include_router(tasks.router)  # first: the routes matched most often
    if settings.accounts_enabled:
        app.include_router(auth.router)
    app.include_router(health.router)
    document_security(
        app, password_login=settings.accounts_enabled, token_error=TOKEN_ERRORS[401]["description"]
    )

    app.add_middleware(
        BodyLimit,
        limit=settings.max_body_bytes,
        large_at_once=settings.large_body_concurrency,
        large_wait=settings.large_body_wait_seconds,
    )
    app.add_middleware(EmptyQueryValues)
    app.add_middleware(AllowedHosts, hosts=settings.hosts)
    docs_paths = [app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url]
    app.add_middleware(SecurityHeaders, docs_paths=[path for path in docs_paths if path])
    app.add_middleware(  # added last, so it also wraps the body limit's 413
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_credentials=True,
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=[
            "X-Total-Count",
            "Link",
            "Location",
            "ETag",
            "Retry-After",
            "RateLimit-Limit",
            "RateLimit-Remaining",
            "RateLimit-Reset",
        ],
    )
    add_error_handlers(app, settings.cors_origins)
    return app


app = create_app()
