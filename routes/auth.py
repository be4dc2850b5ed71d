"""The service's own accounts: register, log in (JSON or OAuth2 form), me, log out.

Register, every login (a success, a failure, a throttled attempt) and logout leave an event in
the audit trail (audit.py), written in the same worker-thread hop as the route's database work.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy import Table, bindparam, insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

import audit
from dependencies import (
    TOKEN_ERRORS,
    UNAUTHORIZED_HEADERS,
    CurrentPrincipal,
    DatabaseDep,
    HasherDep,
    LoginThrottleDep,
    SettingsDep,
    services,
)
from models import User
from passwords import HashersBusy, PasswordHasher
from ratelimit import client_key
from schemas import ErrorDetail, TokenResponse, UserLogin, UserPublic, UserRegister
from tokens import mint_token

TAKEN = "An account with this email already exists"
BUSY = "Too many password checks at once; retry after the time Retry-After says"
UNREADABLE = "There was an error parsing the body"
CREDENTIALS = "Send JSON {email, password} or an OAuth2 password form (username, password)"
JSON_OR_FORM = "Send JSON (application/json) or a form (application/x-www-form-urlencoded)"


@asynccontextmanager
async def hashing(hasher: PasswordHasher) -> AsyncIterator[None]:
    """A password-hashing slot, or 503 when every slot stays taken (a flood of logins or
    registrations): hashing is bounded so that it cannot take the memory and worker threads
    that task requests need."""
    try:
        async with hasher.slot():
            yield
    except HashersBusy:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, BUSY, headers={"Retry-After": "1"}) from None


async def limited(request: Request) -> None:
    """Login and register, per client address (RATE_LIMIT_AUTH_PER_ADDRESS)."""
    await services(request).limits.auth(request)


async def json_or_form(request: Request) -> None:
    """Only JSON and form bodies: a browser sends text/plain cross-site without asking first
    (no CORS preflight), so a page could otherwise make its visitors' browsers log in here."""
    if request.method != "POST" or not has_body(request):
        return
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in BODY_TYPES and not content_type.endswith("+json"):
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, JSON_OR_FORM)


def has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    return "transfer-encoding" in request.headers or (length is not None and length.strip() != "0")


USERS: Table = User.__table__  # type: ignore[attr-defined]
CREATE_USER = (
    insert(USERS).values({c.name: bindparam(c.name, type_=c.type) for c in USERS.c}).returning(USERS.c.id)
)

router = APIRouter(
    prefix="/auth",
    tags=["auth"],
    dependencies=[Depends(json_or_form)],
    responses={415: {"model": ErrorDetail, "description": JSON_OR_FORM}},
)

MAX_TIMESTAMP = 253402300799  # 9999-12-31T23:59:59Z
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
BODY_TYPES = ("application/json", *FORM_TYPES)
LOGIN_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": UserLogin.model_json_schema()},
        "application/x-www-form-urlencoded": {
            "schema": {
                "type": "object",
                "required": ["username", "password"],
                "properties": {
                    "username": {"type": "string", "description": "The account's email"},
                    "password": {"type": "string", "format": "password"},
                    "grant_type": {"type": "string", "enum": ["password"]},
                    "scope": {"type": "string"},
                },
            }
        },
    },
}


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=UserPublic,
    summary="Create an account",
    dependencies=[Depends(limited)],
    responses={
        409: {"model": ErrorDetail, "description": "The email is already registered"},
        429: {"model": ErrorDetail, "description": "Too many from this address; see Retry-After"},
        503: {"model": ErrorDetail, "description": BUSY},
    },
)
async def register(account: UserRegister, request: Request, database: DatabaseDep, hasher: HasherDep) -> User:
    origin = audit.Origin.of(request)

    def create(session: Session) -> User:
        # Every column is set here, so the answer needs no reload; the account and its audit
        # event are written together (a taken email writes neither).
        user = User(email=account.email, name=account.name, password_hash=hasher.hash(account.password))
        event = audit.Event("register", origin, user_id=user.id, email=user.email)
        try:
            audit.write_with(session, CREATE_USER, user.model_dump(), event)
        except IntegrityError:
            raise HTTPException(status.HTTP_409_CONFLICT, TAKEN) from None
        return user

    async with hashing(hasher):
        return await database.run(create)


async def login_credentials(request: Request) -> UserLogin:
    """JSON `{email, password}`, or the OAuth2 password form that Swagger's Authorize sends."""
    data: Any
    if request.headers.get("content-type", "").lower().startswith(FORM_TYPES):
        form = await request.form()
        data = {"email": form.get("username"), "password": form.get("password")}
    else:
        try:
            data = await request.json()
        except (UnicodeDecodeError, RecursionError):  # not UTF-8, or nested deeper than the parser goes
            # As FastAPI answers these on every other route: the body cannot be read at all.
            raise HTTPException(status.HTTP_400_BAD_REQUEST, UNREADABLE) from None
        except ValueError:  # not JSON
            error = {"type": "json_invalid", "loc": ("body",), "msg": CREDENTIALS, "input": None}
            raise RequestValidationError([error]) from None
    try:
        return UserLogin.model_validate(data)
    except ValidationError as exc:
        # Located in the body, as FastAPI locates the errors of every other route's body.
        errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


@router.post(
    "/login",
    response_model=TokenResponse,
    summary="Log in and get a bearer token",
    openapi_extra={"requestBody": LOGIN_BODY},
    dependencies=[Depends(limited)],
    responses={
        401: {"model": ErrorDetail, "description": "Wrong email or password"},
        422: {
            "description": "The body is missing, is neither JSON nor a form, or lacks a field",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}},
        },
        429: {"model": ErrorDetail, "description": "Too many logins, or failed ones; see Retry-After"},
        503: {"model": ErrorDetail, "description": BUSY},
    },
)
async def login(
    credentials: Annotated[UserLogin, Depends(login_credentials)],
    request: Request,
    database: DatabaseDep,
    settings: SettingsDep,
    hasher: HasherDep,
    throttle: LoginThrottleDep,
) -> TokenResponse:
    email = credentials.email  # trimmed and lower-cased: what the trail records, never the password
    client = client_key(request)
    origin = audit.Origin.of(request)
    # Counted before the password check, so parallel guesses cannot overrun the limits.
    wait = await throttle.attempt(email, client)
    if wait is not None:
        # Recorded too: a guesser who keeps going after the throttle shows in the trail. Each
        # address is bounded by RATE_LIMIT_AUTH_PER_ADDRESS, so this cannot become a flood of writes.
        await database.run(audit.record, audit.Event("login_failed", origin, email=email, detail="throttled"))
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "Too many failed logins; try again later",
            headers={"Retry-After": str(wait)},
        )

    def check(session: Session) -> User | None:
        user = session.exec(select(User).where(User.email == email)).first()
        # An unknown email is checked against a dummy hash, so it costs as long as a wrong password.
        valid, new_hash = hasher.verify(credentials.password, user.password_hash if user else None)
        if user is None or not valid:
            reason = "no_account" if user is None else "wrong_password"  # for operators only
            audit.record(session, audit.Event("login_failed", origin, email=email, detail=reason))
            return None
        if new_hash is not None:  # the hashing parameters changed since this password was stored
            user.password_hash = new_hash
            session.add(user)
            session.expire_on_commit = False
            session.commit()
        # Before the token is minted: no token is handed out without its event.
        audit.record(session, audit.Event("login", origin, user_id=user.id, email=email))
        return user

    async with hashing(hasher):
        user = await database.run(check)
    if user is None:
        await throttle.failed(email, client)
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "Incorrect email or password", headers=UNAUTHORIZED_HEADERS
        )
    await throttle.succeeded(email, client)
    token, expires_in = mint_token(settings, user.id)
    return TokenResponse(access_token=token, expires_in=expires_in, user=UserPublic.model_validate(user))


@router.get(
    "/me",
    response_model=UserPublic,
    summary="The account behind the token",
    responses={
        **TOKEN_ERRORS,
        404: {"model": ErrorDetail, "description": "The token's subject has no account here"},
    },
)
async def me(principal: CurrentPrincipal, database: DatabaseDep) -> User:
    user = await database.run(account, principal.user_id)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "The token's subject has no account here")
    return user


def account(session: Session, user_id: str) -> User | None:
    session.expire_on_commit = False
    return session.get(User, user_id)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Revoke the presented token",
    responses={
        **TOKEN_ERRORS,
        400: {"model": ErrorDetail, "description": "The token has no jti and cannot be revoked"},
    },
)
async def logout(
    principal: CurrentPrincipal, request: Request, database: DatabaseDep, settings: SettingsDep
) -> None:
    jti = principal.jti
    if jti is None:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            "This token has no jti and cannot be revoked here; sign out where it was issued",
        )
    # Kept until the token would be refused anyway: its `exp` plus the leeway that verification
    # grants. int() of `exp` worked in verification; absurd values are clamped to what a
    # timestamp can hold.
    refused_from = int(principal.claims["exp"]) + settings.jwt_leeway_seconds
    expires_at = datetime.fromtimestamp(min(refused_from, MAX_TIMESTAMP), UTC)
    found = services(request)
    origin = audit.Origin.of(request)

    def revoke(session: Session) -> None:
        # The revocation first, on its own: an event that cannot be written must never leave
        # the token usable (the request then fails, with the token revoked all the same).
        found.revocations.revoke(session, jti, expires_at)
        audit.record(session, audit.Event("logout", origin, user_id=principal.user_id, detail=f"jti={jti}"))

    await database.run(revoke)
    if found.revocation_feed is not None:  # the other instances, at once
        await found.revocation_feed.publish(jti)
