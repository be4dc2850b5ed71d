"""Who is asking and whether they may: the bearer token, its user, the path-user check."""

from typing import Annotated, Any

from anyio import to_thread
from fastapi import Depends, HTTPException, Path, Request, status
from sqlalchemy import bindparam
from sqlmodel import Session, col, select

from db import SessionDep
from models import ID_MAX, ErrorDetail, Task
from security import AuthError, KeysUnavailable, Principal, TokenVerifier

UNAUTHORIZED_HEADERS = {"WWW-Authenticate": "Bearer"}
TOKEN_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorDetail, "description": "Missing, malformed, expired or revoked token"},
    503: {"model": ErrorDetail, "description": "The token issuer's keys cannot be fetched; see Retry-After"},
}


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers=UNAUTHORIZED_HEADERS)


def bearer_token(request: Request) -> str:
    authorization = request.headers.get("authorization")
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
    """Verify the bearer token. Async: only key fetches and cache reloads leave the event loop."""
    token = bearer_token(request)
    state = request.app.state
    verifier: TokenVerifier = state.verifier
    try:
        header = verifier.header(token)
        key = None
        if header["alg"] != "HS256":
            key = verifier.cached_key(header) or await to_thread.run_sync(verifier.resolve_key, header)
        principal = verifier.decode(token, header, key)
    except AuthError as exc:
        raise unauthorized(exc.detail) from None
    except KeysUnavailable:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "Token signing keys are unavailable: the issuer cannot be reached",
            headers={"Retry-After": "5"},
        ) from None
    revocations = state.revocations
    if principal.jti is not None:
        if revocations.stale:
            await to_thread.run_sync(revocations.refresh)
        if revocations.is_revoked(principal.jti):
            raise unauthorized("Token has been revoked")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


async def path_user(
    user_id: Annotated[str, Path(min_length=1, max_length=255, description="The token's subject")],
    principal: CurrentPrincipal,
) -> str:
    if user_id != principal.user_id:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "You may only reach your own tasks")
    return user_id


UserId = Annotated[str, Depends(path_user)]
TaskId = Annotated[int, Path(ge=1, le=ID_MAX, description="The task's id")]


# Built once: "this user's (task)", with the values bound per request (`owner`, `task`).
OWNED_BY = col(Task.user_id) == bindparam("owner")
OWNED_TASK = (col(Task.id) == bindparam("task"), OWNED_BY)
TASK_BY_ID = select(Task).where(*OWNED_TASK)


def find_task(session: Session, user_id: str, task_id: int) -> Task:
    """The user's task, or 404 whether it is missing or someone else's (no existence leak)."""
    task = session.exec(TASK_BY_ID, params={"task": task_id, "owner": user_id}).first()
    if task is None:
        raise task_not_found()
    return task


def owned_task(task_id: TaskId, user_id: UserId, session: SessionDep) -> Task:
    return find_task(session, user_id, task_id)


def task_not_found() -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, "Task not found")


OwnedTask = Annotated[Task, Depends(owned_task)]
