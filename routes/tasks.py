"""The task API: /api/{user_id}/tasks.

Each handler runs on the event loop, checks the token there, and hands its one statement to a
worker thread (`mine.run`): one hop per request. Rows are written to JSON once, straight from the
database (orjson), in the shape that `schemas.TaskPublic` documents.
"""

from typing import Annotated, Any, Literal
from urllib.parse import quote, urlencode

import orjson
from fastapi import APIRouter, Body, HTTPException, Path, Query, Request, Response, status

import tasks
from dependencies import TOKEN_ERRORS, MyTasks
from models import ID_MAX
from schemas import ErrorDetail, TaskCompletion, TaskCreate, TaskPatch, TaskPublic

AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    **TOKEN_ERRORS,
    403: {"model": ErrorDetail, "description": "The path user is not the token's subject"},
}
TASK_ERRORS: dict[int | str, dict[str, Any]] = {
    **AUTH_ERRORS,
    404: {"model": ErrorDetail, "description": "No such task for this user"},
}

router = APIRouter(prefix="/api/{user_id}/tasks", tags=["tasks"], responses=AUTH_ERRORS)

TaskId = Annotated[int, Path(ge=1, le=ID_MAX, description="The task's id")]
SORT_ALIASES: dict[str, tasks.SortField] = {
    "created_at": "created_at",
    "created": "created_at",
    "updated_at": "updated_at",
    "updated": "updated_at",
    "title": "title",
}
# A leading "+" arrives as a space when the client did not percent-encode it.
SORT_PATTERN = r"^[-+ ]?(created_at|created|updated_at|updated|title)$"
MAX_OFFSET = 2**31 - 1


def json_response(content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(content, option=orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z),
        status_code=status_code,
        headers=headers,
        media_type="application/json",
    )


def task_response(row: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    if row is None:
        raise task_not_found()
    return json_response(tasks.as_public(row), status_code, headers)


def task_not_found() -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, "Task not found")


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
async def list_tasks(
    mine: MyTasks,
    request: Request,
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
) -> Response:
    wanted = {"all": None, "pending": False, "completed": True}[status_filter]
    if wanted is not None and completed is not None and wanted != completed:
        raise HTTPException(422, "status and completed filters contradict each other")
    where = tasks.TaskFilter(completed=completed if completed is not None else wanted)
    page = await mine.run(tasks.list_page, where, sort_order(sort, order), limit=limit, offset=offset)
    headers = {"X-Total-Count": str(page.total)}
    links = page_links(request, total=page.total, limit=limit, offset=offset)
    if links:
        headers["Link"] = links
    return json_response([tasks.as_public(row) for row in page.rows], headers=headers)


def sort_order(sort: str | None, order: str | None) -> tasks.TaskOrder:
    """The list order; without `sort`, newest first."""
    if sort is None:
        return tasks.TaskOrder("created_at", descending=order != "asc")
    field = SORT_ALIASES[sort.lstrip("-+ ")]
    sign = sort[0] if sort[0] in "-+ " else None
    if order is None:
        return tasks.TaskOrder(field, descending=sign == "-")
    if sign is not None and (sign == "-") != (order == "desc"):
        raise HTTPException(422, f"sort '{sort.strip()}' and order={order} contradict each other")
    return tasks.TaskOrder(field, descending=order == "desc")


def request_url(request: Request) -> str:
    """The URL of this request without its query, percent-encoded as the client sent it.

    Built from the raw path: the decoded one may hold characters (non-ASCII, `?`) that a user id
    can contain but a header or a URL cannot carry as they are.
    """
    raw_path = request.scope.get("raw_path")
    path = raw_path.decode("latin-1") if raw_path else quote(request.scope["path"])
    return f"{request.url.scheme}://{request.url.netloc}{path.rstrip('/')}"


def page_links(request: Request, *, total: int, limit: int, offset: int) -> str:
    if offset == 0 and limit >= total:
        return ""
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
async def create_task(task_in: TaskCreate, mine: MyTasks, request: Request) -> Response:
    row = await mine.run(tasks.create, task_in.changes())
    location = f"{request_url(request)}/{row.id}"
    return task_response(row, status.HTTP_201_CREATED, {"Location": location})


@router.get("/{task_id}", response_model=TaskPublic, summary="Get a task", responses=TASK_ERRORS)
async def get_task(task_id: TaskId, mine: MyTasks) -> Response:
    return task_response(await mine.run(tasks.get, task_id))


@router.put(
    "/{task_id}",
    response_model=TaskPublic,
    summary="Update a task (as PATCH)",
    description=(
        "Changes the fields sent and leaves the others as they are, exactly like PATCH: an edit "
        "form that sends only some fields does not reset the rest. `null` clears `description`."
    ),
    responses=TASK_ERRORS,
)
async def replace_task(task_id: TaskId, changes: TaskPatch, mine: MyTasks) -> Response:
    return task_response(await mine.run(tasks.update, task_id, changes.changes()))


@router.patch(
    "/{task_id}",
    response_model=TaskPublic,
    summary="Update some fields of a task",
    description="Only the fields sent change.",
    responses=TASK_ERRORS,
)
async def patch_task(task_id: TaskId, changes: TaskPatch, mine: MyTasks) -> Response:
    return task_response(await mine.run(tasks.update, task_id, changes.changes()))


COMPLETION_DOC = (
    'With no body or `{}`, flips `completed`. With `{"completed": true|false}` (or a `status`), '
    "sets it, so a retried request is safe. `completed_at` is set when the task becomes "
    "completed and cleared when it stops being so."
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
async def complete_task(
    task_id: TaskId,
    mine: MyTasks,
    completion: Annotated[TaskCompletion | None, Body()] = None,
) -> Response:
    values = completion.changes() if completion is not None else {}
    if not values:
        return task_response(await mine.run(tasks.toggle, task_id))
    return task_response(await mine.run(tasks.update, task_id, values))


@router.delete(
    "/{task_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a task",
    responses=TASK_ERRORS,
)
async def delete_task(task_id: TaskId, mine: MyTasks) -> None:
    if not await mine.run(tasks.remove, task_id):
        raise task_not_found()
