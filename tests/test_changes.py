"""The sync feed: GET /tasks/changes replays every change exactly once, from any cursor."""

import os
import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import inspect, text
from sqlmodel import Session

import tasks
from db import make_engine, migrate, migrate_down
from testkit import base_settings, bearer, run_together, sign
from testkit.sql import engine_of, statements_seen

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")
TASKS = "/api/alice/tasks"
CHANGES = f"{TASKS}/changes"


def create(client: TestClient, headers: dict[str, str], url: str = TASKS, **fields: Any) -> dict[str, Any]:
    response = client.post(url, json={"title": "a task", **fields}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def feed(
    client: TestClient, headers: dict[str, str], since: str | None = None, **params: Any
) -> dict[str, Any]:
    query = {**params, **({"since": since} if since is not None else {})}
    response = client.get(CHANGES, params=query, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


class Replica:
    """A client's copy of the tasks, kept by applying the feed."""

    def __init__(self) -> None:
        self.tasks: dict[int, dict[str, Any]] = {}
        self.cursor: str | None = None

    def pull(self, client: TestClient, headers: dict[str, str], url: str, limit: int) -> bool:
        """One page; whether more wait."""
        params: dict[str, Any] = {"limit": limit, **({"since": self.cursor} if self.cursor else {})}
        response = client.get(url, params=params, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        for task in page["tasks"]:
            self.tasks[task["id"]] = task
        for task_id in page["deleted"]:
            self.tasks.pop(task_id, None)
        self.cursor = page["cursor"]
        return bool(page["has_more"])

    def drain(self, client: TestClient, headers: dict[str, str], url: str, limit: int = 7) -> None:
        while self.pull(client, headers, url, limit):
            pass


def server_state(client: TestClient, headers: dict[str, str], url: str = TASKS) -> dict[int, dict[str, Any]]:
    response = client.get(url, params={"limit": 500}, headers=headers)
    assert response.status_code == 200
    return {task["id"]: task for task in response.json()}


def test_a_first_sync_lists_every_task_in_change_order_and_pages(client: TestClient, alice: dict) -> None:
    first, second, third = (create(client, alice, title=t) for t in ("one", "two", "three"))
    client.patch(f"{TASKS}/{first['id']}", json={"title": "one, edited"}, headers=alice)
    page = feed(client, alice, limit=2)
    assert [t["title"] for t in page["tasks"]] == ["two", "three"]
    assert page["deleted"] == [] and page["has_more"] is True
    rest = feed(client, alice, page["cursor"], limit=2)
    assert [t["title"] for t in rest["tasks"]] == ["one, edited"]
    assert rest["has_more"] is False
    assert rest["tasks"][0] == client.get(f"{TASKS}/{first['id']}", headers=alice).json()
    # Nothing new: an empty page, and the cursor stays where it was.
    empty = feed(client, alice, rest["cursor"])
    assert (empty["tasks"], empty["deleted"], empty["cursor"], empty["has_more"]) == (
        [],
        [],
        rest["cursor"],
        False,
    )
    assert {second["id"], third["id"]} <= {t["id"] for t in page["tasks"]}


def test_later_changes_come_once_each_edits_and_deletions_alike(
    client: TestClient, alice: dict, bob: dict
) -> None:
    kept, edited, gone = (create(client, alice, title=t) for t in ("kept", "edited", "gone"))
    cursor = feed(client, alice)["cursor"]
    client.patch(f"{TASKS}/{edited['id']}/toggle", headers=alice)
    client.delete(f"{TASKS}/{gone['id']}", headers=alice)
    new = create(client, alice, title="new")
    client.post("/api/bob/tasks", json={"title": "bob's"}, headers=bob)
    page = feed(client, alice, cursor)
    assert [t["title"] for t in page["tasks"]] == ["edited", "new"]
    assert page["tasks"][0]["completed"] is True
    assert page["deleted"] == [gone["id"]]
    assert feed(client, alice, page["cursor"])["tasks"] == []
    assert kept["id"] not in {t["id"] for t in page["tasks"]} and new["id"] in {
        t["id"] for t in page["tasks"]
    }


def test_a_first_sync_leaves_deleted_tasks_out(client: TestClient, alice: dict) -> None:
    gone = create(client, alice, title="gone")
    create(client, alice, title="kept")
    client.delete(f"{TASKS}/{gone['id']}", headers=alice)
    page = feed(client, alice)
    assert ([t["title"] for t in page["tasks"]], page["deleted"]) == (["kept"], [])


def test_writes_in_the_same_instant_are_each_delivered_once(client: TestClient, alice: dict) -> None:
    """Thirty tasks from one statement share their timestamps; the cursor still tells them apart."""
    response = client.post(f"{TASKS}/bulk", json=[{"title": f"t{i}"} for i in range(30)], headers=alice)
    created = [task["id"] for task in response.json()]
    assert len({task["created_at"] for task in response.json()}) == 1
    seen: list[int] = []
    cursor = None
    while True:
        page = feed(client, alice, cursor, limit=1)
        seen += [task["id"] for task in page["tasks"]]
        cursor = page["cursor"]
        if not page["has_more"]:
            break
    assert seen == created


@pytest.mark.parametrize(
    "since",
    ["garbage", "YzEuMS4w=", "YzIuMS4w", "YzEuLTEuMA", "YzEuMDEuMA", "YzEuMS4wLjA", "x" * 101, "%00"],
    ids=["garbage", "padded", "other version", "negative", "leading zero", "extra part", "too long", "nul"],
)
def test_a_cursor_the_feed_did_not_hand_out_is_422(client: TestClient, alice: dict, since: str) -> None:
    response = client.get(CHANGES, params={"since": since}, headers=alice)
    assert response.status_code == 422, response.text
    assert response.json()["message"]


def test_cursors_round_trip_and_reject_any_other_spelling() -> None:
    cursor = tasks.Cursor(12, 3)
    assert tasks.Cursor.decode(cursor.encode()) == cursor
    with pytest.raises(tasks.CursorInvalid):
        tasks.Cursor.decode(cursor.encode() + "=")


def test_an_empty_since_is_a_first_sync(client: TestClient, alice: dict) -> None:
    create(client, alice)
    assert len(feed(client, alice, "")["tasks"]) == 1


def test_a_page_of_changes_is_one_statement(client: TestClient, alice: dict) -> None:
    for i in range(5):
        create(client, alice, title=f"t{i}", tags=["a", "b"])
    cursor = feed(client, alice, limit=2)["cursor"]
    with statements_seen(engine_of(client)) as seen:
        page = feed(client, alice, cursor, limit=50)
    assert len(page["tasks"]) == 3 and all(t["tags"] == ["a", "b"] for t in page["tasks"])
    assert len(seen) == 1, seen


def age_tombstones(client: TestClient, days: int) -> None:
    with engine_of(client).begin() as connection:
        old = text("UPDATE task_tombstone SET deleted_at = :moment")
        connection.execute(old, {"moment": tasks.utcnow().replace(tzinfo=None) - timedelta(days=days)})


def sweep(client: TestClient, days: int = 30) -> tasks.Swept:
    with Session(engine_of(client)) as session:
        return tasks.sweep(session, timedelta(days=days))


def test_a_cursor_older_than_the_purged_tombstones_is_410(client: TestClient, alice: dict) -> None:
    gone = create(client, alice, title="gone")
    create(client, alice, title="kept")
    stale = feed(client, alice)["cursor"]
    client.delete(f"{TASKS}/{gone['id']}", headers=alice)
    assert feed(client, alice, stale)["deleted"] == [gone["id"]]  # still kept: delivered
    age_tombstones(client, days=31)
    assert sweep(client).tombstones == 1
    response = client.get(CHANGES, params={"since": stale}, headers=alice)
    assert response.status_code == 410, response.text
    # A new first sync starts past the purge, and its cursor then works as any other.
    fresh = feed(client, alice)
    assert [t["title"] for t in fresh["tasks"]] == ["kept"]
    create(client, alice, title="later")
    assert [t["title"] for t in feed(client, alice, fresh["cursor"])["tasks"]] == ["later"]


def test_the_sweep_keeps_tombstones_within_the_retention_and_purges_expired_keys(
    client: TestClient, alice: dict
) -> None:
    gone = create(client, alice, title="gone")
    cursor = feed(client, alice)["cursor"]
    client.delete(f"{TASKS}/{gone['id']}", headers=alice)
    age_tombstones(client, days=29)
    client.post(TASKS, json={"title": "keyed"}, headers={**alice, "Idempotency-Key": "k1"})
    with engine_of(client).begin() as connection:
        connection.execute(
            text("UPDATE idempotency_key SET expires_at = :past"),
            {"past": tasks.utcnow() - timedelta(seconds=1)},
        )
    assert sweep(client) == tasks.Swept(tombstones=0, idempotency_keys=1)
    assert feed(client, alice, cursor)["deleted"] == [gone["id"]]
    assert sweep(client, days=28).tombstones == 1  # a shorter TOMBSTONE_DAYS


def test_the_app_sweeps_when_it_starts(
    client: TestClient, alice: dict, make_client: Callable[..., TestClient], settings: Any
) -> None:
    gone = create(client, alice)
    client.delete(f"{TASKS}/{gone['id']}", headers=alice)
    age_tombstones(client, days=31)
    restarted = make_client(settings)
    with engine_of(restarted).connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM task_tombstone")).scalar() == 0


# --- replaying the feed from any cursor --------------------------------------------------------

OPERATIONS = st.one_of(
    st.tuples(st.just("create"), st.booleans(), st.lists(st.sampled_from(["a", "B", "c"]), max_size=3)),
    st.tuples(st.just("bulk"), st.integers(1, 4)),
    st.tuples(st.just("edit"), st.integers(0, 50), st.text("xyz ", min_size=1, max_size=5)),
    st.tuples(st.just("toggle"), st.integers(0, 50)),
    st.tuples(st.just("tag"), st.integers(0, 50), st.lists(st.sampled_from(["a", "b"]), max_size=2)),
    st.tuples(st.just("delete"), st.integers(0, 50)),
    st.tuples(st.just("clear completed")),
    st.tuples(st.just("sync"), st.integers(0, 3), st.integers(1, 4)),
    st.tuples(st.just("new replica")),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=st.lists(OPERATIONS, max_size=30))
def test_replaying_the_feed_from_any_cursor_ends_at_the_servers_state(
    client: TestClient, operations: list[tuple[Any, ...]]
) -> None:
    """Random writes, with replicas that start at random moments and pull pages of random sizes
    in between: once drained, every replica holds exactly what the server holds."""
    user = f"u{uuid.uuid4().hex[:12]}"  # a user of its own per example: nothing to clean
    headers, url = bearer(sign({"sub": user})), f"/api/{user}/tasks"
    replicas = [Replica()]
    ids: list[int] = []

    def pick(n: int) -> str:
        return f"{url}/{ids[n % len(ids)]}"

    for operation in operations:
        name, *args = operation
        if name == "create":
            ids.append(create(client, headers, url, completed=args[0], tags=args[1])["id"])
        elif name == "bulk":
            response = client.post(
                f"{url}/bulk", json=[{"title": f"b{i}"} for i in range(args[0])], headers=headers
            )
            ids += [task["id"] for task in response.json()]
        elif name == "sync":
            replicas[args[0] % len(replicas)].pull(client, headers, f"{url}/changes", args[1])
        elif name == "new replica":
            replicas.append(Replica())
        elif name == "clear completed":
            client.delete(url, params={"status": "completed"}, headers=headers)
        elif ids and name == "edit":
            client.patch(pick(args[0]), json={"title": args[1]}, headers=headers)
        elif ids and name == "toggle":
            client.patch(f"{pick(args[0])}/toggle", headers=headers)
        elif ids and name == "tag":
            client.patch(pick(args[0]), json={"tags": args[1]}, headers=headers)
        elif ids and name == "delete":
            client.delete(pick(args[0]), headers=headers)
    expected = server_state(client, headers, url)
    for replica in replicas:
        replica.drain(client, headers, f"{url}/changes")
        assert replica.tasks == expected


@pytest.mark.skipif(not TEST_DATABASE_URL, reason="needs the PostgreSQL leg (TEST_DATABASE_URL)")
def test_a_replica_syncing_during_concurrent_writes_misses_nothing(
    make_client: Callable[..., TestClient], migrated_postgres_url: str
) -> None:
    """Writers commit out of the order they started in; the per-user change order still holds."""
    client = make_client(base_settings(migrated_postgres_url, db_pool_size=8))
    alice = bearer(sign({"sub": "alice"}))
    ids = [create(client, alice, title=f"seed {i}")["id"] for i in range(8)]
    replica, done = Replica(), threading.Event()

    def sync_until_done() -> None:
        while not done.is_set():
            replica.pull(client, alice, CHANGES, 5)

    reader = threading.Thread(target=sync_until_done)
    reader.start()
    try:

        def write(n: int) -> None:
            for i in range(15):
                create(client, alice, title=f"w{n}-{i}")
                client.patch(f"{TASKS}/{ids[(n + i) % len(ids)]}/toggle", headers=alice)
                if i % 5 == 4:
                    doomed = create(client, alice, title="doomed")
                    client.delete(f"{TASKS}/{doomed['id']}", headers=alice)

        run_together(write, 6)
    finally:
        done.set()
        reader.join()
    replica.drain(client, alice, CHANGES)
    assert replica.tasks == server_state(client, alice)


# --- the migration ---------------------------------------------------------------------------


def test_the_tags_and_changes_migration_upgrades_a_database_holding_tasks(
    empty_database_url: str, make_client: Callable[..., TestClient]
) -> None:
    engine = make_engine(base_settings(empty_database_url))
    migrate(engine, "0005")
    with engine.connect() as connection:
        for title in ("first", "second"):
            connection.execute(
                text(
                    "INSERT INTO task (user_id, title, completed, created_at, updated_at) "
                    "VALUES ('alice', :t, false, '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
                ),
                {"t": title},
            )
    migrate(engine)
    client = make_client(base_settings(empty_database_url))
    alice = bearer(sign({"sub": "alice"}))
    listed = client.get(f"{TASKS}?sort=title", headers=alice).json()
    assert [(t["title"], t["tags"], t["version"]) for t in listed] == [("first", [], 1), ("second", [], 1)]
    page = feed(client, alice)
    assert sorted(t["title"] for t in page["tasks"]) == ["first", "second"]
    newest = create(client, alice, title="tagged", tags=["x"])
    assert [t["title"] for t in feed(client, alice, page["cursor"])["tasks"]] == ["tagged"]
    client.delete(f"{TASKS}/{newest['id']}", headers=alice)
    assert create(client, alice, title="after")["id"] > newest["id"]  # no id is reused
    assert client.get(TASKS, headers=alice).headers["X-Total-Count"] == "3"
    client.__exit__(None, None, None)
    migrate_down(engine, "0005")
    with engine.connect() as connection:
        titles = connection.execute(text("SELECT title FROM task ORDER BY id")).scalars().all()
        connection.execute(text("DELETE FROM task WHERE title = 'first'"))
        total = connection.execute(text("SELECT total FROM task_count WHERE user_id = 'alice'")).scalar()
        tables = inspect(connection).get_table_names()
    assert titles == ["first", "second", "after"]
    assert total == 2  # the count triggers still work
    assert "task_tag" not in tables and "task_tombstone" not in tables
    engine.dispose()
