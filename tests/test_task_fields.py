"""Priority, due dates and versions: what they accept, how they list, and the migration that adds them."""

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from db import make_engine, migrate, migrate_down
from testkit import base_settings, bearer, sign

TASKS = "/api/alice/tasks"


def create(client: TestClient, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    response = client.post(TASKS, json={"title": "a task", **fields}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def titles(client: TestClient, headers: dict[str, str], query: str) -> list[str]:
    response = client.get(f"{TASKS}?{query}", headers=headers)
    assert response.status_code == 200, response.text
    return [task["title"] for task in response.json()]


def error_locs(response: Any) -> list[list[Any]]:
    assert response.status_code == 422, response.text
    return [error["loc"] for error in response.json()["detail"]]


# --- priority --------------------------------------------------------------------------------


def test_priority_defaults_to_none_and_is_answered_lower_case(client: TestClient, alice: dict) -> None:
    assert create(client, alice)["priority"] == "none"
    assert create(client, alice, priority="High")["priority"] == "high"
    assert create(client, alice, priority=" medium ")["priority"] == "medium"


@pytest.mark.parametrize("value", ["urgent", 3, None, ""])
def test_an_unknown_priority_is_422(client: TestClient, alice: dict, value: object) -> None:
    assert error_locs(client.post(TASKS, json={"title": "t", "priority": value}, headers=alice)) == [
        ["body", "priority"]
    ]
    task = create(client, alice)
    assert error_locs(client.patch(f"{TASKS}/{task['id']}", json={"priority": value}, headers=alice)) == [
        ["body", "priority"]
    ]


def test_priority_sorts_high_over_medium_over_low_over_none(client: TestClient, alice: dict) -> None:
    for name in ("low", "none", "high", "medium", "high"):
        create(client, alice, title=f"{name}", priority=name)
    assert titles(client, alice, "sort=-priority") == ["high", "high", "medium", "low", "none"]
    assert titles(client, alice, "sort=priority") == ["none", "low", "medium", "high", "high"]


def test_priority_filter_takes_several(client: TestClient, alice: dict) -> None:
    for name in ("low", "none", "high", "medium"):
        create(client, alice, title=name, priority=name)
    assert sorted(titles(client, alice, "priority=high&priority=LOW")) == ["high", "low"]
    response = client.get(f"{TASKS}?priority=medium", headers=alice)
    assert response.headers["X-Total-Count"] == "1"
    assert client.get(f"{TASKS}?priority=urgent", headers=alice).json()["detail"] == (
        "priority must be none, low, medium or high"
    )


# --- due dates -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "answered"),
    [
        ("2026-12-01", "2026-12-01"),
        ("2026-12-01T09:30:00Z", "2026-12-01T09:30:00Z"),
        ("2026-12-01T10:30:00+01:00", "2026-12-01T09:30:00Z"),
        ("2026-12-01T09:30:00", "2026-12-01T09:30:00Z"),
        ("", None),
        (None, None),
    ],
    ids=["date-alone", "utc", "offset", "no-offset-is-utc", "empty-input", "null"],
)
def test_due_dates_round_trip(
    client: TestClient, alice: dict, sent: str | None, answered: str | None
) -> None:
    task = create(client, alice, due_date=sent)
    assert task["due_date"] == answered
    assert client.get(f"{TASKS}/{task['id']}", headers=alice).json()["due_date"] == answered


@pytest.mark.parametrize("value", ["tomorrow", "2026-13-01", "2026-02-30", 20261201])
def test_a_bad_due_date_is_422(client: TestClient, alice: dict, value: object) -> None:
    assert error_locs(client.post(TASKS, json={"title": "t", "due_date": value}, headers=alice))[0][:2] == [
        "body",
        "due_date",
    ]


def test_patch_null_clears_the_due_date_and_a_date_replaces_a_time(client: TestClient, alice: dict) -> None:
    task = create(client, alice, due_date="2026-12-01T09:30:00Z")
    url = f"{TASKS}/{task['id']}"
    assert (
        client.patch(url, json={"due_date": "2026-12-24"}, headers=alice).json()["due_date"] == "2026-12-24"
    )
    assert client.patch(url, json={"title": "kept"}, headers=alice).json()["due_date"] == "2026-12-24"
    assert client.patch(url, json={"due_date": None}, headers=alice).json()["due_date"] is None


def test_overdue_means_not_completed_and_past_due_and_all_day_only_after_its_day(
    client: TestClient, alice: dict
) -> None:
    now = datetime.now(UTC)
    create(client, alice, title="an hour late", due_date=(now - timedelta(hours=1)).isoformat())
    create(client, alice, title="yesterday", due_date=(now - timedelta(days=1)).date().isoformat())
    create(client, alice, title="today, all day", due_date=now.date().isoformat())
    create(
        client, alice, title="late but done", due_date=(now - timedelta(days=3)).isoformat(), completed=True
    )
    create(client, alice, title="next week", due_date=(now + timedelta(days=7)).isoformat())
    create(client, alice, title="no date")
    assert sorted(titles(client, alice, "overdue=true")) == ["an hour late", "yesterday"]
    assert sorted(titles(client, alice, "overdue=false")) == [
        "late but done",
        "next week",
        "no date",
        "today, all day",
    ]
    assert client.get(f"{TASKS}?overdue=true", headers=alice).headers["X-Total-Count"] == "2"


def test_due_date_filters(client: TestClient, alice: dict) -> None:
    create(client, alice, title="nov", due_date="2026-11-15T12:00:00Z")
    create(client, alice, title="dec", due_date="2026-12-15")
    create(client, alice, title="none")
    assert titles(client, alice, "due_before=2026-12-01") == ["nov"]
    assert titles(client, alice, "due_after=2026-12-01T00:00:00Z") == ["dec"]
    assert titles(client, alice, "due_after=2026-11-01&due_before=2027-01-01&sort=due_date") == ["nov", "dec"]
    assert titles(client, alice, "has_due_date=false") == ["none"]
    assert sorted(titles(client, alice, "has_due_date=true")) == ["dec", "nov"]
    assert error_locs(client.get(f"{TASKS}?due_before=soon", headers=alice)) == [["query", "due_before"]]


def test_tasks_without_a_due_date_sort_last_either_way(client: TestClient, alice: dict) -> None:
    create(client, alice, title="none 1")
    create(client, alice, title="late", due_date="2026-12-31")
    create(client, alice, title="soon", due_date="2026-12-02T08:00:00Z")
    create(client, alice, title="none 2")
    assert titles(client, alice, "sort=due_date") == ["soon", "late", "none 1", "none 2"]
    assert titles(client, alice, "sort=-due_date") == ["late", "soon", "none 2", "none 1"]
    assert titles(client, alice, "sort_by=due&sort_order=desc") == ["late", "soon", "none 2", "none 1"]


# --- versions --------------------------------------------------------------------------------


def test_the_version_rises_by_one_on_every_change(client: TestClient, alice: dict) -> None:
    task = create(client, alice)
    assert task["version"] == 1
    url = f"{TASKS}/{task['id']}"
    versions = [
        client.put(url, json={"title": "b"}, headers=alice).json()["version"],
        client.patch(url, json={"priority": "low"}, headers=alice).json()["version"],
        client.patch(f"{url}/toggle", headers=alice).json()["version"],
        client.patch(f"{url}/complete", json={"completed": False}, headers=alice).json()["version"],
    ]
    assert versions == [2, 3, 4, 5]
    assert client.patch(url, json={}, headers=alice).json()["version"] == 5  # nothing changed
    assert client.get(url, headers=alice).json()["version"] == 5


def test_updated_since_lists_what_changed_after_a_moment(client: TestClient, alice: dict) -> None:
    old = create(client, alice, title="old")
    moment = create(client, alice, title="untouched")["updated_at"]
    client.patch(f"{TASKS}/{old['id']}", json={"description": "touched"}, headers=alice)
    assert titles(client, alice, f"updated_since={moment}") == ["old"]


# --- the migration ---------------------------------------------------------------------------


def test_the_fields_migration_upgrades_a_database_holding_tasks(
    empty_database_url: str, make_client: Callable[..., TestClient]
) -> None:
    engine = make_engine(base_settings(empty_database_url))
    migrate(engine, "0003")
    with engine.connect() as connection:
        for title, done in [("first", False), ("second", True)]:
            connection.execute(
                text(
                    "INSERT INTO task (user_id, title, description, completed, created_at, updated_at) "
                    "VALUES ('alice', :t, 'kept', :c, '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
                ),
                {"t": title, "c": done},
            )
    migrate(engine)
    client = make_client(base_settings(empty_database_url))
    alice = bearer(sign({"sub": "alice"}))
    listed = client.get(TASKS, headers=alice)
    assert listed.headers["X-Total-Count"] == "2"
    by_title = {task["title"]: task for task in listed.json()}
    assert {
        title: (t["priority"], t["due_date"], t["version"], t["description"]) for title, t in by_title.items()
    } == {
        "first": ("none", None, 1, "kept"),
        "second": ("none", None, 1, "kept"),
    }
    assert by_title["second"]["completed"] is True
    # The count triggers survived the new columns: a create through the API is counted.
    create(client, alice, priority="high", due_date="2026-12-01")
    assert client.get(TASKS, headers=alice).headers["X-Total-Count"] == "3"
    client.__exit__(None, None, None)
    migrate_down(engine, "0003")
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT title, description FROM task ORDER BY id")).all()
        connection.execute(text("DELETE FROM task WHERE title = 'first'"))
        total = connection.execute(text("SELECT total FROM task_count WHERE user_id = 'alice'")).scalar()
    assert [tuple(row) for row in rows] == [("first", "kept"), ("second", "kept"), ("a task", None)]
    assert total == 2
    engine.dispose()


# --- stats -----------------------------------------------------------------------------------


def test_stats_count_what_the_filters_would(client: TestClient, alice: dict, bob: dict) -> None:
    now = datetime.now(UTC)
    create(client, alice, title="late", due_date=(now - timedelta(hours=2)).isoformat())
    create(client, alice, title="today", due_date=now.date().isoformat())
    create(client, alice, title="later today", due_date=(now + timedelta(minutes=1)).isoformat())
    create(client, alice, title="done", completed=True, due_date=now.date().isoformat())
    create(client, alice, title="next week", due_date=(now + timedelta(days=7)).isoformat())
    client.post("/api/bob/tasks", json={"title": "bob's", "due_date": now.date().isoformat()}, headers=bob)
    response = client.get(f"{TASKS}/stats", headers=alice)
    assert response.status_code == 200
    stats = response.json()
    overdue = int(client.get(f"{TASKS}?overdue=true", headers=alice).headers["X-Total-Count"])
    assert stats == {
        "total": 5,
        "completed": 1,
        "pending": 4,
        "overdue": overdue,
        "due_today": stats["due_today"],
    }
    assert overdue == 1
    # "late" is due today too unless it fell on yesterday; "today" and "later today" always are
    # (unless a minute from now is tomorrow), "done" is completed.
    expected_today = {"today"}
    if (now - timedelta(hours=2)).date() == now.date():
        expected_today.add("late")
    if (now + timedelta(minutes=1)).date() == now.date():
        expected_today.add("later today")
    assert stats["due_today"] == len(expected_today)


def test_stats_judge_today_in_the_clients_time_zone(client: TestClient, alice: dict) -> None:
    zone = ZoneInfo("Pacific/Kiritimati")  # UTC+14: its today is often UTC's tomorrow
    local_today = datetime.now(zone).date()
    create(client, alice, title="their today", due_date=local_today.isoformat())
    there = client.get(f"{TASKS}/stats?tz=Pacific/Kiritimati", headers=alice).json()
    assert there["due_today"] == 1
    utc_today = datetime.now(UTC).date()
    assert client.get(f"{TASKS}/stats", headers=alice).json()["due_today"] == (
        1 if utc_today == local_today else 0
    )


@pytest.mark.parametrize("tz", ["Mars/Olympus", "../../etc/passwd", " "])
def test_stats_with_an_unknown_time_zone_are_422(client: TestClient, alice: dict, tz: str) -> None:
    response = client.get(f"{TASKS}/stats", params={"tz": tz}, headers=alice)
    assert response.status_code == 422
    assert "time zone" in response.json()["detail"]


def test_stats_of_a_user_with_no_tasks_are_zero(client: TestClient, alice: dict) -> None:
    stats = client.get(f"{TASKS}/stats", headers=alice).json()
    assert stats == {"total": 0, "completed": 0, "pending": 0, "overdue": 0, "due_today": 0}


# --- found by the schema fuzzer (e2e/test_fuzz.py) ----------------------------------------------


@pytest.mark.parametrize("version", [2**63, 8183103143765059043328, 2**53, 1e300])
def test_a_version_too_large_for_a_number_is_422_not_a_crash(
    client: TestClient, alice: dict, version: float
) -> None:
    task = create(client, alice)
    response = client.patch(f"{TASKS}/{task['id']}", json={"version": version}, headers=alice)
    assert error_locs(response) == [["body", "version"]]
    assert client.get(f"{TASKS}/{task['id']}", headers=alice).json()["version"] == 1


@pytest.mark.parametrize("route", ["", "/complete"])
def test_a_version_sent_as_a_whole_float_is_that_integer(client: TestClient, alice: dict, route: str) -> None:
    # JSON Schema's `integer` takes 1.0; so does the API.
    task = create(client, alice)
    response = client.patch(
        f"{TASKS}/{task['id']}{route}", json={"version": 1.0, "completed": True}, headers=alice
    )
    assert response.status_code == 200, response.text
    assert response.json()["version"] == 2
    stale = client.patch(
        f"{TASKS}/{task['id']}{route}", json={"version": 1.0, "completed": False}, headers=alice
    )
    assert stale.status_code == 409


@pytest.mark.parametrize("version", [1.5, "1", True])
def test_a_version_that_is_no_whole_number_is_422(client: TestClient, alice: dict, version: Any) -> None:
    task = create(client, alice)
    assert error_locs(client.patch(f"{TASKS}/{task['id']}", json={"version": version}, headers=alice)) == [
        ["body", "version"]
    ]


def test_the_version_bound_is_documented(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()["components"]["schemas"]["TaskPatch"]
    assert {"type": "integer", "minimum": 1, "maximum": 2**53 - 1} in schema["properties"]["version"]["anyOf"]


@pytest.mark.parametrize("due_date", ["12.5", "1700000000", " 0 "])
def test_a_due_date_that_is_a_number_in_a_string_is_422(
    client: TestClient, alice: dict, due_date: str
) -> None:
    # pydantic alone reads "12.5" as seconds since 1970; the documented format is ISO 8601.
    response = client.post(TASKS, json={"title": "a task", "due_date": due_date}, headers=alice)
    assert error_locs(response) == [["body", "due_date"]]


@pytest.mark.parametrize("parameter", ["due_before", "due_after", "updated_since"])
@pytest.mark.parametrize("value", ["0.5", "1700000000", "-1"])
def test_a_date_filter_that_is_a_number_is_422(
    client: TestClient, alice: dict, parameter: str, value: str
) -> None:
    assert error_locs(client.get(TASKS, params={parameter: value}, headers=alice)) == [["query", parameter]]


def test_a_date_filter_takes_a_date_or_a_date_time_as_documented(client: TestClient, alice: dict) -> None:
    for value in ("2026-12-31", "2026-12-31T17:00:00+01:00", "2026-12-31T17:00:00"):
        assert client.get(TASKS, params={"due_before": value}, headers=alice).status_code == 200
    parameters = client.get("/openapi.json").json()["paths"]["/api/{user_id}/tasks"]["get"]["parameters"]
    schema = next(p["schema"] for p in parameters if p["name"] == "due_before")
    assert {"type": "string", "format": "date"} in schema["anyOf"]


def test_a_blank_due_date_is_documented_as_none(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()["components"]["schemas"]["TaskCreate"]
    branches = schema["properties"]["due_date"]["anyOf"]
    blank = next(branch for branch in branches if "pattern" in branch)
    assert re.fullmatch(blank["pattern"], " \t")


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:10+09:00", "9999-12-31T23:59:59-01:00"])
def test_a_moment_outside_the_years_1_to_9999_in_utc_is_422_not_a_crash(
    client: TestClient, alice: dict, moment: str
) -> None:
    assert error_locs(client.get(TASKS, params={"due_after": moment}, headers=alice)) == [
        ["query", "due_after"]
    ]
    response = client.post(TASKS, json={"title": "a task", "due_date": moment}, headers=alice)
    assert error_locs(response) == [["body", "due_date"]]
    task = create(client, alice)
    assert error_locs(client.patch(f"{TASKS}/{task['id']}", json={"due_date": moment}, headers=alice)) == [
        ["body", "due_date"]
    ]


def test_the_earliest_and_latest_moments_in_utc_are_accepted(client: TestClient, alice: dict) -> None:
    for moment in ("0001-01-01T09:00:10+09:00", "9999-12-31T23:59:59Z"):
        assert client.get(TASKS, params={"due_after": moment}, headers=alice).status_code == 200
        assert client.post(TASKS, json={"title": "t", "due_date": moment}, headers=alice).status_code == 201


@pytest.mark.parametrize(("field", "limit"), [("title", 200), ("tags", 50)], ids=["title", "tag"])
def test_the_length_limit_of_a_trimmed_field_counts_what_is_sent(
    client: TestClient, alice: dict, field: str, limit: int
) -> None:
    # Found by the schema fuzzer (e2e/test_fuzz.py): 200 characters and a trailing space were
    # accepted, while the document's maxLength says 200 at most.
    def body(text: str) -> dict[str, Any]:
        return {"title": text} if field == "title" else {"title": "t", "tags": [text]}

    assert client.post(TASKS, json=body("x" * limit), headers=alice).status_code == 201
    for sent in ("x" * limit + " ", " " + "x" * limit):
        response = client.post(TASKS, json=body(sent), headers=alice)
        assert response.status_code == 422, response.text
        assert "at most" in response.json()["message"]


def test_the_length_limit_of_a_name_and_an_email_counts_what_is_sent(client: TestClient) -> None:
    email = "a" * 240 + "@example.com"  # 252 characters
    body = {"email": email + "   ", "password": "correct horse", "name": "x" * 100}
    assert client.post("/auth/register", json=body).status_code == 422
    assert (
        client.post("/auth/register", json={**body, "email": email, "name": "x" * 100 + " "}).status_code
        == 422
    )
    assert client.post("/auth/register", json={**body, "email": email}).status_code == 201
