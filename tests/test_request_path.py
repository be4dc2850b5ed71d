"""What a request costs the database: one statement, no transaction round trips, index-ordered
pages, exact counts kept by triggers, pooled connections that survive the server dropping them."""

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest
from anyio import to_thread
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, text

import tasks
from db import ROOT, make_engine, migrate, migrate_down
from settings import Settings
from testkit import base_settings, bearer, sign
from testkit.sql import engine_of, plan_of, statements_seen

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")

TASKS = "/api/alice/tasks"


def create(client: TestClient, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    response = client.post(TASKS, json={"title": "a task", **fields}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


ROUTES: list[tuple[str, str, str, Any, int]] = [
    ("list", "GET", TASKS, None, 200),
    ("list pending", "GET", f"{TASKS}?status=pending&sort=title", None, 200),
    ("create", "POST", TASKS, {"title": "new"}, 201),
    ("get", "GET", "{task}", None, 200),
    ("put", "PUT", "{task}", {"title": "put"}, 200),
    ("patch", "PATCH", "{task}", {"description": "patched"}, 200),
    ("toggle", "PATCH", "{task}/toggle", None, 200),
    ("set completion", "PATCH", "{task}/complete", {"completed": True}, 200),
    ("delete", "DELETE", "{task}", None, 204),
    ("missing task", "GET", f"{TASKS}/999999", None, 404),
    ("search", "GET", f"{TASKS}?q=task&page=1&per_page=1", None, 200),
    ("bulk create", "POST", f"{TASKS}/bulk", [{"title": "one"}, {"title": "two"}, {"title": "three"}], 201),
    ("clear completed", "DELETE", f"{TASKS}?status=completed", None, 200),
]


# A deletion carries its audit event (audit.py). On PostgreSQL it is still one statement: the
# DELETE runs in a data-modifying CTE that inserts the event. SQLite has no such CTE, so there the
# DELETE and the event's INSERT are two statements in one explicit transaction: calls into the
# process's own library, no round trips (about 0.15 ms more than the DELETE alone).
AUDITED_IN_A_TRANSACTION_ON_SQLITE = {"delete", "clear completed"}


@pytest.mark.parametrize(("name", "method", "url", "body", "status"), ROUTES, ids=[r[0] for r in ROUTES])
def test_a_task_request_is_one_statement_outside_any_transaction(
    client: TestClient,
    alice: dict[str, str],
    backend: str,
    name: str,
    method: str,
    url: str,
    body: Any,
    status: int,
) -> None:
    """Autocommit: no BEGIN before the statement, no COMMIT or ROLLBACK round trip after it."""
    task = create(client, alice)
    create(client, alice, completed=True)
    url = url.format(task=f"{TASKS}/{task['id']}")
    with statements_seen(engine_of(client)) as seen:
        response = client.request(method, url, json=body, headers=alice)
    assert response.status_code == status, response.text
    if backend == "sqlite" and name in AUDITED_IN_A_TRANSACTION_ON_SQLITE:
        verbs = [statement.split()[0] for statement, _ in seen]
        assert verbs == ["BEGIN", "DELETE", "INSERT", "COMMIT"], seen
        assert [in_transaction for _, in_transaction in seen] == [True, True, True, False]
        return
    assert len(seen) == 1, [statement for statement, _ in seen]
    assert seen[0][1] is False, "the statement left a transaction open"


def test_a_list_page_past_the_end_costs_a_second_statement(client: TestClient, alice: dict[str, str]) -> None:
    create(client, alice)
    with statements_seen(engine_of(client)) as seen:
        response = client.get(f"{TASKS}?offset=10", headers=alice)
    assert response.headers["X-Total-Count"] == "1"
    assert len(seen) == 2


def test_worker_threads_match_the_connection_pool(
    make_client: Callable[..., TestClient], settings: Settings
) -> None:
    """No request can wait for a pooled connection while holding a worker thread."""
    client = make_client(base_settings(settings.database_url, db_pool_size=3, db_max_overflow=2))
    assert client.portal is not None
    tokens = client.portal.call(lambda: to_thread.current_default_thread_limiter().total_tokens)
    assert tokens == 5


# --- pages read in index order -----------------------------------------------------------------

INDEXED_SHAPES = [
    (tasks.TaskFilter(), tasks.TaskOrder(field, descending))
    for field in ("created_at", "updated_at", "title")
    for descending in (True, False)
] + [(tasks.TaskFilter(completed=done), tasks.TaskOrder()) for done in (True, False)]


@pytest.mark.parametrize(
    ("where", "order"),
    INDEXED_SHAPES,
    ids=[f"{w.completed}-{o.field}-{'desc' if o.descending else 'asc'}" for w, o in INDEXED_SHAPES],
)
def test_list_pages_are_read_in_index_order(
    client: TestClient, alice: dict[str, str], backend: str, where: tasks.TaskFilter, order: tasks.TaskOrder
) -> None:
    """The statement the list route runs (tasks._list_statement) walks an index: no sort step.

    Other combinations (a status filter with another order) sort one user's rows.
    """
    for i in range(3):
        create(client, alice, title=f"t{i}", completed=i == 0)
    plan = plan_of(engine_of(client), where, order)
    assert "ix_task_user_" in plan, plan
    assert "TEMP B-TREE" not in plan and "Sort" not in plan, plan


# --- exact counts kept by triggers -------------------------------------------------------------


def true_counts(engine: Engine, user: str) -> tuple[int, int]:
    with engine.connect() as connection:
        total, done = connection.execute(
            text("SELECT COUNT(*), SUM(CASE WHEN completed THEN 1 ELSE 0 END) FROM task WHERE user_id = :u"),
            {"u": user},
        ).one()
    return total, done or 0


def listed_counts(client: TestClient, headers: dict[str, str]) -> tuple[int, int]:
    total = client.get(f"{TASKS}?limit=1", headers=headers).headers["X-Total-Count"]
    done = client.get(f"{TASKS}?limit=1&status=completed", headers=headers).headers["X-Total-Count"]
    pending = client.get(f"{TASKS}?limit=1&status=pending", headers=headers).headers["X-Total-Count"]
    assert int(total) == int(done) + int(pending)
    return int(total), int(done)


def test_counts_follow_every_kind_of_write(
    client: TestClient, alice: dict[str, str], bob: dict[str, str]
) -> None:
    first = create(client, alice)
    second = create(client, alice, completed=True)
    create(client, alice)
    client.post("/api/bob/tasks", json={"title": "bob's"}, headers=bob)
    assert listed_counts(client, alice) == true_counts(engine_of(client), "alice") == (3, 1)
    client.patch(f"{TASKS}/{first['id']}/toggle", headers=alice)
    client.put(f"{TASKS}/{second['id']}", json={"title": "reopened", "completed": False}, headers=alice)
    client.patch(f"{TASKS}/{first['id']}", json={"completed": True}, headers=alice)  # already: no change
    client.patch(f"{TASKS}/{first['id']}", json={"completed": True}, headers=alice)
    assert listed_counts(client, alice) == true_counts(engine_of(client), "alice") == (3, 1)
    client.delete(f"{TASKS}/{first['id']}", headers=alice)
    assert listed_counts(client, alice) == true_counts(engine_of(client), "alice") == (2, 0)
    assert client.get("/api/bob/tasks", headers=bob).headers["X-Total-Count"] == "1"


def test_counts_stay_exact_under_concurrent_writes(client: TestClient, alice: dict[str, str]) -> None:
    ids = [create(client, alice)["id"] for _ in range(12)]
    errors: list[str] = []

    def work(worker: int) -> None:
        for i in range(6):
            responses = [
                client.post(TASKS, json={"title": f"w{worker}-{i}", "completed": i % 2 == 0}, headers=alice),
                client.patch(f"{TASKS}/{ids[(worker + i) % 6]}/toggle", headers=alice),
            ]
            errors.extend(r.text for r in responses if r.status_code >= 300)
        response = client.delete(f"{TASKS}/{ids[6 + worker]}", headers=alice)
        if response.status_code != 204:
            errors.append(response.text)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert listed_counts(client, alice) == true_counts(engine_of(client), "alice")
    assert true_counts(engine_of(client), "alice")[0] == 12 + 36 - 6


def test_the_counts_migration_upgrades_a_database_holding_tasks(empty_database_url: str) -> None:
    engine = make_engine(base_settings(empty_database_url))
    migrate(engine, "0002")
    with engine.connect() as connection:
        for user, title, done in [
            ("ann", "a", True),
            ("ann", "b", False),
            ("ann", "c", True),
            ("ben", "d", False),
        ]:
            connection.execute(
                text(
                    "INSERT INTO task (user_id, title, completed, created_at, updated_at) "
                    "VALUES (:u, :t, :c, '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
                ),
                {"u": user, "t": title, "c": done},
            )
    migrate(engine)
    with engine.connect() as connection:
        counts = connection.execute(
            text("SELECT user_id, total, completed FROM task_count ORDER BY user_id")
        ).all()
        assert [tuple(row) for row in counts] == [("ann", 3, 2), ("ben", 1, 0)]
        connection.execute(text("DELETE FROM task WHERE title = 'a'"))  # the triggers are in place
        assert connection.execute(
            text("SELECT total, completed FROM task_count WHERE user_id = 'ann'")
        ).one() == (2, 1)
    migrate_down(engine, "0002")
    with engine.connect() as connection:
        titles = connection.execute(text("SELECT title FROM task ORDER BY title")).scalars().all()
        connection.execute(
            text(
                "INSERT INTO task (user_id, title, completed, created_at, updated_at) "
                "VALUES ('ann', 'e', false, '2026-01-02', '2026-01-02')"
            )
        )
    assert titles == ["b", "c", "d"]
    engine.dispose()


def test_the_migration_command_line_applies_every_migration(empty_database_url: str) -> None:
    """`make migrate` runs `alembic upgrade head` through migrations/env.py, in one transaction."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    env |= {"DATABASE_URL": empty_database_url, "BETTER_AUTH_SECRET": "x" * 40, "ENVIRONMENT": "test"}
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    engine = make_engine(base_settings(empty_database_url))
    with engine.connect() as connection:
        assert connection.execute(text("SELECT COUNT(*) FROM task_count")).scalar() == 0
    engine.dispose()


# --- connections the server dropped -----------------------------------------------------------


def drop_other_connections(database_url: str) -> int:
    """Terminate every other session on this database, as Neon does when it suspends."""
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        dropped = connection.execute(
            text(
                "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar()
    admin.dispose()
    return int(dropped or 0)


@pytest.mark.skipif(not TEST_DATABASE_URL, reason="needs the PostgreSQL leg (TEST_DATABASE_URL)")
@pytest.mark.parametrize("idle_seconds", [0.0, 3600.0], ids=["tested-after-idle", "never-tested"])
def test_a_connection_dropped_while_idle_is_replaced_before_use(
    make_client: Callable[..., TestClient], migrated_postgres_url: str, idle_seconds: float
) -> None:
    url = migrated_postgres_url
    settings = base_settings(url, db_pool_size=1, db_max_overflow=0, db_ping_after_idle_seconds=idle_seconds)
    client = make_client(settings, raise_server_exceptions=False)
    headers = bearer(sign({"sub": "alice"}))
    assert client.get(TASKS, headers=headers).status_code == 200
    assert drop_other_connections(settings.database_url) >= 1
    response = client.get(TASKS, headers=headers)
    if idle_seconds == 0:
        assert response.status_code == 200, response.text
    else:  # the control: without the idle test, the dead connection reaches the request,
        # which is answered as an outage (503, retry), and the next one gets a new connection
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "2"
        assert client.get(TASKS, headers=headers).status_code == 200


def test_counts_follow_statements_that_write_many_tasks(client: TestClient, alice: dict[str, str]) -> None:
    """A bulk insert, update or delete over several users is counted for each of them."""
    engine = engine_of(client)
    create(client, alice)
    with engine.connect() as connection:
        for n in range(40):
            connection.execute(
                text(
                    "INSERT INTO task (user_id, title, completed, created_at, updated_at) "
                    "VALUES (:u, 'bulk', :c, '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
                ),
                {"u": "alice" if n % 2 else "carol", "c": n % 4 == 1},
            )
        connection.execute(
            text(
                "INSERT INTO task (user_id, title, completed, created_at, updated_at) "
                "SELECT user_id, title, NOT completed, created_at, updated_at FROM task WHERE title = 'bulk'"
            )
        )
        connection.execute(text("UPDATE task SET completed = NOT completed WHERE user_id = 'carol'"))
        connection.execute(text("DELETE FROM task WHERE title = 'bulk' AND completed AND user_id = 'alice'"))
        counts = {
            user: total for user, total in connection.execute(text("SELECT user_id, total FROM task_count"))
        }
    for user in ("alice", "carol"):
        expected = true_counts(engine, user)
        with engine.connect() as connection:
            row = connection.execute(
                text("SELECT total, completed FROM task_count WHERE user_id = :u"), {"u": user}
            ).one()
        assert tuple(row) == expected, user
    assert counts["carol"] == 40
    assert listed_counts(client, alice) == true_counts(engine, "alice")


def test_each_task_response_is_the_documented_task(client: TestClient, alice: dict[str, str]) -> None:
    """Rows are written to JSON by hand (orjson): each body must be schemas.TaskPublic, key for key,
    with UTC timestamps ending in Z, on every route that returns a task."""
    from pydantic import TypeAdapter

    from schemas import TaskPublic

    created = client.post(TASKS, json={"title": "t", "description": "d", "completed": True}, headers=alice)
    url = f"{TASKS}/{created.json()['id']}"
    bodies = [
        created.json(),
        client.get(url, headers=alice).json(),
        client.put(url, json={"title": "u"}, headers=alice).json(),
        client.patch(url, json={"completed": True}, headers=alice).json(),
        client.patch(f"{url}/toggle", headers=alice).json(),
        *client.get(TASKS, headers=alice).json(),
    ]
    fields = list(TaskPublic.model_fields)
    adapter = TypeAdapter(TaskPublic)
    for body in bodies:
        assert list(body) == fields
        assert adapter.validate_python(body).model_dump(mode="json") == body
        for name in ("created_at", "updated_at"):
            assert body[name].endswith("Z"), body[name]
    assert bodies[3]["completed_at"].endswith("Z")
