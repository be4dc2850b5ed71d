"""The task API: /api/{user_id}/tasks."""

from functools import cache
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Body, HTTPException, Query, Request, Response, status
from sqlalchemy import Boolean, ColumnElement, Integer, String, bindparam, case, delete, func, not_, update
from sqlmodel import Session, col, select

from db import SessionDep
from dependencies import (
    OWNED_BY,
    OWNED_TASK,
    TOKEN_ERRORS,
    OwnedTask,
    TaskId,
    UserId,
    find_task,
    task_not_found,
)
from models import (
    ErrorDetail,
    Task,
    TaskCompletion,
    TaskCreate,
    TaskPatch,
    TaskPublic,
    TaskUpdate,
    UTCDateTime,
    utcnow,
)

AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    **TOKEN_ERRORS,
    403: {"model": ErrorDetail, "description": "The path user is not the token's subject"},
}
TASK_ERRORS: dict[int | str, dict[str, Any]] = {
    **AUTH_ERRORS,
    404: {"model": ErrorDetail, "description": "No such task for this user"},
}

router = APIRouter(prefix="/api/{user_id}/tasks", tags=["tasks"], responses=AUTH_ERRORS)

SORT_COLUMNS = {
    "created_at": Task.created_at,
    "created": Task.created_at,
    "updated_at": Task.updated_at,
    "updated": Task.updated_at,
    "title": Task.title,
}
# A leading "+" arrives as a space when the client did not percent-encode it.
SORT_PATTERN = r"^[-+ ]?(created_at|created|updated_at|updated|title)$"
MAX_OFFSET = 2**31 - 1


# Statements are built once per shape (and cached); a request only binds its values.
NOW = bindparam("now", type_=UTCDateTime)
NEW_COMPLETED = bindparam("new_completed", type_=Boolean)
EDITABLE: dict[str, Any] = {
    "title": bindparam("new_title", type_=String),
    "description": bindparam("new_description", type_=String),
    "completed": NEW_COMPLETED,
}
TOGGLED = {
    "completed": not_(col(Task.completed)),
    "completed_at": case((col(Task.completed), None), else_=NOW),
}
# Completing an already completed task keeps its original completion time.
COMPLETED_AT = case((NEW_COMPLETED, func.coalesce(col(Task.completed_at), NOW)), else_=None)
DELETE_TASK = delete(Task).where(*OWNED_TASK)


def owner_filter(*, by_completion: bool = False) -> list[ColumnElement[bool]]:
    filters = [OWNED_BY]
    if by_completion:
        filters.append(col(Task.completed) == bindparam("completed", type_=Boolean))
    return filters


@cache
def list_statement(by_completion: bool, field: str, descending: bool) -> Any:
    column = col(SORT_COLUMNS[field])
    ordering = (column.desc(), col(Task.id).desc()) if descending else (column, col(Task.id))
    return (
        select(Task, func.count().over().label("total"))
        .where(*owner_filter(by_completion=by_completion))
        .order_by(*ordering)
        .limit(bindparam("limit", type_=Integer))
        .offset(bindparam("offset", type_=Integer))
    )


@cache
def count_statement(by_completion: bool) -> Any:
    return select(func.count()).select_from(Task).where(*owner_filter(by_completion=by_completion))


@cache
def update_statement(fields: frozenset[str] | None) -> Any:
    """UPDATE ... RETURNING for these editable fields, or for a completion toggle (None)."""
    if fields is None:
        values: dict[str, Any] = dict(TOGGLED)
    else:
        values = {field: EDITABLE[field] for field in fields}
        if "completed" in fields:
            values["completed_at"] = COMPLETED_AT
    values["updated_at"] = NOW
    return (
        update(Task)
        .where(*OWNED_TASK)
        .values(**values)
        .returning(Task)
        .execution_options(synchronize_session=False)
    )


@router.get(
    "",
    response_model=list[TaskPublic],
    summary="List the user's tasks",
    description=(
        "Newest first unless `sort`/`order` say otherwise; ties are broken by id. "
        "`X-Total-Count` gives the number of tasks matching the filter, and `Link` the "
        "next and previous pages."
    ),
    responses={422: {"description": "Invalid query parameter"}},
)
def list_tasks(
    user_id: UserId,
    session: SessionDep,
    request: Request,
    response: Response,
    status_filter: Annotated[
        Literal["all", "pending", "completed"], Query(alias="status", description="Which tasks")
    ] = "all",
    completed: Annotated[bool | None, Query(description="Same filter as `status`")] = None,
    sort: Annotated[
        str | None,
        Query(
            pattern=SORT_PATTERN,
            description="created_at, updated_at or title (also created, updated); "
            "a '-' prefix sorts descending. Default: newest first.",
        ),
    ] = None,
    order: Annotated[Literal["asc", "desc"] | None, Query(description="Sort direction")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> list[Task]:
    wanted = {"all": None, "pending": False, "completed": True}[status_filter]
    if wanted is not None and completed is not None and wanted != completed:
        raise HTTPException(422, "status and completed filters contradict each other")
    wanted = completed if completed is not None else wanted
    field, descending = sort_order(sort, order)

    # One statement: the page and, through a window count, the total that matches the filter.
    params = {"owner": user_id, "completed": wanted, "limit": limit, "offset": offset}
    rows = session.exec(list_statement(wanted is not None, field, descending), params=params).all()
    if rows:
        total = rows[0][1]
    elif offset == 0:
        total = 0
    else:  # past the last page: the window count had no row to ride on
        total = session.exec(count_statement(wanted is not None), params=params).one()

    response.headers["X-Total-Count"] = str(total)
    links = page_links(request, total=total, limit=limit, offset=offset)
    if links:
        response.headers["Link"] = links
    return [task for task, _ in rows]


def sort_order(sort: str | None, order: str | None) -> tuple[str, bool]:
    """The sort field and whether it is descending; without `sort`, newest first."""
    if sort is None:
        return "created_at", order != "asc"
    field = sort.lstrip("-+ ")
    sign = sort[0] if sort[0] in "-+ " else None
    if order is None:
        return field, sign == "-"
    if sign is not None and (sign == "-") != (order == "desc"):
        raise HTTPException(422, f"sort '{sort.strip()}' and order={order} contradict each other")
    return field, order == "desc"


def request_url(request: Request) -> str:
    """The URL of this request without its query, percent-encoded as the client sent it.

    Built from the raw path: the decoded one may hold characters (non-ASCII, `?`) that a user id
    can contain but a header or a URL cannot carry as they are.
    """
    raw_path = request.scope.get("raw_path")
    path = raw_path.decode("latin-1") if raw_path else quote(request.scope["path"])
    return f"{request.url.scheme}://{request.url.netloc}{path.rstrip('/')}"


def page_links(request: Request, *, total: int, limit: int, offset: int) -> str:
    base = request_url(request)
    kept = [(k, v) for k, v in request.query_params.multi_items() if k not in ("limit", "offset")]

    def link(rel: str, page_offset: int) -> str:
        query = urlencode([*kept, ("limit", limit), ("offset", page_offset)])
        return f'<{base}?{query}>; rel="{rel}"'

    links = []
    if offset + limit < total:
        links.append(link("next", offset + limit))
    if offset > 0:
        links.append(link("prev", max(0, min(offset, total) - limit)))
    if links:
        links.append(link("first", 0))
        links.append(link("last", max(0, (total - 1) // limit * limit)))
    return ", ".join(links)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=TaskPublic,
    summary="Create a task",
    response_description="The created task; `Location` names its URL",
)
def create_task(
    task_in: TaskCreate, user_id: UserId, session: SessionDep, request: Request, response: Response
) -> Task:
    now = utcnow()
    task = Task(
        **task_in.model_dump(),
        user_id=user_id,
        created_at=now,
        updated_at=now,
        completed_at=now if task_in.completed else None,
    )
    session.add(task)
    session.flush()  # the INSERT: gives the id, and nothing is committed if what follows fails
    response.headers["Location"] = f"{request_url(request)}/{task.id}"
    session.commit()
    return task


@router.get("/{task_id}", response_model=TaskPublic, summary="Get a task", responses=TASK_ERRORS)
async def get_task(task: OwnedTask) -> Task:
    # Async on purpose: the lookup already ran in the threadpool (OwnedTask); nothing here blocks.
    return task


@router.put(
    "/{task_id}",
    response_model=TaskPublic,
    summary="Replace a task",
    description="Replaces every editable field: a field left out takes its default.",
    responses=TASK_ERRORS,
)
def replace_task(task_id: TaskId, task_in: TaskUpdate, user_id: UserId, session: SessionDep) -> Task:
    return update_task(session, user_id, task_id, task_in.model_dump())


@router.patch(
    "/{task_id}",
    response_model=TaskPublic,
    summary="Update some fields of a task",
    description="Only the fields sent change.",
    responses=TASK_ERRORS,
)
def patch_task(task_id: TaskId, changes: TaskPatch, user_id: UserId, session: SessionDep) -> Task:
    values = changes.model_dump(exclude_unset=True)
    if not values:
        return find_task(session, user_id, task_id)
    return update_task(session, user_id, task_id, values)


COMPLETION_DOC = (
    'With no body, flips `completed`. With `{"completed": true|false}`, sets it, so a retried '
    "request is safe. `completed_at` is set when the task becomes completed and cleared when "
    "it stops being so."
)


@router.patch(
    "/{task_id}/complete",
    response_model=TaskPublic,
    summary="Toggle or set completion",
    description=COMPLETION_DOC,
    responses=TASK_ERRORS,
)
@router.patch(
    "/{task_id}/toggle",
    response_model=TaskPublic,
    summary="Toggle or set completion (alias of /complete)",
    description=COMPLETION_DOC,
    responses=TASK_ERRORS,
)
def complete_task(
    task_id: TaskId,
    user_id: UserId,
    session: SessionDep,
    completion: Annotated[TaskCompletion | None, Body()] = None,
) -> Task:
    values = None if completion is None else {"completed": completion.completed}
    return update_task(session, user_id, task_id, values)


@router.delete(
    "/{task_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a task",
    responses=TASK_ERRORS,
)
def delete_task(task_id: TaskId, user_id: UserId, session: SessionDep) -> None:
    result = session.exec(DELETE_TASK, params={"task": task_id, "owner": user_id})
    if result.rowcount == 0:
        raise task_not_found()
    session.commit()


def update_task(session: Session, user_id: str, task_id: int, values: dict[str, Any] | None) -> Task:
    """One atomic UPDATE ... RETURNING scoped to the owner (None toggles completion): 404 if no row."""
    params = {"task": task_id, "owner": user_id, "now": utcnow()}
    params.update({f"new_{field}": value for field, value in (values or {}).items()})
    statement = update_statement(None if values is None else frozenset(values))
    task = session.exec(statement, params=params).scalars().one_or_none()
    if task is None:
        raise task_not_found()
    session.commit()
    return task
