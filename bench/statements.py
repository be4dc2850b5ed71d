"""3. SQL statements per request on each task route, as the engine's cursor sees them."""

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import httpx2
from fastapi.testclient import TestClient

from bench.support import (
    USER,
    bench_settings,
    expect,
    heading,
    recorded_statements,
    running_app,
    shared_secret_token,
    table,
    temporary_database,
)
from testkit import bearer

REQUESTS = 50
LISTED_TASKS = 20
BASE = f"/api/{USER}/tasks"


@dataclass(frozen=True)
class Route:
    name: str
    label: str
    status: int
    call: Callable[[TestClient, dict[str, str], int], httpx2.Response]


def shape(statement: str) -> str:
    """A statement reduced to its verb, table and RETURNING, e.g. `UPDATE task RETURNING`."""
    words = statement.split()
    verb = words[0].upper() if words else "?"
    # The last FROM is the statement's own; an earlier one belongs to a subquery in its columns.
    tables = re.findall(r"\b(?:FROM|INTO|UPDATE)\s+\"?(\w+)", statement, re.IGNORECASE)
    parts = [verb, tables[-1] if tables else ""]
    if re.search(r"\bRETURNING\b", statement, re.IGNORECASE):
        parts.append("RETURNING")
    if len(tables) > 1:
        parts.append(f"(+ {tables[0]} subquery)")
    return " ".join(part for part in parts if part)


def routes(task_path: str, doomed: list[str]) -> list[Route]:
    return [
        Route("list", f"GET {BASE}", 200, lambda c, h, i: c.get(BASE, headers=h)),
        Route(
            "list, past the last page",
            f"GET {BASE}?offset=1000",
            200,
            lambda c, h, i: c.get(BASE, params={"offset": 1000}, headers=h),
        ),
        Route(
            "create", f"POST {BASE}", 201, lambda c, h, i: c.post(BASE, json={"title": f"new {i}"}, headers=h)
        ),
        Route("get", "GET .../{id}", 200, lambda c, h, i: c.get(task_path, headers=h)),
        Route(
            "put",
            "PUT .../{id}",
            200,
            lambda c, h, i: c.put(task_path, json={"title": f"put {i}", "description": "d"}, headers=h),
        ),
        Route(
            "patch",
            "PATCH .../{id}",
            200,
            lambda c, h, i: c.patch(task_path, json={"title": f"p {i}"}, headers=h),
        ),
        Route(
            "toggle", "PATCH .../{id}/toggle", 200, lambda c, h, i: c.patch(f"{task_path}/toggle", headers=h)
        ),
        Route("delete", "DELETE .../{id}", 204, lambda c, h, i: c.delete(doomed[i], headers=h)),
    ]


def run() -> None:
    heading("3. SQL statements per request on the task routes")
    with temporary_database() as url, running_app(bench_settings(url)) as running:
        client = running.client
        headers = bearer(shared_secret_token())
        created = [
            expect(client.post(BASE, json={"title": f"task {i}"}, headers=headers), 201).json()["id"]
            for i in range(LISTED_TASKS + REQUESTS)
        ]
        task_path = f"{BASE}/{created[0]}"
        doomed = [f"{BASE}/{task_id}" for task_id in created[LISTED_TASKS:]]
        rows = []
        for route in routes(task_path, doomed):
            with recorded_statements(running.engine) as statements:
                for i in range(REQUESTS):
                    expect(route.call(client, headers, i), route.status)
            shapes = Counter(shape(statement) for statement in statements)
            kinds = ", ".join(f"{count / REQUESTS:g} x {kind}" for kind, count in shapes.most_common())
            rows.append(
                (
                    route.name,
                    route.label,
                    route.status,
                    len(statements),
                    f"{len(statements) / REQUESTS:g}",
                    kinds,
                )
            )

    print(
        f"  {REQUESTS} requests per route with an HS256 token without jti (no revocation cache involved); "
        "a before_cursor_execute listener on the app's engine counts statements."
    )
    print(
        "  The engine autocommits: no BEGIN, COMMIT or ROLLBACK is sent "
        "(tests/test_request_path.py checks that no transaction is left open)."
    )
    print()
    headers_row = ("route", "request", "status", "statements", "per request", "kinds per request")
    print(table(headers_row, rows, align="llrrrl"))
