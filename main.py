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
from sqlalchemy import Engine

import audit
import tasks as task_store
from db import Database, is_outage, make_engine, migrate, tune_threads, wait_for_database
from dependencies import TOKEN_ERRORS, Services
from docs import add_docs
from logs import AccessLog, access_log
from metrics import Metrics
from middleware import (
    AllowedHosts,
    BodyLimit,
    EmptyQueryValues,
    Errors,
    SecurityHeaders,
    add_error_handlers,
    document_security,
)
from observability import Observe
from passwords import LoginThrottle, PasswordHasher
from ratelimit import RateLimits, is_shared
from routes import auth, health, metrics, tasks
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


def migrate_at_startup(settings: Settings, engine: Engine) -> None:
    """Migrations on the service's engine, or on MIGRATION_DATABASE_URL's when it is set."""
    if settings.migration_database_url is None:
        migrate(engine)
        return
    direct = make_engine(settings.migration_settings)
    try:
        migrate(direct)
    finally:
        direct.dispose()


def build_services(settings: Settings) -> Services:
    engine = make_engine(settings)
    revocations = RevocationList(engine, settings.revocation_refresh_seconds)
    accounts = settings.accounts_enabled
    # engine.pool, read when used: engine.dispose() puts a new pool in place.
    recorder = Metrics(lambda: engine.pool, settings.pool_capacity) if settings.metrics_enabled else None
    limits = RateLimits(settings, recorder.rate_limited if recorder else None)
    return Services(
        settings=settings,
        database=Database(engine, settings.db_statement_timeout_seconds, settings.pool_capacity),
        verifier=TokenVerifier(settings, revocations),
        revocations=revocations,
        limits=limits,
        revocation_feed=(
            RevocationFeed(
                settings.rate_limit_storage_uri, revocations, settings.rate_limit_storage_timeout_seconds
            )
            if is_shared(settings.rate_limit_storage_uri)
            else None
        ),
        hasher=PasswordHasher(settings) if accounts else None,
        logins=LoginThrottle(settings, limits) if accounts else None,
        metrics=recorder,
    )


@asynccontextmanager
async def sweeping(database: Database, settings: Settings) -> AsyncIterator[None]:
    """Purge expired tombstones, idempotency keys and audit events now, then every sweep interval."""
    ttl = timedelta(days=settings.tombstone_days)

    async def purge_tasks() -> None:
        try:
            swept = await database.run(task_store.sweep, ttl)
        except Exception as error:  # a database outage must not stop the service, nor the sweeping
            if is_outage(error):
                logger.warning("purging expired tombstones and idempotency keys skipped: %s", error)
            else:
                logger.exception("purging expired tombstones and idempotency keys failed")
            return
        if swept.tombstones or swept.idempotency_keys:
            logger.info("purged %d tombstones, %d idempotency keys", swept.tombstones, swept.idempotency_keys)

    async def purge_audit() -> None:
        if not settings.audit_retention_days:  # 0: kept for ever
            return
        try:
            purged = await database.run(audit.purge, timedelta(days=settings.audit_retention_days))
        except Exception as error:  # as above: the service and the sweeping go on
            if is_outage(error):
                logger.warning("purging old audit events skipped: %s", error)
            else:
                logger.exception("purging old audit events failed")
            return
        if purged:
            logger.info("purged %d audit events older than %d days", purged, settings.audit_retention_days)

    async def sweep() -> None:
        await purge_tasks()
        await purge_audit()

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
            await to_thread.run_sync(migrate_at_startup, settings, engine)
        async with access_log(settings.log_format), sweeping(services.database, settings), feeding(services):
            yield
        engine.dispose()
        if services.metrics is not None:
            services.metrics.close()

    app = FastAPI(
        title="Todo API",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        # A token kept in the browser's storage outlives the tab: convenient while developing,
        # not on a production host's /docs.
        swagger_ui_parameters={"persistAuthorization": settings.environment != "production"},
        # FastAPI's own pages load their files from CDNs: docs.add_docs serves installed ones.
        docs_url=None,
        redoc_url=None,
    )
    app.state.services = services

    app.include_router(tasks.router)  # first: the routes matched most often
    if settings.accounts_enabled:
        app.include_router(auth.router)
    app.include_router(health.router)
    if settings.metrics_enabled:
        app.include_router(metrics.router)
        if settings.environment == "production" and settings.metrics_token is None:
            logger.warning(
                "GET /metrics answers anyone (METRICS_TOKEN is not set): keep it off the public "
                "network, or set METRICS_TOKEN or METRICS_ENABLED=false"
            )
    if settings.docs_enabled:
        add_docs(app)
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
    app.add_middleware(Errors)  # inside CORS and the security headers: its answers get them
    app.add_middleware(SecurityHeaders)
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
            "X-Request-ID",
        ],
    )
    # Outermost: it times, logs and counts every answer, those of the middleware above too,
    # and gives every one its request id.
    app.add_middleware(Observe, access=AccessLog(settings.log_format), metrics=services.metrics)
    add_error_handlers(app)
    return app


def serve() -> FastAPI:
    """The app uvicorn serves (`main:app`): once its database answers, within
    DB_STARTUP_TIMEOUT_SECONDS, or not at all (one readable message)."""
    settings = load_settings()
    wait_for_database(settings)
    return create_app(settings)


app = serve()
