"""What the benchmarks share: settings, a migrated temporary database, the app, timing, SQL counting."""

import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx2
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from db import make_engine, migrate
from main import create_app
from settings import Settings
from testkit import base_settings as bench_settings
from testkit import sign

USER = "alice"


@contextmanager
def temporary_database() -> Iterator[str]:
    """The URL of a migrated SQLite database in a temporary directory, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="todo-bench-") as directory:
        url = f"sqlite:///{directory}/bench.db"
        engine = make_engine(bench_settings(url))
        try:
            migrate(engine)
        finally:
            engine.dispose()
        yield url


class ResponseTimer:
    """An ASGI wrapper timing each HTTP request inside the app, from arrival to response start.

    The test client hands the body over through a rendezvous with the calling thread, so the
    time to `http.response.start` is the app's own work (the body is rendered before it).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.durations: list[int] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter_ns()

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.durations.append(time.perf_counter_ns() - start)
            await send(message)

        await self.app(scope, receive, timed_send)


@dataclass(frozen=True)
class RunningApp:
    app: FastAPI
    client: TestClient
    timer: ResponseTimer

    @property
    def engine(self) -> Engine:
        return self.app.state.services.database.engine


@contextmanager
def running_app(settings: Settings) -> Iterator[RunningApp]:
    """A real app with its lifespan running, and a client that drives it in process."""
    app = create_app(settings)
    timer = ResponseTimer(app)
    with TestClient(timer) as client:
        yield RunningApp(app, client, timer)


def shared_secret_token(user_id: str = USER, *, lifetime: int = 3600) -> str:
    """An HS256 token as a Better Auth shared-secret route mints it: no `jti`."""
    return sign({"sub": user_id}, lifetime=lifetime)


def expect(response: httpx2.Response, status_code: int) -> httpx2.Response:
    if response.status_code != status_code:
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path}: expected {status_code}, "
            f"got {response.status_code} {response.text[:200]}"
        )
    return response


@contextmanager
def recorded_statements(engine: Engine) -> Iterator[list[str]]:
    """Every statement the engine sends through a cursor while the block runs."""
    statements: list[str] = []

    def record(
        _conn: Any, _cursor: Any, statement: str, _parameters: Any, _context: Any, _executemany: bool
    ) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


@dataclass(frozen=True)
class Samples:
    """Durations of single operations, in nanoseconds."""

    durations: list[int]

    @property
    def count(self) -> int:
        return len(self.durations)

    @property
    def seconds(self) -> float:
        return sum(self.durations) / 1e9

    @property
    def per_second(self) -> float:
        return self.count / self.seconds

    @property
    def mean_us(self) -> float:
        return statistics.fmean(self.durations) / 1e3

    @property
    def median_us(self) -> float:
        return statistics.median(self.durations) / 1e3

    @property
    def p95_us(self) -> float:
        return statistics.quantiles(self.durations, n=20)[-1] / 1e3


def sample(operation: Callable[[], object], count: int) -> list[int]:
    """Run `operation` `count` times, timing each call."""
    durations = []
    clock = time.perf_counter_ns
    for _ in range(count):
        start = clock()
        operation()
        durations.append(clock() - start)
    return durations


def table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], *, align: str = "", indent: str = "  "
) -> str:
    """A plain text table; `align` has one "l" or "r" per column (default: first left, others right)."""
    align = align or "l" + "r" * (len(headers) - 1)
    cells = [list(headers), *([str(cell) for cell in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        padded = [
            cell.ljust(width) if side == "l" else cell.rjust(width)
            for cell, width, side in zip(row, widths, align, strict=True)
        ]
        return (indent + "  ".join(padded)).rstrip()

    rule = indent + "  ".join("-" * width for width in widths)
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def heading(title: str) -> None:
    print()
    print(title)
    print("=" * len(title))
