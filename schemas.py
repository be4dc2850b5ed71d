"""What clients send and get back: the validated request bodies and the documented responses."""

import re
import unicodedata
from datetime import UTC, date, datetime, time
from typing import Annotated, Any, Literal, Self

import orjson
from annotated_types import Ge, Le
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StrictBool,
    StrictInt,
    StringConstraints,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

from models import DESCRIPTION_MAX, SAFE_INTEGER_MAX, TAG_MAX, TAGS_MAX, TITLE_MAX


class Documented:
    """Keywords added to a type's JSON schema: the rule a validator of ours enforces, said in
    the OpenAPI document (a `pattern` that `re` and ECMA-262 read alike)."""

    def __init__(self, **keywords: Any) -> None:
        self.keywords = keywords

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        for branch in json_schema.get("anyOf", ()):  # `X | None`: the keywords go with X
            if branch.get("type") != "null":
                branch.update(self.keywords)
                return json_schema
        return {**json_schema, **self.keywords}


def storable_text(value: str) -> str:
    """Refuse text PostgreSQL cannot store: NUL characters and lone surrogates."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


def char_class(chars: list[int]) -> str:
    """A regex character class body for these code points, as ranges of \\uXXXX escapes: read the
    same way by Python's `re` and by ECMA-262 (what JSON Schema's `pattern` is)."""
    ranges: list[list[int]] = []
    for code in sorted(chars):
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    return "".join(
        f"\\u{start:04x}" if start == end else f"\\u{start:04x}-\\u{end:04x}" for start, end in ranges
    )


# Nothing to see: controls, format characters (zero-width ones included) and separators (spaces),
# in the Basic Multilingual Plane (what a JSON Schema pattern can name without the `u` flag).
INVISIBLE = char_class(
    [c for c in range(0x10000) if unicodedata.category(chr(c)) in ("Cc", "Cf", "Zs", "Zl", "Zp")]
)
# Text with at least one other character: what a title or a tag must have. The OpenAPI document
# carries the same pattern, so a client can check it before sending.
# Anchored, to say "no NUL anywhere" in the same pattern (storable_text refuses NUL everywhere).
VISIBLE_PATTERN = f"^[^\\u0000]*[^{INVISIBLE}][^\\u0000]*$"
NO_NUL_PATTERN = "^[^\\u0000]*$"
VISIBLE = re.compile(f"[^{INVISIBLE}]")
# Python's whitespace (str.isspace, what trimming removes), named one by one, not as \\s:
# Python's `re` and ECMA-262 read \\s differently.
SPACE = char_class([c for c in range(0x110000) if chr(c).isspace()])
# Trimmed, something@domain: no whitespace inside, a dot in the domain with something on both sides.
EMAIL_PATTERN = (
    f"^[{SPACE}]*[^{SPACE}\\u0000]+@[^{SPACE}\\u0000@]*[^{SPACE}\\u0000@.][^{SPACE}\\u0000@]*\\."
    f"[^{SPACE}\\u0000@]*[^{SPACE}\\u0000@.][^{SPACE}\\u0000@]*[{SPACE}]*$"
)
EMAIL = re.compile(EMAIL_PATTERN)
# Something left once trimmed, and no NUL: a name, a login's email.
NON_BLANK_PATTERN = f"^[^\\u0000]*[^{SPACE}\\u0000][^\\u0000]*$"


def at_most(limit: int) -> BeforeValidator:
    """The length limit of a trimmed field, applied to the text as sent, as the document's
    `maxLength` says it: a title of 200 characters and a trailing space is 201 characters."""

    def check(value: Any) -> Any:
        if isinstance(value, str) and len(value) > limit:
            raise PydanticCustomError(
                "string_too_long", "String should have at most {max_length} characters", {"max_length": limit}
            )
        return value

    return BeforeValidator(check)


def email_address(value: str) -> str:
    if not EMAIL.fullmatch(value):
        raise ValueError("must be an email address")
    return value


def visible_text(value: str) -> str:
    """Refuse text with nothing to see: only spaces, zero-width or other format characters."""
    if not VISIBLE.search(value):
        raise ValueError("must contain a visible character")
    return value


Title = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=TITLE_MAX),
    at_most(TITLE_MAX),
    AfterValidator(storable_text),
    AfterValidator(visible_text),
    Documented(pattern=VISIBLE_PATTERN),
]
Description = Annotated[
    str,
    StringConstraints(max_length=DESCRIPTION_MAX),
    AfterValidator(storable_text),
    Documented(pattern=NO_NUL_PATTERN),
]
Email = Annotated[
    str,
    StringConstraints(strip_whitespace=True, to_lower=True, min_length=3, max_length=254),
    at_most(254),
    AfterValidator(storable_text),
    AfterValidator(email_address),
    Documented(pattern=EMAIL_PATTERN),
]
Password = Annotated[
    str,
    StringConstraints(min_length=8, max_length=128),
    AfterValidator(storable_text),
    Documented(pattern=NO_NUL_PATTERN),
]
Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    at_most(100),
    AfterValidator(storable_text),
    Documented(pattern=NON_BLANK_PATTERN),
]


class ErrorDetail(BaseModel):
    detail: str


# --- tasks ------------------------------------------------------------------------------------

# What a client may write for `status`, and the completion each means (case does not matter).
STATUS_WORDS = {"pending": False, "todo": False, "completed": True, "complete": True, "done": True}
StatusWord = Annotated[
    Literal["pending", "todo", "completed", "complete", "done"],
    BeforeValidator(lambda value: value.strip().lower() if isinstance(value, str) else value),
]


class TaskInput(BaseModel):
    """Base of what clients send: fields it does not know, read-only ones included, are ignored.

    Frontends send fields of their own (and the object they received back); refusing them would
    protect nothing. The fields it knows are validated strictly. `status` may stand for
    `completed`; both in one body must agree.
    """

    model_config = ConfigDict(extra="ignore")

    status: StatusWord | None = Field(
        default=None, description="Instead of `completed`: pending or todo; completed, complete or done"
    )

    @model_validator(mode="after")
    def _status_sets_completed(self) -> Self:
        if self.status is None:
            return self
        completed = STATUS_WORDS[self.status]
        if "completed" in self.model_fields_set and getattr(self, "completed", None) != completed:
            raise PydanticCustomError(
                "status_contradiction",
                "status '{status}' contradicts completed={completed}",
                {"status": self.status, "completed": str(getattr(self, "completed", None)).lower()},
            )
        setattr(self, "completed", completed)  # noqa: B010 (declared by the subclasses)
        self.model_fields_set.add("completed")
        return self

    def changes(self) -> dict[str, Any]:
        """The editable fields the client sent, as stored: `status` turned into `completed`,
        `priority` into its rank, `due_date` into an instant and `all_day`."""
        return stored(self.model_dump(exclude_unset=True, exclude={"status", "version"}))


def stored(values: dict[str, Any]) -> dict[str, Any]:
    if "tags" in values:
        values["tags"] = orjson.dumps(values["tags"] or []).decode()
    if "priority" in values:
        values["priority"] = PRIORITIES.index(values["priority"])
    if "due_date" in values:
        values["due_date"], values["all_day"] = stored_due_date(values["due_date"])
    return values


PRIORITIES = ("none", "low", "medium", "high")  # their ranks are their places here
PriorityName = Annotated[
    Literal["none", "low", "medium", "high"],
    BeforeValidator(lambda value: value.strip().lower() if isinstance(value, str) else value),
]
DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")


# How every ISO 8601 date and date-time starts; pydantic alone would also read "12.5" as seconds
# since 1970, which neither the README nor the document's `format` allows.
ISO_8601_START = re.compile(r"\d{4}-\d{2}-\d{2}(?!\d)")
NOT_ISO_8601 = "must be an ISO 8601 date or date-time, such as 2026-12-31 or 2026-12-31T17:00:00Z"


def due_date_input(value: Any) -> Any:
    """'' (an empty date input) is no due date; a date alone is that day, all day."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError("must be an ISO 8601 date or date-time, not a number")
    if isinstance(value, str):
        value = value.strip()
        if not value:
            return None
        if DATE_ONLY.fullmatch(value):
            return date.fromisoformat(value)
        if not ISO_8601_START.match(value):
            raise ValueError(NOT_ISO_8601)
    return value


def blank_is_none(schema: dict[str, Any]) -> None:
    """Say in the schema that a blank string (an empty date input) is taken as null."""
    schema["anyOf"].insert(-1, {"type": "string", "pattern": f"^[{SPACE}]*$"})


def aware(value: datetime | date | None) -> datetime | date | None:
    """A date-time without an offset is taken as UTC; one with an offset must still be a moment
    of the years 1 to 9999 in UTC (0001-01-01T00:00:00+09:00 is not), as it is stored in UTC."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        try:
            value.astimezone(UTC)
        except OverflowError:
            raise ValueError("must be between the years 1 and 9999 in UTC") from None
    return value


DueDate = Annotated[datetime | date | None, BeforeValidator(due_date_input), AfterValidator(aware)]


def stored_due_date(value: datetime | date | None) -> tuple[datetime | None, bool]:
    """(the instant stored, whether it is a whole day)."""
    if value is None:
        return None, False
    if isinstance(value, datetime):
        return value.astimezone(UTC), False
    return datetime.combine(value, time(), UTC), True


Tag = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=TAG_MAX),
    at_most(TAG_MAX),
    AfterValidator(storable_text),
    AfterValidator(visible_text),
    Documented(pattern=VISIBLE_PATTERN),
]


def distinct_tags(tags: list[str] | None) -> list[str]:
    """Each tag once, ignoring case, first spelling and order kept; null is no tags."""
    seen: set[str] = set()
    kept = []
    for tag in tags or ():
        if (key := tag.casefold()) not in seen:
            seen.add(key)
            kept.append(tag)
    if len(kept) > TAGS_MAX:
        raise PydanticCustomError(
            "too_many_tags",
            "at most {limit} tags per task, not {count}",
            {"limit": TAGS_MAX, "count": len(kept)},
        )
    return kept


TAGS_DOC = (
    f"Up to {TAGS_MAX} tags of 1 to {TAG_MAX} characters, trimmed; repeats (ignoring case) are "
    "dropped, the order is kept. `null` or `[]` for none"
)


Tags = Annotated[list[Tag] | None, AfterValidator(distinct_tags)]


def not_null(value: Any) -> Any:
    if value is None:
        raise ValueError("may be left out, but not null")
    return value


class NotNull:
    """For an optional field that may be left out but not sent as null: refuses null, and
    says so in the JSON schema (the `null` branch of `X | None` is left out of it)."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(not_null, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        branches = [branch for branch in json_schema.get("anyOf", ()) if branch != {"type": "null"}]
        if len(branches) == 1:
            json_schema = {**{k: v for k, v in json_schema.items() if k != "anyOf"}, **branches[0]}
        return json_schema


def no_default(schema: dict[str, Any]) -> None:
    """Leave a NotNull field's `default: null` out of its schema: null is not a value it takes."""
    schema.pop("default", None)


def whole_number(value: Any) -> Any:
    """A JSON number with no fraction (`3.0`) is that integer, as JSON Schema's `integer` says;
    a string or a boolean stays a wrong type."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# 1 to the largest integer a JSON number holds exactly (JavaScript's Number.MAX_SAFE_INTEGER; the
# database would take more): a larger one is 422, not an overflow, and JSON Schema validators,
# which compare numbers as doubles, draw the line at the same place.
Version = Annotated[StrictInt, Ge(1), Le(SAFE_INTEGER_MAX), BeforeValidator(whole_number)]

VERSION_DOC = (
    "The version this change is based on: if the task has changed since, nothing is written "
    "and the answer is 409 with the current task (the If-Match header does the same, with 412)"
)
DUE_DATE_DOC = (
    "ISO 8601: a date-time (UTC if it has no offset), or a date alone for that whole day; '' or null for none"
)


class TaskCreate(TaskInput):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "title": "Buy milk",
                    "description": "2 litres",
                    "priority": "high",
                    "due_date": "2026-12-24",
                },
                {
                    "title": "Plan the offsite",
                    "tags": ["work", "Q1"],
                    "due_date": "2026-12-31T17:00:00+01:00",
                },
            ]
        }
    )

    title: Title
    description: Description | None = None
    # JSON true/false only: "yes" or 1 is a wrong type, not a guess.
    completed: StrictBool = False
    priority: PriorityName = Field(default="none", description="none, low, medium or high, any case")
    due_date: DueDate = Field(default=None, description=DUE_DATE_DOC, json_schema_extra=blank_is_none)
    tags: Tags = Field(default=None, description=TAGS_DOC, examples=[["work", "errands"]])

    def changes(self) -> dict[str, Any]:
        return stored(self.model_dump(exclude={"status"}))


class TaskPatch(TaskInput):
    """PATCH, and PUT alike: the fields sent change, the others stay; null clears `description`."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"status": "done"}, {"title": "Buy oat milk", "tags": ["errands"], "version": 3}]
        }
    )

    title: Annotated[Title | None, NotNull()] = Field(default=None, json_schema_extra=no_default)
    description: Description | None = None
    completed: Annotated[StrictBool | None, NotNull()] = Field(default=None, json_schema_extra=no_default)
    priority: Annotated[PriorityName | None, NotNull()] = Field(
        default=None, description="none, low, medium or high, any case", json_schema_extra=no_default
    )
    due_date: DueDate = Field(default=None, description=DUE_DATE_DOC, json_schema_extra=blank_is_none)
    tags: Tags = Field(default=None, description=TAGS_DOC + "; the list sent replaces the task's")
    version: Version | None = Field(default=None, description=VERSION_DOC)


class TaskCompletion(TaskInput):
    """`{"completed": true|false}` (or a `status`) sets completion; `{}` toggles it."""

    completed: Annotated[StrictBool | None, NotNull()] = Field(default=None, json_schema_extra=no_default)
    version: Version | None = Field(default=None, description=VERSION_DOC)


class TaskPublic(BaseModel):
    """A task as every route returns it (written straight from the row; see tasks.PUBLIC_COLUMNS)."""

    title: str
    description: str | None
    completed: bool
    status: Literal["pending", "completed"] = Field(description="Read-only: derived from `completed`")
    priority: Literal["none", "low", "medium", "high"]
    due_date: datetime | date | None = Field(description="A date alone for an all-day due date")
    tags: list[str] = Field(description="In the order given")
    id: int
    user_id: str
    version: int = Field(description="Read-only: rises by one on every change")
    completed_at: datetime | None
    created_at: datetime
    updated_at: datetime


# --- accounts ---------------------------------------------------------------------------------


class UserBase(BaseModel):
    email: Email
    name: Name


class UserRegister(UserBase):
    model_config = ConfigDict(extra="forbid")

    password: Password


class UserLogin(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Not format-checked: an unknown or malformed email is the same 401 as a wrong password.
    email: Annotated[
        str,
        StringConstraints(strip_whitespace=True, to_lower=True, min_length=1, max_length=254),
        AfterValidator(storable_text),
        Documented(pattern=NON_BLANK_PATTERN),
    ]
    password: Annotated[
        str,
        StringConstraints(min_length=1, max_length=128),
        AfterValidator(storable_text),
        Documented(pattern=NO_NUL_PATTERN),
    ]


class UserPublic(UserBase):
    model_config = ConfigDict(from_attributes=True)

    id: str
    created_at: datetime


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 (the OAuth2 token type, not a secret)
    expires_in: int
    user: UserPublic
