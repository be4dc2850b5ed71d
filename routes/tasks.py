"""The task API: /api/{user_id}/tasks.

Each handler runs on the event loop, checks the token there, and hands its data work (one
statement, but for the cases tasks.py names) to a worker thread (`mine.run`): one hop per
request. Rows are written to JSON once, straight from the database (orjson), in the shape that
`schemas.TaskPublic` documents.
"""

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, time, timedelta
from types import UnionType
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from fastapi import (
    APIRouter,
    Body,
    Depends,
    Header,
    HTTPException,
    Path,
    Query,
    Request,
    Response,
    params,
    status,
)
from fastapi.dependencies.utils import get_flat_params
from fastapi.openapi.models import Example
from pydantic import AfterValidator, BaseModel, BeforeValidator, Field

import audit
import tasks
from dependencies import TOKEN_ERRORS, MyTasks
from models import ID_MAX, TAG_MAX, TAGS_MAX
from schemas import (
    ISO_8601_START,
    NO_NUL_PATTERN,
    NOT_ISO_8601,
    PRIORITIES,
    SPACE,
    ErrorDetail,
    TaskCompletion,
    TaskCreate,
    TaskPatch,
    TaskPublic,
    aware,
    storable_text,
)

AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    **TOKEN_ERRORS,
    403: {"model": ErrorDetail, "description": "The path user is not the token's subject"},
}
TASK_ERRORS: dict[int | str, dict[str, Any]] = {
    **AUTH_ERRORS,
    404: {"model": ErrorDetail, "description": "No such task for this user"},
}

ETAG_HEADER = {
    "ETag": {"description": 'The task\'s entity tag, `"id.version"`', "schema": {"type": "string"}}
}
TASK_OK: dict[int | str, dict[str, Any]] = {200: {"description": "The task", "headers": ETAG_HEADER}}
# The writes that honour If-Match (412) and a body `version` (409): both answer the current task.
STALE_IF_MATCH: dict[int | str, dict[str, Any]] = {
    412: {
        "model": TaskPublic,
        "description": "If-Match no longer matches: nothing was written; the body is the current task",
        "headers": ETAG_HEADER,
    }
}
STALE_VERSION: dict[int | str, dict[str, Any]] = {
    409: {
        "model": TaskPublic,
        "description": "The body's `version` is stale: nothing was written; the body is the current task",
        "headers": ETAG_HEADER,
    }
}
WRITE_ERRORS = {**TASK_ERRORS, **TASK_OK, **STALE_IF_MATCH, **STALE_VERSION}


async def single_valued(request: Request, mine: MyTasks) -> None:
    """A query parameter that takes one value, sent more than once, is 422: FastAPI would keep the
    last and drop the others, and `DELETE ?completed=true&completed=false` would then delete by
    whichever came last. (Empty values are dropped before: see middleware.EmptyQueryValues.) After
    the token check (`mine`, computed once per request), so that a request without one is a 401."""
    route = request.scope.get("route")
    if route is None or not request.query_params:
        return
    for name in single_value_names(route):
        if len(request.query_params.getlist(name)) > 1:
            raise HTTPException(422, f"'{name}' takes one value: send it once")


def single_value_names(route: Any) -> tuple[str, ...]:
    names: tuple[str, ...] | None = getattr(route, "single_value_names", None)
    if names is None:
        names = tuple(
            field.alias
            for field in get_flat_params(route.dependant)
            if isinstance(field.field_info, params.Query) and not takes_many(field.field_info.annotation)
        )
        route.single_value_names = names
    return names


def takes_many(annotation: Any) -> bool:
    """Whether a query parameter of this type is a list (`list[str] | None`): repeatable."""
    origin = get_origin(annotation)
    if origin is Union or origin is UnionType or origin is Annotated:
        return any(takes_many(argument) for argument in get_args(annotation))
    return origin in (list, set, tuple, frozenset)


router = APIRouter(
    prefix="/api/{user_id}/tasks",
    tags=["tasks"],
    responses=AUTH_ERRORS,
    dependencies=[Depends(single_valued)],
)

TaskId = Annotated[int, Path(ge=1, le=ID_MAX, description="The task's id", examples=[1])]


def iso_8601(value: Any) -> Any:
    """A query's date or date-time as ISO 8601 only: not a number (pydantic would read `0.5` as
    seconds since 1970), which the document's `format` does not allow either."""
    if isinstance(value, str) and not ISO_8601_START.match(value.strip()):
        raise ValueError(NOT_ISO_8601)
    return value


# What a date or date-time query parameter takes, as the document says it.
DATE_OR_DATE_TIME = {
    "anyOf": [{"type": "string", "format": "date-time"}, {"type": "string", "format": "date"}]
}
Moment = Annotated[datetime | None, BeforeValidator(iso_8601), AfterValidator(aware)]


def any_case(word: str) -> str:
    """A pattern of `word` in any case, letter by letter (`[Aa][Ll][Ll]`): `(?i)` is Python's, not
    JavaScript's, and would also let a dotless i stand for `i`."""
    return "".join(f"[{char.upper()}{char.lower()}]" if char.isalpha() else re.escape(char) for char in word)


# Trimmed, one of the four, in any case.
PRIORITY_PATTERN = f"^[{SPACE}]*({'|'.join(any_case(name) for name in PRIORITIES)})[{SPACE}]*$"
# Trimmed, 1 to TAG_MAX characters, no NUL.
TAG_FILTER_PATTERN = (
    f"^[{SPACE}]*[^{SPACE}\\u0000]([^\\u0000]{{0,{TAG_MAX - 2}}}[^{SPACE}\\u0000])?[{SPACE}]*$"
)


def list_of(pattern: str, **keywords: Any) -> dict[str, Any]:
    """The schema of a repeatable query parameter whose values match `pattern`."""
    return {"anyOf": [{"type": "array", "items": {"type": "string", "pattern": pattern}, **keywords}]}


SEARCH_TEXT = {"anyOf": [{"type": "string", "maxLength": 200, "pattern": NO_NUL_PATTERN}]}
SearchText = Annotated[str | None, AfterValidator(lambda text: text if text is None else storable_text(text))]


def shown(*values: Any) -> dict[str, Example]:
    """Examples of an optional parameter for /docs. The first, chosen by default, sends nothing,
    so "Try it out" sends only the parameters a reader picks. No name looks like a number: a
    browser orders such keys of an object first, and Swagger UI would choose `20` by default."""
    examples = {"not sent": Example(summary="not sent", value="")}
    for value in values:
        text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        examples[f"e.g. {text}"] = Example(value=value)
    return examples


SORT_ALIASES: dict[str, tasks.SortField] = {
    "created_at": "created_at",
    "created": "created_at",
    "updated_at": "updated_at",
    "updated": "updated_at",
    "title": "title",
    "due_date": "due_date",
    "due": "due_date",
    "priority": "priority",
}
# A leading "+" arrives as a space when the client did not percent-encode it.
SORT_PATTERN = r"^[-+ ]?(created_at|created|updated_at|updated|title|due_date|due|priority)(:(asc|desc))?$"
STATUS_FILTERS = {
    "all": None,
    "pending": False,
    "todo": False,
    "completed": True,
    "complete": True,
    "done": True,
}
# Any case, spelled out: Python's `(?i)` is no JavaScript, and Swagger UI's check of the value
# would throw on it.
STATUS_PATTERN = f"^({'|'.join(any_case(word) for word in STATUS_FILTERS)})$"
DEFAULT_LIMIT = 100
MAX_LIMIT = 500
MAX_OFFSET = 2**31 - 1
T = TypeVar("T")


def json_response(content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(content, option=tasks.JSON_OPTIONS),
        status_code=status_code,
        headers=headers,
        media_type="application/json",
    )


def task_response(row: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    if row is None:
        raise task_not_found()
    return json_response(tasks.as_public(row), status_code, {"ETag": etag(row), **(headers or {})})


# --- ETags: HTTP's own optimistic concurrency ---------------------------------------------------

ENTITY_TAG = re.compile(r'(W/)?"(\d+)\.(\d+)"')
IfMatch = Annotated[
    str | None,
    Header(
        description='Write only if the task is still at this ETag (`"id.version"`): else 412',
        openapi_examples=shown('"1.3"', "*"),
    ),
]
IfNoneMatch = Annotated[
    str | None,
    Header(
        description="Answer 304, with no body, if the task is still at this ETag",
        openapi_examples=shown('"1.3"'),
    ),
]


def etag(row: Any) -> str:
    """A task's entity tag: its id and version, so it changes with every change."""
    return etag_of(row.id, row.version)


def etag_of(task_id: int, version: int) -> str:
    return f'"{task_id}.{version}"'


def matching_versions(header: str, task_id: int, *, weak: bool) -> tasks.Versions:
    """The versions of this task that the header's tags name; None for `*` (any)."""
    if header.strip() == "*":
        return None
    versions = set()
    for tag in header.split(","):
        match = ENTITY_TAG.fullmatch(tag.strip())
        # If-Match compares strongly: a weak tag never matches it (RFC 9110, 13.1.1).
        if match and int(match[2]) == task_id and (weak or not match[1]):
            versions.add(int(match[3]))
    return frozenset(versions)


def preconditions(task_id: int, if_match: str | None, version: int | None) -> tuple[tasks.Versions, int]:
    """The versions a write may apply to, and the status to answer when the task is at another."""
    if if_match is not None:
        return matching_versions(if_match, task_id, weak=False), status.HTTP_412_PRECONDITION_FAILED
    if version is not None:
        return frozenset({version}), status.HTTP_409_CONFLICT
    return None, status.HTTP_200_OK


async def write(
    mine: MyTasks, work: Callable[..., Any], task_id: int, *args: Any, mismatch: int, versions: tasks.Versions
) -> Any:
    """Run a conditional write; a task at another version is answered with itself and `mismatch`."""
    try:
        return await mine.run(work, task_id, *args, versions)
    except tasks.VersionMismatch as stale:
        return task_response(stale.current, mismatch)


def task_not_found() -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, "Task not found")


LIST_DESCRIPTION = """
Newest first unless `sort` says otherwise; ties are broken by id. `X-Total-Count` gives the
number of tasks matching the filter (exact), and `Link` the next, previous, first and last pages.

The names other clients use work too: `page` with `page_size` or `per_page` (1-based) for
`offset`/`limit`; `sort_by` with `sort_order`, or `sort=field:asc|desc`, for `sort`/`order`;
`search` for `q`. Sending an alias and the name it stands for in one request is 422.
"""


@dataclass(frozen=True, slots=True)
class Paging:
    """Where a page starts and how long it is, and the names the client used for them."""

    limit: int
    offset: int
    size_name: str = "limit"  # or page_size / per_page
    by_page: bool = False

    def query(self, offset: int) -> list[tuple[str, int]]:
        if self.by_page:
            return [(self.size_name, self.limit), ("page", offset // self.limit + 1)]
        return [("limit", self.limit), ("offset", offset)]


@router.get(
    "",
    response_model=list[TaskPublic],
    summary="List the user's tasks",
    description=LIST_DESCRIPTION,
    responses={
        200: {
            "description": "A page of tasks",
            "headers": {
                "X-Total-Count": {
                    "description": "Tasks matching the filter, across all pages",
                    "required": True,
                    "schema": {"type": "integer", "minimum": 0},
                },
                "Link": {
                    "description": "The next, previous, first and last pages",
                    "schema": {"type": "string"},
                },
            },
        },
        422: {"description": "Invalid query parameter, or an alias mixed with its name"},
    },
)
async def list_tasks(
    mine: MyTasks,
    request: Request,
    status_filter: Annotated[
        str,
        Query(
            alias="status",
            pattern=STATUS_PATTERN,
            description="all; pending (or todo); completed (or complete, done)",
            openapi_examples=shown("pending", "completed", "done"),
        ),
    ] = "all",
    completed: Annotated[
        bool | None, Query(description="Same filter as `status`", openapi_examples=shown(True, False))
    ] = None,
    q: Annotated[
        SearchText,
        Query(
            max_length=200,
            json_schema_extra=SEARCH_TEXT,
            description="Tasks whose title or description contains this, ignoring case",
            openapi_examples=shown("milk"),
        ),
    ] = None,
    search: Annotated[
        SearchText,
        Query(
            max_length=200,
            json_schema_extra=SEARCH_TEXT,
            description="Alias of `q`",
            openapi_examples=shown("milk"),
        ),
    ] = None,
    priority: Annotated[
        list[str] | None,
        Query(
            json_schema_extra=list_of(PRIORITY_PATTERN),
            description="none, low, medium or high (any case); repeat it for any of several",
            openapi_examples=shown(["high"], ["high", "medium"]),
        ),
    ] = None,
    due_before: Annotated[
        Moment,
        Query(
            json_schema_extra=DATE_OR_DATE_TIME,
            description="Due before this instant (ISO 8601; UTC if no offset)",
            openapi_examples=shown("2026-12-31", "2026-12-31T17:00:00+01:00"),
        ),
    ] = None,
    due_after: Annotated[
        Moment,
        Query(
            json_schema_extra=DATE_OR_DATE_TIME,
            description="Due after this instant (ISO 8601; UTC if no offset)",
            openapi_examples=shown("2026-12-01", "2026-12-01T09:00:00Z"),
        ),
    ] = None,
    overdue: Annotated[
        bool | None,
        Query(description="true: not completed and due in the past", openapi_examples=shown(True, False)),
    ] = None,
    has_due_date: Annotated[
        bool | None,
        Query(description="true: has a due date; false: has none", openapi_examples=shown(True, False)),
    ] = None,
    updated_since: Annotated[
        Moment,
        Query(
            json_schema_extra=DATE_OR_DATE_TIME,
            description="Changed after this instant (ISO 8601)",
            openapi_examples=shown("2026-12-01T09:00:00Z"),
        ),
    ] = None,
    tag: Annotated[
        list[str] | None,
        Query(
            json_schema_extra=list_of(TAG_FILTER_PATTERN, maxItems=TAGS_MAX),
            description="Tasks with this tag (ignoring case); repeat it for tasks with all of several",
            openapi_examples=shown(["work"], ["work", "urgent"]),
        ),
    ] = None,
    sort: Annotated[
        str | None,
        Query(
            pattern=SORT_PATTERN,
            description="created_at, updated_at, title, due_date (tasks without one last) or "
            "priority (also created, updated, due); a '-' prefix or a ':desc' suffix sorts "
            "descending. Default: newest first.",
            openapi_examples=shown("title", "-updated_at", "due_date:asc", "priority:desc"),
        ),
    ] = None,
    order: Annotated[
        Literal["asc", "desc"] | None,
        Query(description="Sort direction", openapi_examples=shown("asc", "desc")),
    ] = None,
    sort_by: Annotated[
        str | None,
        Query(
            pattern=SORT_PATTERN, description="Alias of `sort`", openapi_examples=shown("title", "due_date")
        ),
    ] = None,
    sort_order: Annotated[
        Literal["asc", "desc"] | None,
        Query(description="Alias of `order`", openapi_examples=shown("asc", "desc")),
    ] = None,
    limit: Annotated[
        int | None,
        Query(ge=1, le=MAX_LIMIT, description="Page size; default 100", openapi_examples=shown(20, 50)),
    ] = None,
    offset: Annotated[
        int | None,
        Query(ge=0, le=MAX_OFFSET, description="Tasks to skip; default 0", openapi_examples=shown(20, 40)),
    ] = None,
    page: Annotated[
        int | None,
        Query(
            ge=1, le=MAX_OFFSET, description="1-based page, instead of offset", openapi_examples=shown(1, 2)
        ),
    ] = None,
    page_size: Annotated[
        int | None, Query(ge=1, le=MAX_LIMIT, description="Alias of `limit`", openapi_examples=shown(20))
    ] = None,
    per_page: Annotated[
        int | None, Query(ge=1, le=MAX_LIMIT, description="Alias of `limit`", openapi_examples=shown(20))
    ] = None,
) -> Response:
    text = one_of("q", q, "search", search)
    where = tasks.TaskFilter(
        completed=completion_wanted(status_filter, completed),
        search=(text.strip() or None) if text is not None else None,
        priorities=priority_ranks(priority),
        due_before=utc(due_before),
        due_after=utc(due_after),
        overdue=overdue,
        has_due_date=has_due_date,
        updated_since=utc(updated_since),
        tags=wanted_tags(tag),
    )
    ordering = order_of(
        one_of("sort", sort, "sort_by", sort_by), one_of("order", order, "sort_order", sort_order)
    )
    paging = paging_of(limit=limit, offset=offset, page=page, page_size=page_size, per_page=per_page)
    page_rows = await mine.run(tasks.list_page, where, ordering, limit=paging.limit, offset=paging.offset)
    headers = {"X-Total-Count": str(page_rows.total)}
    links = page_links(request, total=page_rows.total, paging=paging)
    if links:
        headers["Link"] = links
    return json_response([tasks.as_public(row) for row in page_rows.rows], headers=headers)


def completion_wanted(status_filter: str, completed: bool | None) -> bool | None:
    """The completion a list asks for by `status` or `completed` (None: either); 422 if they differ."""
    wanted = STATUS_FILTERS[status_filter.lower()]
    if wanted is not None and completed is not None and wanted != completed:
        raise HTTPException(422, "status and completed filters contradict each other")
    return completed if completed is not None else wanted


def priority_ranks(names: list[str] | None) -> tuple[int, ...] | None:
    if not names:
        return None
    try:
        return tuple(sorted({PRIORITIES.index(name.strip().lower()) for name in names}))
    except ValueError:
        raise HTTPException(422, "priority must be none, low, medium or high") from None


def wanted_tags(tags: list[str] | None) -> tuple[str, ...] | None:
    """The tags a list filters on: trimmed, each once (ignoring case), at most a task's worth."""
    if not tags:
        return None
    if len(tags) > TAGS_MAX:  # as sent, as the document's maxItems says: repeats count too
        raise HTTPException(422, f"at most {TAGS_MAX} tags in a filter: a task has no more")
    wanted: dict[str, str] = {}
    for tag in tags:
        tag = tag.strip()
        if not tag or len(tag) > TAG_MAX or "\x00" in tag:
            raise HTTPException(422, f"tag must be 1 to {TAG_MAX} characters, with no NUL")
        wanted.setdefault(tag.casefold(), tag)
    return tuple(wanted.values())


def utc(moment: datetime | None) -> datetime | None:
    """A query's date-time, taken as UTC when it has no offset."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def one_of(name: str, value: T | None, alias: str, alias_value: T | None) -> T | None:
    """A parameter given by its name or by its alias, not both."""
    if value is not None and alias_value is not None:
        raise HTTPException(422, f"'{alias}' is another name for '{name}': send one of them")
    return value if value is not None else alias_value


def paging_of(
    *, limit: int | None, offset: int | None, page: int | None, page_size: int | None, per_page: int | None
) -> Paging:
    sizes = {
        name: size
        for name, size in (("limit", limit), ("page_size", page_size), ("per_page", per_page))
        if size
    }
    if len(sizes) > 1:
        raise HTTPException(422, f"{' and '.join(sizes)} all set the page size: send one of them")
    size_name, size = next(iter(sizes.items()), ("limit", DEFAULT_LIMIT))
    if page is None:
        return Paging(size, offset or 0, size_name)
    if offset is not None:
        raise HTTPException(422, "'page' and 'offset' both say where the page starts: send one of them")
    start = (page - 1) * size
    if start > MAX_OFFSET:
        raise HTTPException(422, f"page {page} of {size} starts past the last possible task")
    return Paging(size, start, "page_size" if size_name == "limit" else size_name, by_page=True)


def order_of(sort: str | None, order: str | None) -> tasks.TaskOrder:
    """The list order; without `sort`, newest first."""
    if sort is None:
        return tasks.TaskOrder("created_at", descending=order != "asc")
    spelled, _, suffix = sort.partition(":")
    field = SORT_ALIASES[spelled.lstrip("-+ ")]
    sign = spelled[0] if spelled[0] in "-+ " else None
    direction = suffix or ({"-": "desc", "+": "asc", " ": "asc"}[sign] if sign else None)
    if sign and suffix and (sign == "-") != (suffix == "desc"):
        raise HTTPException(422, f"sort '{sort.strip()}' contradicts itself")
    if order is not None and direction is not None and direction != order:
        raise HTTPException(422, f"sort '{sort.strip()}' and order={order} contradict each other")
    return tasks.TaskOrder(field, descending=(order or direction) == "desc")


def request_url(request: Request) -> str:
    """The URL of this request without its query, percent-encoded as the client sent it.

    Built from the raw path: the decoded one may hold characters (non-ASCII, `?`) that a user id
    can contain but a header or a URL cannot carry as they are.
    """
    raw_path = request.scope.get("raw_path")
    path = raw_path.decode("latin-1") if raw_path else quote(request.scope["path"])
    return f"{request.url.scheme}://{request.url.netloc}{path.rstrip('/')}"


PAGING_NAMES = ("limit", "offset", "page", "page_size", "per_page")


def page_links(request: Request, *, total: int, paging: Paging) -> str:
    """Links to the next, previous, first and last pages, in the paging names the client used."""
    limit, offset = paging.limit, paging.offset
    if offset == 0 and limit >= total:
        return ""
    base = request_url(request)
    kept = [(k, v) for k, v in request.query_params.multi_items() if k not in PAGING_NAMES]

    def link(rel: str, page_offset: int) -> str:
        query = urlencode([*kept, *paging.query(page_offset)])
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
    responses={
        201: {
            "headers": {
                "Location": {"description": "The task's URL", "required": True, "schema": {"type": "string"}},
                **ETAG_HEADER,
                "Idempotent-Replayed": {
                    "description": "`true` when this is the answer to an earlier request with this key",
                    "schema": {"type": "string", "enum": ["true"]},
                },
            }
        },
        422: {"description": "Invalid task, or an Idempotency-Key first sent with another body"},
    },
)
async def create_task(
    task_in: TaskCreate,
    mine: MyTasks,
    request: Request,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=255,
            description="Retry-safe create: the same key with the same body within 24 hours answers "
            "as the first time and creates nothing; with another body it is 422",
            openapi_examples=shown("5f0c1c2e-7d4b-4c43-9a55-2f1f0b8e3f6a"),
        ),
    ] = None,
) -> Response:
    if idempotency_key is None:
        row = await mine.run(tasks.create, task_in.changes())
        location = f"{request_url(request)}/{row.id}"
        return task_response(row, status.HTTP_201_CREATED, {"Location": location})
    try:
        first = await mine.run(tasks.create_once, task_in.changes(), idempotency_key, IDEMPOTENCY_TTL)
    except tasks.KeyReused:
        raise HTTPException(
            422, "This Idempotency-Key was first sent with another request: use a new key for a new task"
        ) from None
    task = orjson.loads(first.body)
    headers = {
        "Location": f"{request_url(request)}/{task['id']}",
        "ETag": f'"{task["id"]}.{task["version"]}"',
    }
    if first.replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(first.body, first.status_code, headers, media_type="application/json")


BULK_MAX = 100
IDEMPOTENCY_TTL = timedelta(hours=24)


@router.post(
    "/bulk",
    status_code=status.HTTP_201_CREATED,
    response_model=list[TaskPublic],
    summary="Create up to 100 tasks at once",
    description="All are created, in the order given, or none is (one invalid task is a 422 for all).",
)
async def create_tasks(
    tasks_in: Annotated[list[TaskCreate], Body(min_length=1, max_length=BULK_MAX)], mine: MyTasks
) -> Response:
    rows = await mine.run(tasks.create_many, [task.changes() for task in tasks_in])
    return json_response([tasks.as_public(row) for row in rows], status.HTTP_201_CREATED)


class Deleted(BaseModel):
    deleted: int


@router.delete(
    "",
    response_model=Deleted,
    summary="Delete the tasks a status filter matches (clear completed)",
    description=(
        "`DELETE ...?status=completed` clears the completed tasks and answers how many went. "
        "Without a status (or with `status=all`) nothing is deleted and the answer is 422: "
        "a bare DELETE of the collection is far more likely a mistake than a wish to wipe it."
    ),
    responses={422: {"description": "No status filter: refused, nothing deleted"}},
)
async def delete_tasks(
    mine: MyTasks,
    request: Request,
    status_filter: Annotated[
        str,
        Query(
            alias="status",
            pattern=STATUS_PATTERN,
            description="completed or pending (or their aliases)",
            openapi_examples=shown("completed"),
        ),
    ] = "all",
    completed: Annotated[
        bool | None, Query(description="Same filter as `status`", openapi_examples=shown(True))
    ] = None,
) -> Response:
    chosen = completion_wanted(status_filter, completed)
    if chosen is None:
        raise HTTPException(422, "Refusing to delete every task: add status=completed (or status=pending)")
    detail = f"status={'completed' if chosen else 'pending'}"
    origin = audit.Origin.of(request)
    deleted = await mine.run(tasks.remove_matching, tasks.TaskFilter(completed=chosen), origin, detail)
    return json_response({"deleted": deleted})


class TaskStats(BaseModel):
    total: int
    completed: int
    pending: int
    overdue: int = Field(description="Not completed and due in the past")
    due_today: int = Field(description="Not completed and due today, in the time zone `tz`")


@router.get(
    "/stats",
    response_model=TaskStats,
    summary="How many tasks: total, completed, pending, overdue, due today",
    responses={422: {"description": "Unknown time zone"}},
)
async def task_stats(
    mine: MyTasks,
    tz: Annotated[
        str,
        Query(
            max_length=64,
            description="IANA time zone whose today counts as today",
            openapi_examples=shown("Europe/Paris", "America/New_York"),
        ),
    ] = "UTC",
) -> Response:
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise HTTPException(422, f"Unknown time zone '{tz}': use an IANA name such as Europe/Paris") from None
    today = datetime.now(zone).date()
    start = datetime.combine(today, time(), zone)
    end = datetime.combine(today + timedelta(days=1), time(), zone)
    counts = await mine.run(tasks.stats, start.astimezone(UTC), end.astimezone(UTC), today)
    return json_response(asdict(counts))


class ChangesPage(BaseModel):
    tasks: list[TaskPublic] = Field(description="Tasks created or changed, oldest change first")
    deleted: list[int] = Field(description="Ids of tasks deleted")
    cursor: str = Field(description="Pass as `since` for the next page, or for the next sync")
    has_more: bool = Field(description="More changes wait: ask again with `cursor` now")


CHANGES_DESCRIPTION = """
For offline-first clients. Without `since`, every task (a first sync). With the `cursor` of the
previous answer, what changed since: tasks created or edited (as they are now) and the ids of
deleted ones, in the order the changes happened. Apply both lists and keep the new `cursor`;
while `has_more` is true, ask again at once. The cursor is exact (a change sequence, not a
time), so no change is missed or repeated, whenever the writes happened.

Deleted tasks are remembered for `TOMBSTONE_DAYS` (30 by default): a cursor older than that
may have missed deletions and is answered 410; sync again without `since`.
"""


@router.get(
    "/changes",
    response_model=ChangesPage,
    summary="What changed since a cursor (sync)",
    description=CHANGES_DESCRIPTION,
    responses={
        410: {"model": ErrorDetail, "description": "The cursor is too old: sync again without `since`"},
        422: {"description": "Not a cursor this service handed out"},
    },
)
async def task_changes(
    mine: MyTasks,
    since: Annotated[
        str | None,
        Query(
            max_length=100,
            description="The `cursor` of the previous answer; leave out for everything",
            openapi_examples=shown("YzEuNDIuMA"),
        ),
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="Changes per page", openapi_examples=shown(100, 500))
    ] = DEFAULT_LIMIT,
) -> Response:
    try:
        cursor = tasks.Cursor.decode(since) if since else None
    except tasks.CursorInvalid:
        raise HTTPException(
            422, "since: not a cursor from this feed; leave it out to sync from scratch"
        ) from None
    try:
        page = await mine.run(tasks.changes, cursor, limit)
    except tasks.CursorExpired:
        raise HTTPException(
            410, "This cursor is older than the deletions kept: sync again without since"
        ) from None
    return json_response(
        {
            "tasks": [tasks.as_public(row) for row in page.rows],
            "deleted": page.deleted,
            "cursor": page.cursor.encode(),
            "has_more": page.more,
        }
    )


@router.get(
    "/{task_id}",
    response_model=TaskPublic,
    summary="Get a task",
    responses={
        **TASK_ERRORS,
        **TASK_OK,
        304: {"description": "If-None-Match still matches: no body", "headers": ETAG_HEADER},
    },
)
async def get_task(task_id: TaskId, mine: MyTasks, if_none_match: IfNoneMatch = None) -> Response:
    row = await mine.run(tasks.get, task_id)
    if row is not None and if_none_match is not None:
        versions = matching_versions(if_none_match, task_id, weak=True)
        if versions is None or row.version in versions:
            return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag(row)})
    return task_response(row)


@router.put(
    "/{task_id}",
    response_model=TaskPublic,
    summary="Update a task (as PATCH)",
    description=(
        "Changes the fields sent and leaves the others as they are, exactly like PATCH: an edit "
        "form that sends only some fields does not reset the rest. `null` clears `description`."
    ),
    responses=WRITE_ERRORS,
)
async def replace_task(
    task_id: TaskId, changes: TaskPatch, mine: MyTasks, if_match: IfMatch = None
) -> Response:
    return await edit(task_id, changes, mine, if_match)


async def edit(task_id: int, changes: TaskPatch, mine: MyTasks, if_match: str | None) -> Response:
    versions, mismatch = preconditions(task_id, if_match, changes.version)
    result = await write(mine, tasks.update, task_id, changes.changes(), mismatch=mismatch, versions=versions)
    return result if isinstance(result, Response) else task_response(result)


@router.patch(
    "/{task_id}",
    response_model=TaskPublic,
    summary="Update some fields of a task",
    description="Only the fields sent change.",
    responses=WRITE_ERRORS,
)
async def patch_task(
    task_id: TaskId, changes: TaskPatch, mine: MyTasks, if_match: IfMatch = None
) -> Response:
    return await edit(task_id, changes, mine, if_match)


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
    responses=WRITE_ERRORS,
)
@router.patch(
    "/{task_id}/toggle",
    response_model=TaskPublic,
    summary="Toggle or set completion (alias of /complete)",
    description=COMPLETION_DOC,
    responses=WRITE_ERRORS,
)
async def complete_task(
    task_id: TaskId,
    mine: MyTasks,
    completion: Annotated[TaskCompletion | None, Body()] = None,
    if_match: IfMatch = None,
) -> Response:
    values = completion.changes() if completion is not None else {}
    versions, mismatch = preconditions(task_id, if_match, completion.version if completion else None)
    if values:
        result = await write(mine, tasks.update, task_id, values, mismatch=mismatch, versions=versions)
    else:
        result = await write(mine, tasks.toggle, task_id, mismatch=mismatch, versions=versions)
    return result if isinstance(result, Response) else task_response(result)


@router.delete(
    "/{task_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a task",
    responses={**TASK_ERRORS, **STALE_IF_MATCH},
)
async def delete_task(task_id: TaskId, mine: MyTasks, request: Request, if_match: IfMatch = None) -> Response:
    versions, mismatch = preconditions(task_id, if_match, None)
    origin = audit.Origin.of(request)
    result = await write(mine, tasks.remove, task_id, origin, mismatch=mismatch, versions=versions)
    if isinstance(result, Response):
        return result
    if not result:
        raise task_not_found()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
