"""The raw-SQL floor the service is measured against by `python -m bench.load`.

The service's task routes doing the same work with as little as possible in between: Starlette
routing, psycopg 3 with an async connection pool (no thread hops), one hand-written SQL statement
per request in autocommit mode with server-side parameters, the service's HS256 check, and the
same JSON (orjson). The list total comes from `task_count`, in the same statement as the page.

Run it with DATABASE_URL (postgresql://...) and BETTER_AUTH_SECRET set, from the repository root:

    .venv/bin/uvicorn floor:app --app-dir bench --host 127.0.0.1 --port 8001

Not as `bench.floor:app`: importing the `bench` package first runs its `__init__`, which pins
DATABASE_URL and BETTER_AUTH_SECRET to the in-process benchmarks' values (and loads pydantic).
"""

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import jwt
import orjson
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

DATABASE_URL = os.environ.get("DATABASE_URL", "")
SECRET = os.environ.get("BETTER_AUTH_SECRET", "")
if not DATABASE_URL.startswith(("postgresql://", "postgres://")) or not SECRET:
    raise SystemExit("floor: set DATABASE_URL (postgresql://...) and BETTER_AUTH_SECRET")

# The service's key order: TaskPublic's fields. The statements below are built from constants only.
COLUMNS = (
    "title",
    "description",
    "completed",
    "priority",
    "due_date",
    "all_day",
    "tags",
    "id",
    "user_id",
    "version",
    "completed_at",
    "created_at",
    "updated_at",
)
PRIORITIES = ("none", "low", "medium", "high")
TASK = ", ".join(COLUMNS)
OWNED = "id = %(id)s AND user_id = %(user)s"
LIST = f"""
    SELECT {TASK}, (SELECT total FROM task_count WHERE user_id = %(user)s) FROM task
    WHERE user_id = %(user)s ORDER BY created_at DESC, id DESC LIMIT %(limit)s OFFSET %(offset)s
"""  # noqa: S608
TOTAL = "SELECT total FROM task_count WHERE user_id = %(user)s"
GET = f"SELECT {TASK} FROM task WHERE {OWNED}"  # noqa: S608
CREATE = f"""
    INSERT INTO task (user_id, title, description, completed, completed_at, created_at, updated_at)
    VALUES (%(user)s, %(title)s, %(description)s, %(completed)s,
            CASE WHEN %(completed)s THEN now() END, now(), now())
    RETURNING {TASK}
"""  # noqa: S608
# Completing an already completed task keeps its completion time, as in the service.
REPLACE = f"""
    UPDATE task SET title = %(title)s, description = %(description)s, completed = %(completed)s,
                    completed_at = CASE WHEN %(completed)s THEN coalesce(completed_at, now()) END,
                    updated_at = now(), version = version + 1
    WHERE {OWNED} RETURNING {TASK}
"""  # noqa: S608
TOGGLE = f"""
    UPDATE task SET completed = NOT completed,
                    completed_at = CASE WHEN completed THEN NULL ELSE now() END, updated_at = now(),
                    version = version + 1
    WHERE {OWNED} RETURNING {TASK}
"""  # noqa: S608
ID_MAX = 2**63 - 1
MAX_OFFSET = 2**31 - 1
# What a client may send: the editable fields, and the read-only ones it got back (ignored).
FIELDS = frozenset(COLUMNS)
UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


def reply(content: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    # The pool's connections run with TimeZone=UTC, so every timestamp is a UTC datetime: "...Z".
    body = orjson.dumps(content, option=orjson.OPT_UTC_Z)
    return Response(body, status, headers, media_type="application/json")


def task(row: tuple[Any, ...]) -> dict[str, Any]:
    # A list row carries the total after the task; status and the due date's form are derived.
    title, description, completed, priority, due, all_day, tags, task_id, user_id, version = row[:10]
    return {
        "title": title,
        "description": description,
        "completed": completed,
        "status": "completed" if completed else "pending",
        "priority": PRIORITIES[priority],
        "due_date": due.date().isoformat() if all_day and due is not None else due,
        "tags": orjson.Fragment(tags),  # a JSON array as stored
        "id": task_id,
        "user_id": user_id,
        "version": version,
        "completed_at": row[10],
        "created_at": row[11],
        "updated_at": row[12],
    }


def owner(request: Request) -> str:
    """The path user, if the bearer token is a valid HS256 token for that subject."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(401, "Not authenticated: send 'Authorization: Bearer <token>'", UNAUTHORIZED)
    try:
        claims = jwt.decode(
            token.strip(), SECRET, algorithms=["HS256"], leeway=30, options={"require": ["exp"]}
        )
    except jwt.InvalidTokenError as exc:
        raise HTTPException(401, f"Token refused: {exc}", UNAUTHORIZED) from None
    user: str = request.path_params["user_id"]
    if claims.get("sub") != user:
        raise HTTPException(403, "You may only reach your own tasks")
    return user


def number(request: Request, name: str, default: int, low: int, high: int) -> int:
    value = request.query_params.get(name)
    if value is None:
        return default
    if not (value.isascii() and value.isdigit()) or not low <= int(value) <= high:
        raise HTTPException(422, f"{name} must be an integer from {low} to {high}")
    return int(value)


def task_id(request: Request) -> int:
    value: int = request.path_params["task_id"]
    if not 1 <= value <= ID_MAX:
        raise HTTPException(422, "task id out of range")
    return value


async def task_input(request: Request) -> dict[str, Any]:
    """title (1 to 200 characters once trimmed), description (up to 1000, or null), completed."""
    try:
        data = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise HTTPException(422, "The body is not JSON") from None
    if not isinstance(data, dict) or not FIELDS.issuperset(data):
        raise HTTPException(422, f"The body must be an object with only these fields: {sorted(FIELDS)}")
    title, description, completed = data.get("title"), data.get("description"), data.get("completed", False)
    if not isinstance(title, str) or not 1 <= len(title := title.strip()) <= 200 or "\x00" in title:
        raise HTTPException(422, "title must be text of 1 to 200 characters")
    if description is not None and (
        not isinstance(description, str) or len(description) > 1000 or "\x00" in description
    ):
        raise HTTPException(422, "description must be null or text of at most 1000 characters")
    if not isinstance(completed, bool):
        raise HTTPException(422, "completed must be true or false")
    return {"title": title, "description": description, "completed": completed}


async def fetch(request: Request, query: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    pool: AsyncConnectionPool = request.state.pool
    async with pool.connection() as connection:
        cursor = await connection.execute(query, params)
        return await cursor.fetchall()


async def one_task(request: Request, query: str, params: Mapping[str, Any], status: int = 200) -> Response:
    rows = await fetch(request, query, params)
    if not rows:
        return reply({"detail": "Task not found"}, 404)
    headers = {"Location": f"{request.url.replace(query='')}/{rows[0][7]}"} if status == 201 else None
    return reply(task(rows[0]), status, headers)


async def list_tasks(request: Request) -> Response:
    user = owner(request)
    limit, offset = number(request, "limit", 100, 1, 500), number(request, "offset", 0, 0, MAX_OFFSET)
    rows = await fetch(request, LIST, {"user": user, "limit": limit, "offset": offset})
    if rows:
        total = rows[0][-1] or 0
    elif offset == 0:
        total = 0
    else:  # past the last page: no row carried the total
        counted = await fetch(request, TOTAL, {"user": user})
        total = counted[0][0] if counted else 0
    return reply([task(row) for row in rows], headers={"X-Total-Count": str(total)})


async def create_task(request: Request) -> Response:
    user = owner(request)
    return await one_task(request, CREATE, {"user": user, **await task_input(request)}, 201)


async def get_task(request: Request) -> Response:
    return await one_task(request, GET, {"user": owner(request), "id": task_id(request)})


async def replace_task(request: Request) -> Response:
    params = {"user": owner(request), "id": task_id(request), **await task_input(request)}
    return await one_task(request, REPLACE, params)


async def toggle_task(request: Request) -> Response:
    return await one_task(request, TOGGLE, {"user": owner(request), "id": task_id(request)})


async def ready(request: Request) -> Response:
    await fetch(request, "SELECT 1", {})
    return reply({"status": "ok", "database": "ok"})


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return reply({"detail": exc.detail}, exc.status_code, exc.headers)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    pool = AsyncConnectionPool(
        DATABASE_URL,
        min_size=10,
        max_size=20,
        kwargs={"autocommit": True, "options": "-c TimeZone=UTC"},
        open=False,
    )
    await pool.open(wait=True, timeout=30)
    try:
        yield {"pool": pool}
    finally:
        await pool.close()


TASKS = "/api/{user_id}/tasks"
app = Starlette(
    routes=[
        Route("/health/ready", ready),
        Route(TASKS, list_tasks, methods=["GET"]),
        Route(TASKS, create_task, methods=["POST"]),
        Route(TASKS + "/{task_id:int}", get_task, methods=["GET"]),
        Route(TASKS + "/{task_id:int}", replace_task, methods=["PUT"]),
        Route(TASKS + "/{task_id:int}/complete", toggle_task, methods=["PATCH"]),
    ],
    exception_handlers={HTTPException: http_error},
    lifespan=lifespan,
)
