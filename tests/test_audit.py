"""The audit trail: one event per register, login (and failed or throttled one), logout, task
deletion and bulk deletion, written with the write it records or not at all; the README's
operator queries run on both databases."""

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, Row, select, text

from audit import AUDIT
from db import ROOT
from models import AUDIT_USER_AGENT_MAX, TASK_IDS_MAX, utcnow
from settings import Settings
from testkit import bearer
from testkit.sql import engine_of

PASSWORD = "correct horse battery"
TASKS = "/api/alice/tasks"
ADDRESS = "203.0.113.7"
AGENT = "audit-test/1.0"


def events(client: TestClient) -> list[Row[Any]]:
    with engine_of(client).connect() as connection:
        return list(connection.execute(select(AUDIT).order_by(AUDIT.c.id)).all())


def only_event(client: TestClient, action: str) -> Row[Any]:
    found = [event for event in events(client) if event.action == action]
    assert len(found) == 1, found
    return found[0]


@pytest.fixture
def remote(make_client: Callable[..., TestClient], settings: Settings) -> TestClient:
    """An app whose client connects from a documentation address, with a User-Agent of its own."""
    return make_client(settings, client=(ADDRESS, 50123), headers={"User-Agent": AGENT})


def register(client: TestClient, email: str = "ada@example.com", **headers: str) -> Any:
    body = {"email": email, "password": PASSWORD, "name": "Ada"}
    response = client.post("/auth/register", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response


def login(client: TestClient, email: str = "ada@example.com", password: str = PASSWORD) -> Any:
    return client.post("/auth/login", json={"email": email, "password": password})


def create(client: TestClient, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    response = client.post(TASKS, json={"title": "a task", **fields}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def request_id_of(response: Any) -> str:
    """The request id the service gave the request (observability.py), as it answers it."""
    request_id = response.headers.get("x-request-id")
    assert request_id, "every answer carries its request id"
    return str(request_id)


# --- one event per action, with who, what, when and from where --------------------------------


def test_register_records_the_new_account_and_where_it_came_from(remote: TestClient) -> None:
    before = utcnow()
    response = register(remote, "  Ada@Example.COM ", **{"X-Request-ID": "audit-req-1"})
    event = only_event(remote, "register")
    assert len(events(remote)) == 1
    assert event.user_id == response.json()["id"]
    assert event.email == "ada@example.com"
    assert (event.address, event.user_agent) == (ADDRESS, AGENT)
    assert before <= event.at <= utcnow()
    assert event.request_id == request_id_of(response) == "audit-req-1"  # the id the client sent
    assert (event.detail, event.deleted_count, event.task_ids) == (None, None, None)


def test_a_taken_email_registers_nothing_and_records_nothing(client: TestClient) -> None:
    register(client)
    body = {"email": "ada@example.com", "password": PASSWORD, "name": "Ada again"}
    assert client.post("/auth/register", json=body).status_code == 409
    assert [event.action for event in events(client)] == ["register"]


def test_a_login_records_the_account(remote: TestClient) -> None:
    user = register(remote).json()
    response = login(remote, " ADA@example.com")
    assert response.status_code == 200, response.text
    event = only_event(remote, "login")
    assert (event.user_id, event.email, event.address, event.user_agent) == (
        user["id"],
        "ada@example.com",
        ADDRESS,
        AGENT,
    )
    assert event.request_id == request_id_of(response)


def test_a_failed_login_records_the_email_tried_and_never_the_password(remote: TestClient) -> None:
    register(remote)
    wrong = "not-the-password-42"
    assert login(remote, "  Ada@Example.com ", wrong).status_code == 401
    assert login(remote, "nobody@example.com", wrong).status_code == 401
    failed = [event for event in events(remote) if event.action == "login_failed"]
    assert [(e.user_id, e.email, e.detail) for e in failed] == [
        (None, "ada@example.com", "wrong_password"),
        (None, "nobody@example.com", "no_account"),
    ]
    assert all(e.address == ADDRESS for e in failed)
    stored = " ".join(str(value) for event in events(remote) for value in event)
    assert wrong not in stored and PASSWORD not in stored


def test_a_throttled_login_is_recorded_as_a_failure(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
) -> None:
    client = make_client(make_settings(login_max_failures_per_email=2, login_max_failures_per_client=100))
    register(client)
    for _ in range(2):
        assert login(client, password="wrong-password-1").status_code == 401
    assert login(client).status_code == 429  # even with the right password
    failed = [event for event in events(client) if event.action == "login_failed"]
    assert [event.detail for event in failed] == ["wrong_password", "wrong_password", "throttled"]
    assert failed[-1].email == "ada@example.com"
    assert not [event for event in events(client) if event.action == "login"]


def test_a_logout_records_the_user_and_the_token_revoked(remote: TestClient) -> None:
    user = register(remote).json()
    token = login(remote).json()["access_token"]
    response = remote.post("/auth/logout", headers=bearer(token))
    assert response.status_code == 204, response.text
    event = only_event(remote, "logout")
    assert event.user_id == user["id"]
    assert event.detail is not None and re.fullmatch(r"jti=[\w-]+", event.detail)
    assert (event.address, event.request_id) == (ADDRESS, request_id_of(response))


def test_a_task_deletion_records_the_task(remote: TestClient, alice: dict[str, str]) -> None:
    task = create(remote, alice)
    kept = create(remote, alice)
    response = remote.delete(f"{TASKS}/{task['id']}", headers=alice)
    assert response.status_code == 204
    event = only_event(remote, "task_deleted")
    assert len(events(remote)) == 1
    assert (event.user_id, event.deleted_count, event.task_ids) == ("alice", 1, f"[{task['id']}]")
    assert (event.address, event.user_agent, event.request_id) == (ADDRESS, AGENT, request_id_of(response))
    assert remote.get(f"{TASKS}/{kept['id']}", headers=alice).status_code == 200


def test_a_long_user_agent_is_cut_to_the_column(client: TestClient, alice: dict[str, str]) -> None:
    task = create(client, alice)
    agent = "x" * 500
    assert client.delete(f"{TASKS}/{task['id']}", headers={**alice, "User-Agent": agent}).status_code == 204
    assert only_event(client, "task_deleted").user_agent == agent[:AUDIT_USER_AGENT_MAX]


def test_a_deletion_that_deletes_nothing_records_nothing(
    client: TestClient, alice: dict[str, str], bob: dict[str, str]
) -> None:
    task = create(client, alice)
    assert client.delete(f"{TASKS}/999999", headers=alice).status_code == 404
    assert client.delete(f"/api/bob/tasks/{task['id']}", headers=bob).status_code == 404  # not bob's
    stale = {"If-Match": f'"{task["id"]}.7"'}
    assert client.delete(f"{TASKS}/{task['id']}", headers={**alice, **stale}).status_code == 412
    assert client.delete(f"{TASKS}?status=completed", headers=alice).json() == {"deleted": 0}
    assert events(client) == []
    current = {"If-Match": f'"{task["id"]}.1"'}
    assert client.delete(f"{TASKS}/{task['id']}", headers={**alice, **current}).status_code == 204
    assert [event.task_ids for event in events(client)] == [f"[{task['id']}]"]


def test_a_bulk_deletion_records_how_many_went_and_which(remote: TestClient, alice: dict[str, str]) -> None:
    done = sorted(create(remote, alice, completed=True)["id"] for _ in range(3))
    pending = create(remote, alice)
    response = remote.delete(f"{TASKS}?status=completed", headers=alice)
    assert response.json() == {"deleted": 3}
    event = only_event(remote, "tasks_deleted")
    assert (event.user_id, event.deleted_count, event.detail) == ("alice", 3, "status=completed")
    assert event.task_ids == orjson.dumps(done).decode()  # `[4,5,6]`: ascending, no spaces
    assert (event.address, event.request_id) == (ADDRESS, request_id_of(response))
    assert remote.get(f"{TASKS}/{pending['id']}", headers=alice).status_code == 200


def test_a_huge_bulk_deletion_keeps_its_count_and_a_bounded_list_of_ids(
    client: TestClient, alice: dict[str, str]
) -> None:
    many = TASK_IDS_MAX + 5
    with engine_of(client).begin() as connection:
        connection.execute(
            text(
                "INSERT INTO task (user_id, title, completed, created_at, updated_at) "
                "VALUES ('alice', 'done', true, '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
            ),
            [{}] * many,
        )
        ids = sorted(connection.execute(text("SELECT id FROM task WHERE user_id = 'alice'")).scalars())
    assert client.delete(f"{TASKS}?status=completed", headers=alice).json() == {"deleted": many}
    event = only_event(client, "tasks_deleted")
    assert event.deleted_count == many
    assert orjson.loads(event.task_ids) == ids[:TASK_IDS_MAX]


# --- all or nothing ---------------------------------------------------------------------------


@contextmanager
def audit_table_away(engine: Engine) -> Iterator[None]:
    """The audit table out of reach (renamed) for a moment: every event insert fails."""
    with engine.begin() as connection:
        connection.execute(text("ALTER TABLE audit_event RENAME TO audit_event_away"))
    try:
        yield
    finally:
        with engine.begin() as connection:
            connection.execute(text("ALTER TABLE audit_event_away RENAME TO audit_event"))


def test_a_deletion_whose_event_cannot_be_written_is_undone(
    make_client: Callable[..., TestClient], settings: Settings, alice: dict[str, str]
) -> None:
    client = make_client(settings, raise_server_exceptions=False)
    task = create(client, alice)
    create(client, alice, completed=True)
    with audit_table_away(engine_of(client)):
        assert client.delete(f"{TASKS}/{task['id']}", headers=alice).status_code >= 500
        assert client.delete(f"{TASKS}?status=completed", headers=alice).status_code >= 500
        body = {"email": "ada@example.com", "password": PASSWORD, "name": "Ada"}
        assert client.post("/auth/register", json=body).status_code >= 500
    assert client.get(f"{TASKS}/{task['id']}", headers=alice).status_code == 200
    assert client.get(f"{TASKS}?status=completed", headers=alice).headers["X-Total-Count"] == "1"
    assert login(client).status_code == 401  # the account was not created either
    assert [event.action for event in events(client)] == ["login_failed"]


def test_no_token_is_handed_out_when_the_login_cannot_be_recorded(
    make_client: Callable[..., TestClient], settings: Settings
) -> None:
    client = make_client(settings, raise_server_exceptions=False)
    register(client)
    with audit_table_away(engine_of(client)):
        response = login(client)
    assert response.status_code >= 500 and "access_token" not in response.text


# --- retention ----------------------------------------------------------------------------------


def test_the_sweep_purges_events_older_than_the_retention(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
) -> None:
    first = make_client(make_settings())
    register(first)
    register(first, "old@example.com")
    with engine_of(first).begin() as connection:
        old = utcnow().replace(tzinfo=None) - timedelta(days=31)
        connection.execute(
            text("UPDATE audit_event SET at = :at WHERE email = 'old@example.com'"), {"at": old}
        )
    first.__exit__(None, None, None)
    kept = make_client(make_settings(audit_retention_days=0))  # 0: kept for ever
    assert len(events(kept)) == 2
    swept = make_client(make_settings(audit_retention_days=30))  # the sweep runs at start-up
    assert [event.email for event in events(swept)] == ["ada@example.com"]


# --- the operator's queries, as the README gives them ------------------------------------------


def readme_queries() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Audit trail\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sql\n(.*?)```", section, re.DOTALL)
    statements = [s.strip() for block in blocks for s in block.split(";")]
    return [s for s in statements if s and not all(line.startswith("--") for line in s.splitlines())]


def for_sqlite(query: str) -> str:
    """The README's one substitution for SQLite: `now() - interval '1 hour'` is
    `datetime('now', '-1 hour')`."""
    return re.sub(r"now\(\) - interval '([^']+)'", r"datetime('now', '-\1')", query)


def test_the_documented_queries_run_and_find_the_events(
    client: TestClient, alice: dict[str, str], backend: str
) -> None:
    queries = readme_queries()
    assert len(queries) == 7
    user = register(client).json()
    login(client, password="wrong-password-1")
    task = create(client, alice)
    create(client, alice, completed=True)
    client.delete(f"{TASKS}/{task['id']}", headers=alice)
    client.delete(f"{TASKS}?status=completed", headers={**alice, "X-Request-ID": "req-123"})
    found = []
    with engine_of(client).connect() as connection:
        for query in queries:
            query = query.replace("42", str(task["id"])).replace(
                "0f8fad5bd9cb469fa16570867728950e", user["id"]
            )
            sql = for_sqlite(query) if backend == "sqlite" else query
            result = connection.execute(text(sql.replace(":", r"\:")))
            found.append(len(result.all()) if result.returns_rows else result.rowcount)
    # Each finds what it is about; the purge finds nothing that old.
    assert found == [1, 1, 1, 1, 1, 1, 0], list(zip(queries, found, strict=True))
