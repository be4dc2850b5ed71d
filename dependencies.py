"""The routes' dependencies: the services they use, who is asking, and whether they may."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Concatenate, ParamSpec, TypeVar

from fastapi import Depends, HTTPException, Path, Request, status
from sqlmodel import Session

from db import Database
from metrics import KEYS_UNAVAILABLE, MISSING_TOKEN, Metrics, token_failure_reason
from passwords import LoginThrottle, PasswordHasher
from ratelimit import RateLimits
from schemas import ErrorDetail
from settings import Settings
from tokens import AuthError, KeysUnavailable, Principal, RevocationFeed, RevocationList, TokenVerifier

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Services:
    """What the app builds once at start-up and its routes use (main.create_app assembles it)."""

    settings: Settings
    database: Database
    verifier: TokenVerifier
    revocations: RevocationList
    limits: RateLimits
    revocation_feed: RevocationFeed | None = None  # with the limits in Redis
    hasher: PasswordHasher | None = None  # with accounts enabled
    logins: LoginThrottle | None = None
    metrics: Metrics | None = None  # with METRICS_ENABLED


def services(request: Request) -> Services:
    """The one typed way to the app's services; routes take them as the dependencies below."""
    return request.app.state.services


async def get_settings(request: Request) -> Settings:
    return services(request).settings


async def get_database(request: Request) -> Database:
    return services(request).database


async def get_hasher(request: Request) -> PasswordHasher:
    hasher = services(request).hasher
    assert hasher is not None, "the account routes are mounted only with accounts enabled"
    return hasher


async def get_login_throttle(request: Request) -> LoginThrottle:
    logins = services(request).logins
    assert logins is not None, "the account routes are mounted only with accounts enabled"
    return logins


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]
HasherDep = Annotated[PasswordHasher, Depends(get_hasher)]
LoginThrottleDep = Annotated[LoginThrottle, Depends(get_login_throttle)]


# --- who is asking --------------------------------------------------------------------------

UNAUTHORIZED_HEADERS = {"WWW-Authenticate": "Bearer"}
TOKEN_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorDetail, "description": "Missing, malformed, expired or revoked token"},
    429: {
        "model": ErrorDetail,
        "description": "Over the rate limit (of the user, or of the address when no token is valid)",
    },
    503: {"model": ErrorDetail, "description": "The token issuer's keys cannot be fetched; see Retry-After"},
}


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers=UNAUTHORIZED_HEADERS)


def bearer_token(request: Request) -> str:
    authorization = request.headers.get("authorization")
    if authorization is not None and len(request.headers.getlist("authorization")) > 1:
        # Which one would count depends on who reads them (proxy, framework): refuse to guess.
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "Send one Authorization header, not several")
    if not authorization:
        raise unauthorized("Not authenticated: send 'Authorization: Bearer <token>'")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        raise unauthorized("Authorization scheme must be Bearer")
    token = token.strip()
    if not token:
        raise unauthorized("Bearer token is empty")
    return token


async def current_principal(request: Request) -> Principal:
    """The verified bearer token, counted against its user's rate limit; a request without a
    valid one is counted against its address's. Async: on the event loop, no thread hop."""
    found = services(request)
    try:
        principal = await found.verifier.verify(bearer_token(request))
    except AuthError as exc:
        if found.metrics is not None:
            found.metrics.token_failed(token_failure_reason(exc.detail))
        await found.limits.unauthenticated(request)
        raise unauthorized(exc.detail) from None
    except HTTPException:  # no usable Authorization header at all
        if found.metrics is not None:
            found.metrics.token_failed(MISSING_TOKEN)
        await found.limits.unauthenticated(request)
        raise
    except KeysUnavailable:
        if found.metrics is not None:
            found.metrics.token_failed(KEYS_UNAVAILABLE)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "Token signing keys are unavailable: the issuer cannot be reached",
            headers={"Retry-After": "5"},
        ) from None
    request.state.user_id = principal.user_id  # for the access log (observability.Observe)
    await found.limits.user(request, principal.user_id)
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


@dataclass(frozen=True, slots=True)
class OwnTasks:
    """The caller's own tasks: the path user, once checked against the token, and the database.

    `run` hands a function of tasks.py its session and the owner in one worker-thread hop, so a
    handler cannot forget the owner or reach anyone else's tasks.
    """

    user_id: str
    database: Database

    async def run(
        self, work: Callable[Concatenate[Session, str, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        return await self.database.run(work, self.user_id, *args, **kwargs)


async def own_tasks(
    user_id: Annotated[
        str, Path(min_length=1, max_length=255, description="The token's subject", examples=["alice"])
    ],
    request: Request,
) -> OwnTasks:
    """The path's user, if it is the token's subject (403 otherwise).

    One dependency for the whole check: each dependency FastAPI resolves costs every request.
    """
    principal = await current_principal(request)
    if user_id != principal.user_id:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "You may only reach your own tasks")
    return OwnTasks(user_id, services(request).database)


MyTasks = Annotated[OwnTasks, Depends(own_tasks)]
