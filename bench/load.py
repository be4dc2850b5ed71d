"""5. Load: the service against its raw-SQL floor (bench/floor.py), under wrk, on PostgreSQL.

`python -m bench.load` makes a database of its own on the server named by BENCH_DATABASE_URL (an
admin URL; default postgresql://postgres@127.0.0.1:5432/test), migrates it with the service's
migrations and seeds it. Then, in BENCH_ROUNDS rounds (default 2, in A B B A order), it runs the
service (`uvicorn main:app`, production settings, access log on) and the floor against it: a
correctness check, a wrk warm-up, BENCH_SECONDS (default 20) of the request mix in
bench/load.lua with one user per connection, the server's peak RSS, and first-page list
latencies, one request at a time, for users with 100 to 100,000 tasks. The database is dropped
at the end, also on errors and Ctrl-C. Figures only: nothing asserts on timing; it fails (exit
1) only when an app answers wrongly or does not start.
"""

import http.client
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn
from urllib.parse import urlsplit

import jwt
import psycopg
from psycopg import sql

from bench.support import Samples, heading, table
from schemas import TaskPublic
from settings import Settings

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.prefix) / "bin"
WRK = shutil.which("wrk") or "/usr/bin/wrk"
MIX_SCRIPT = Path(__file__).with_name("load.lua")
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"

MIX_USERS = tuple(f"user-{i:02d}" for i in range(20))
TASKS_PER_USER = 500
SIZES = (100, 500, 10_000, 100_000)  # one user `size-N` each, for the first-page latencies
LOW_LOAD_SIZE = 500  # the "single list request at low load" figure
CONNECTIONS = 32
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
WARMUP_SECONDS = 3
WRK_TIMEOUT = "10s"  # wrk's default 2 s would turn slow responses into errors, out of the percentiles
SEQUENTIAL = 200
SEQUENTIAL_WARMUP = 20
SEQUENTIAL_DEADLINE = 300.0  # seconds for all the one-at-a-time requests of one app
READY_SECONDS = 30.0
IDLE_SAMPLE_SECONDS = 1.0  # before each run, the machine's load is sampled this long ...
QUIET_LOAD = 25.0  # ... until under this (% of one core, the app idle) ...
QUIET_WAIT_SECONDS = 60.0  # ... for at most this long
STOP_SECONDS = 10.0
SEED_CHUNK = 1000  # rows per INSERT: per-row count triggers on one user's row get slow in big statements
LUA_SEED = 20_260_101
# What done() in bench/load.lua prints and the report needs (latencies in microseconds).
WRK_FIGURES = frozenset(
    ("requests", "duration_us", "connect", "read", "write", "timeout", "status", "p50_us", "p95_us", "p99_us")
)
TASK_KEYS = list(TaskPublic.model_fields)  # the documented task, key for key
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """An app answered wrongly, or something the benchmark needs did not work."""


@dataclass(frozen=True)
class App:
    name: str
    target: tuple[str, ...]  # what names the app on the uvicorn command line
    settings: tuple[str, ...]  # the settings it is given (values from `environment`)


SERVICE = App(
    "service",
    # As `make run` serves it: with the bounds on request heads and slow clients.
    ("main:app", "--http", "server:BoundedHttpToolsProtocol", "--timeout-keep-alive", "5"),
    ("ENVIRONMENT", "DATABASE_URL", "BETTER_AUTH_SECRET", "ALLOWED_HOSTS", "RATE_LIMIT_PER_USER"),
)
# Not `bench.floor:app`: importing the bench package rewrites DATABASE_URL and BETTER_AUTH_SECRET.
FLOOR = App("floor", ("floor:app", "--app-dir", str(ROOT / "bench")), ("DATABASE_URL", "BETTER_AUTH_SECRET"))


@dataclass(frozen=True)
class Server:
    app: App
    process: "subprocess.Popen[bytes]"
    port: int
    log: Path

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime

    def peak_rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        if match is None:
            raise BenchError(f"no VmHWM in /proc/{self.process.pid}/status")
        return int(match.group(1)) / 1024


@dataclass(frozen=True)
class WrkRun:
    command: list[str]
    figures: dict[str, int]
    cpu_seconds: float  # wrk's own

    @property
    def per_second(self) -> float:
        return self.figures["requests"] / (self.figures["duration_us"] / 1e6)

    @property
    def socket_errors(self) -> int:
        return sum(self.figures[kind] for kind in ("connect", "read", "write", "timeout"))

    def ms(self, name: str) -> float:
        return self.figures[name] / 1e3


@dataclass(frozen=True)
class Figures:
    run: WrkRun
    peak_rss_mb: float
    cpu: dict[str, float]  # percent of one core: during the timed run, and idle before it
    first_page: dict[int, Samples]
    log_lines: int


# What one app answered to the requests both must answer alike: path -> (status, total, body).
Answers = dict[str, tuple[int, str | None, Any]]


def run() -> None:
    heading("5. Load: the service against a raw-SQL floor, under wrk, on PostgreSQL")
    seconds = int(os.environ.get("BENCH_SECONDS", "20"))
    admin_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_ADMIN_URL)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # clean up on SIGTERM as on Ctrl-C
    try:
        with (
            tempfile.TemporaryDirectory(prefix="todo-bench-load-") as workdir,
            bench_database(admin_url) as url,
        ):
            measure(url, Path(workdir), seconds)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(_signum: int, _frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt


def measure(url: str, workdir: Path, seconds: int) -> None:
    secret = secrets.token_urlsafe(36)  # 48 characters
    environment = {
        "ENVIRONMENT": "production",
        "DATABASE_URL": url,
        "BETTER_AUTH_SECRET": secret,
        "ALLOWED_HOSTS": "127.0.0.1",
        # Each mix user sends far more than a person would (hundreds a second): the limit is
        # counted on every request, as in production, but set high enough never to refuse.
        "RATE_LIMIT_PER_USER": "100000000/minute",
    }
    if (ROOT / ".env").exists():
        print(f"  Note: {ROOT / '.env'} exists; the service reads it (the environment wins).")
    started = time.perf_counter()
    migrate(child_environment(environment, SERVICE.settings))
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as db:
        sizes = {f"size-{size}": size for size in SIZES}
        seed(db, dict.fromkeys(MIX_USERS, TASKS_PER_USER) | sizes)
        db.execute("ANALYZE")
        ids = {user: seeded_ids(db, user) for user in MIX_USERS}
        total_rows = count_rows(db)
        print(
            f"  Migrated and seeded in {time.perf_counter() - started:.1f} s: {len(MIX_USERS)} users x "
            f"{TASKS_PER_USER} tasks, users {', '.join(sizes)}; {total_rows:,} rows; "
            "task counts kept by the migrations' triggers."
        )
        tokens = {user: token(user, secret) for user in (*MIX_USERS, *sizes)}
        script = workdir / "mix.lua"
        write_mix_script(script, tokens, ids)

        figures: dict[str, Figures] = {}
        reference: Answers | None = None
        # Rounds in A B B A order, each app started afresh, so that drift in the machine or the
        # database (it grows with the creates) weighs on both alike; each app's best round counts.
        order = [(SERVICE, FLOOR), (FLOOR, SERVICE)]
        apps = [app for n in range(ROUNDS) for app in order[n % 2]]
        print(
            f"  Order: {', '.join(app.name for app in apps)}; {CONNECTIONS} connections, {seconds} s each; "
            "the best round of each app is reported."
        )
        for app in apps:
            env = child_environment(environment, app.settings)
            with server(app, env, workdir) as running:
                answers = verify(running, db, tokens, reference)
                reference = reference or answers
                result = load(running, script, seconds, tokens)
            best = figures.get(app.name)
            if best is None or result.run.per_second > best.run.per_second:
                figures[app.name] = result
        drift = count_drift(db)
        final_rows = count_rows(db)
        versions = db.execute("SELECT version()").fetchone()
    report(figures, versions[0] if versions else "?", drift, total_rows, final_rows)


def child_environment(values: dict[str, str], names: tuple[str, ...]) -> dict[str, str]:
    """This process's environment without any setting of the service, plus the given settings."""
    env = {name: value for name, value in os.environ.items() if name.lower() not in Settings.model_fields}
    return env | {name: values[name] for name in names}


# The database ---------------------------------------------------------------------------------


@contextmanager
def bench_database(admin_url: str) -> Iterator[str]:
    """A new database on the admin URL's server, dropped afterwards (with FORCE)."""
    name = f"todo_bench_{secrets.token_hex(6)}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield urlsplit(admin_url)._replace(path="/" + name).geturl()
    finally:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        print(f"  Dropped database {name}.")


def migrate(env: dict[str, str]) -> None:
    command = [str(BIN / "alembic"), "upgrade", "head"]
    done = subprocess.run(  # noqa: S603 (our own commands, no shell)
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"alembic upgrade head failed ({done.returncode}):\n{done.stdout}{done.stderr}")


SEED = """
WITH generated AS MATERIALIZED (
    SELECT n,
           (%(verbs)s::text[])[1 + floor(random() * cardinality(%(verbs)s::text[]))::int] AS verb,
           (%(things)s::text[])[1 + floor(random() * cardinality(%(things)s::text[]))::int] AS thing,
           (%(notes)s::text[])[1 + floor(random() * cardinality(%(notes)s::text[]))::int] AS note,
           (%(whens)s::text[])[1 + floor(random() * cardinality(%(whens)s::text[]))::int] AS due,
           random() < 0.5 AS described,
           random() < 0.2 AS done,
           (ARRAY['[]', '[]', '["work"]', '["home", "errands"]'])[1 + floor(random() * 4)::int] AS tags,
           now() - random() * interval '30 days' AS created
    FROM generate_series(%(first)s::int, %(last)s::int) AS n
)
INSERT INTO task (user_id, title, description, completed, completed_at, created_at, updated_at, tags)
SELECT %(user)s, verb || ' ' || thing || ' #' || n, CASE WHEN described THEN note || ' ' || due END,
       done, CASE WHEN done THEN created + (now() - created) * random() END, created, created, tags
FROM generated
"""
WORDS = {
    "verbs": [
        "Buy",
        "Call",
        "Email",
        "Review",
        "Schedule",
        "Finish",
        "Prepare",
        "Update",
        "Book",
        "Sort out",
    ],
    "things": [
        "groceries for the week",
        "the dentist about Monday",
        "the quarterly report",
        "a team lunch on Thursday",
        "the project proposal",
        "the garage and the attic",
        "flights to the conference",
        "notes from the meeting",
        "the insurance paperwork",
        "slides for the demo",
    ],
    "notes": [
        "Bring the receipts from last week and check the totals",
        "Ask Sam whether the new numbers are final",
        "Compare the two quotes we got in March",
        "Keep it short: three points and one decision",
        "Use the template from the shared drive",
    ],
    "whens": [
        "before Friday.",
        "by the end of the month, if possible.",
        "before the next team meeting on Tuesday morning.",
        "today, before the lunch break.",
        "once the budget has been approved by finance.",
    ],
}


def seed(db: psycopg.Connection[Any], users: dict[str, int]) -> None:
    """`count` tasks per user, in chunks, each INSERT its own transaction (the connection autocommits)."""
    db.execute("SELECT setseed(0.42)")
    for user, count in users.items():
        for first in range(1, count + 1, SEED_CHUNK):
            last = min(count, first + SEED_CHUNK - 1)
            db.execute(SEED, {"user": user, "first": first, "last": last, **WORDS})


def seeded_ids(db: psycopg.Connection[Any], user: str) -> list[int]:
    return [row[0] for row in db.execute("SELECT id FROM task WHERE user_id = %s ORDER BY id", (user,))]


def count_rows(db: psycopg.Connection[Any], user: str | None = None) -> int:
    query = "SELECT count(*) FROM task WHERE user_id = %(user)s OR %(user)s IS NULL"
    row = db.execute(query, {"user": user}).fetchone()
    return int(row[0]) if row else 0


def count_drift(db: psycopg.Connection[Any]) -> int:
    """Users whose task_count row disagrees with their tasks."""
    row = db.execute(
        """
        SELECT count(*) FROM (
            SELECT user_id, count(*) AS total, count(*) FILTER (WHERE completed) AS completed
            FROM task GROUP BY user_id
        ) AS counted FULL JOIN task_count AS kept USING (user_id)
        WHERE coalesce(counted.total, 0) <> coalesce(kept.total, 0)
           OR coalesce(counted.completed, 0) <> coalesce(kept.completed, 0)
        """
    ).fetchone()
    return int(row[0]) if row else -1


def probe_ids(db: psycopg.Connection[Any], user: str) -> list[int]:
    """A completed task, one without description, one with a description, someone else's."""
    row = db.execute(
        """
        SELECT (SELECT min(id) FROM task WHERE user_id = %(user)s AND completed),
               (SELECT min(id) FROM task WHERE user_id = %(user)s AND description IS NULL),
               (SELECT min(id) FROM task WHERE user_id = %(user)s AND description IS NOT NULL
                                          AND NOT completed),
               (SELECT min(id) FROM task WHERE user_id <> %(user)s)
        """,
        {"user": user},
    ).fetchone()
    return [int(value) for value in row or () if value is not None]


# The apps -------------------------------------------------------------------------------------


def token(user: str, secret: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": user, "iat": now, "exp": now + 3600}, secret, algorithm="HS256")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def server(app: App, env: dict[str, str], workdir: Path) -> Iterator[Server]:
    """The app under uvicorn (one worker, access log on, output to a log file), until the block ends."""
    port = free_port()
    log = workdir / f"{app.name}.log"
    command = [str(BIN / "uvicorn"), *app.target, "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as output:
        # A session of its own: Ctrl-C reaches the benchmark, which stops the server itself.
        process = subprocess.Popen(  # noqa: S603
            command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    running = Server(app, process, port, log)
    try:
        wait_ready(running)
        yield running
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_SECONDS)


def wait_ready(running: Server) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if running.process.poll() is not None:
            raise BenchError(
                f"{running.app.name} exited with {running.process.returncode} before it was ready:\n"
                + log_tail(running.log)
            )
        connection = http.client.HTTPConnection("127.0.0.1", running.port, timeout=2)
        try:
            connection.request("GET", "/health/ready")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            connection.close()
        time.sleep(0.1)
    raise BenchError(f"{running.app.name} not ready within {READY_SECONDS:g} s:\n{log_tail(running.log)}")


def log_tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


@dataclass(frozen=True)
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Client:
    """One keep-alive HTTP/1.1 connection to a running app."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(self, method: str, path: str, token: str, body: object = None) -> Reply:
        headers = {"Authorization": f"Bearer {token}"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        self.connection.request(method, path, body=payload, headers=headers)
        response = self.connection.getresponse()
        return Reply(response.status, response.headers, response.read())

    def close(self) -> None:
        self.connection.close()


def verify(
    running: Server, db: psycopg.Connection[Any], tokens: dict[str, str], reference: Answers | None
) -> Answers:
    """A full first page with the true total, a create, and answers equal to the reference app's."""
    problems: list[str] = []
    client = Client(running.port)
    try:
        user = MIX_USERS[0]
        response = client.call("GET", f"/api/{user}/tasks?limit=50", tokens[user])
        expected_total = str(count_rows(db, user))
        if response.status != 200:
            problems.append(f"GET list: {response.status} {response.body[:200]!r}")
        else:
            items = response.json()
            if len(items) != 50:
                problems.append(f"GET list: {len(items)} items, expected 50")
            if response.headers.get("X-Total-Count") != expected_total:
                got = response.headers.get("X-Total-Count")
                problems.append(f"GET list: X-Total-Count {got}, expected {expected_total}")
            problems += key_order_problems("GET list", items)
        body = {"title": "Check the benchmark", "description": "Created before the timed run."}
        response = client.call("POST", f"/api/{user}/tasks", tokens[user], body)
        if response.status != 201 or not response.headers.get("Location"):
            problems.append(f"POST: {response.status}, Location {response.headers.get('Location')!r}")
        else:
            problems += key_order_problems("POST", [response.json()])

        answers: Answers = {}
        sized = f"size-{SIZES[0]}"
        paths = [f"/api/{sized}/tasks?limit=50", f"/api/{sized}/tasks?limit=50&offset={SIZES[0]}"]
        paths += [f"/api/{sized}/tasks/{task_id}" for task_id in probe_ids(db, sized)]
        for path in paths:
            response = client.call("GET", path, tokens[sized])
            answers[path] = (response.status, response.headers.get("X-Total-Count"), response.json())
    finally:
        client.close()
    if reference is not None:
        for path, (status, total, data) in answers.items():
            problems += differences(f"GET {path}", reference[path], (status, total, data))
    if problems:
        against = f" (compared with the {SERVICE.name})" if reference is not None else ""
        raise BenchError(f"{running.app.name} answered wrongly{against}:\n  " + "\n  ".join(problems[:20]))
    print(
        f"  {running.app.name}: up on port {running.port}; checks passed ({len(answers)} answers compared)."
    )
    return answers


def key_order_problems(what: str, items: list[Any]) -> list[str]:
    wrong = [item for item in items if not isinstance(item, dict) or list(item) != TASK_KEYS]
    return [f"{what}: key order {list(wrong[0])}, expected {TASK_KEYS}"] if wrong else []


def differences(
    what: str, expected: tuple[int, str | None, Any], got: tuple[int, str | None, Any]
) -> list[str]:
    (status, total, data), (got_status, got_total, got_data) = expected, got
    found = []
    if status != got_status:
        found.append(f"{what}: status {got_status}, expected {status}")
    if total != got_total:
        found.append(f"{what}: X-Total-Count {got_total}, expected {total}")
    expected_items = data if isinstance(data, list) else [data]
    got_items = got_data if isinstance(got_data, list) else [got_data]
    if len(expected_items) != len(got_items):
        found.append(f"{what}: {len(got_items)} items, expected {len(expected_items)}")
    for index, (want, have) in enumerate(zip(expected_items, got_items, strict=False)):
        if want != have:
            if isinstance(want, dict) and isinstance(have, dict):
                keys = [
                    key for key in {**want, **have} if want.get(key, "<absent>") != have.get(key, "<absent>")
                ]
                detail = "; ".join(
                    f"{key}: {have.get(key, '<absent>')!r} vs {want.get(key, '<absent>')!r}" for key in keys
                )
            else:
                detail = f"{have!r} vs {want!r}"
            found.append(f"{what}: item {index}: {detail}")
    return found


# The load -------------------------------------------------------------------------------------


def write_mix_script(path: Path, tokens: dict[str, str], ids: dict[str, list[int]]) -> None:
    """bench/load.lua behind a prelude with every mix user's token and seeded task ids."""
    entries = [
        f"  {{name = {json.dumps(user)}, token = {json.dumps(tokens[user])}, "
        f"ids = {{{', '.join(map(str, ids[user]))}}}}},"
        for user in MIX_USERS
    ]
    prelude = "USERS = {\n" + "\n".join(entries) + f"\n}}\nSEED = {LUA_SEED}\n\n"
    path.write_text(prelude + MIX_SCRIPT.read_text())


def wrk(port: int, script: Path, seconds: int) -> WrkRun:
    command = [WRK, "-t", str(CONNECTIONS), "-c", str(CONNECTIONS), "-d", f"{seconds}s"]
    command += ["--timeout", WRK_TIMEOUT, "-s", str(script), f"http://127.0.0.1:{port}"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=False)  # noqa: S603
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    figures = {match[1]: int(match[2]) for match in re.finditer(r"^BENCH (\w+) (-?\d+)$", done.stdout, re.M)}
    if done.returncode != 0 or not WRK_FIGURES.issubset(figures) or not figures["requests"]:
        raise BenchError(f"wrk failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return WrkRun(command, figures, cpu)


def machine_busy_seconds() -> float:
    """CPU time spent by everything on the machine, all cores, since boot."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields) - idle) / CLOCK_TICKS


def wait_for_quiet(name: str) -> float:
    """The machine's load with the app idle, in % of one core, once under QUIET_LOAD or after QUIET_WAIT.

    Whatever runs then is someone else's (a test suite, another benchmark): it would take CPU from
    the app and PostgreSQL and skew the comparison.
    """
    deadline = time.monotonic() + QUIET_WAIT_SECONDS
    while True:
        busy, started = machine_busy_seconds(), time.monotonic()
        time.sleep(IDLE_SAMPLE_SECONDS)
        percent = (machine_busy_seconds() - busy) / (time.monotonic() - started) * 100
        if percent < QUIET_LOAD or time.monotonic() > deadline:
            break
    if percent >= QUIET_LOAD:
        print(f"  {name}: other work keeps {percent:.0f}% of one core busy; its figures are skewed.")
    return percent


def load(running: Server, script: Path, seconds: int, tokens: dict[str, str]) -> Figures:
    name = running.app.name
    idle_load = wait_for_quiet(name)
    print(f"  {name}: warm-up {WARMUP_SECONDS} s, then {seconds} s under load ...", flush=True)
    wrk(running.port, script, WARMUP_SECONDS)
    server_before, machine_before, started = running.cpu_seconds(), machine_busy_seconds(), time.monotonic()
    result = wrk(running.port, script, seconds)
    wall = time.monotonic() - started
    cpu = {
        "server": (running.cpu_seconds() - server_before) / wall * 100,
        "wrk": result.cpu_seconds / wall * 100,
        "machine": (machine_busy_seconds() - machine_before) / wall * 100,
        "before": idle_load,
    }
    peak_rss = running.peak_rss_mb()
    print(f"  {name}: {result.per_second:,.0f} requests/s; first pages one at a time ...", flush=True)
    first_page = sequential_lists(running, tokens)
    log_lines = len(running.log.read_bytes().splitlines())
    return Figures(result, peak_rss, cpu, first_page, log_lines)


def sequential_lists(running: Server, tokens: dict[str, str]) -> dict[int, Samples]:
    """GET first pages of 50 one at a time on one keep-alive connection, per user size."""
    deadline = time.monotonic() + SEQUENTIAL_DEADLINE
    client = Client(running.port)
    samples = {}
    try:
        for size in SIZES:
            user = f"size-{size}"
            path = f"/api/{user}/tasks?limit=50"
            durations = []
            for attempt in range(SEQUENTIAL_WARMUP + SEQUENTIAL):
                if time.monotonic() > deadline:
                    raise BenchError(f"{running.app.name}: first pages took over {SEQUENTIAL_DEADLINE:g} s")
                start = time.perf_counter_ns()
                response = client.call("GET", path, tokens[user])
                elapsed = time.perf_counter_ns() - start
                if response.status != 200:
                    raise BenchError(f"{running.app.name}: GET {path}: {response.status}")
                if attempt >= SEQUENTIAL_WARMUP:
                    durations.append(elapsed)
            samples[size] = Samples(durations)
    finally:
        client.close()
    return samples


# The report -----------------------------------------------------------------------------------


def report(figures: dict[str, Figures], postgres: str, drift: int, seeded_rows: int, final_rows: int) -> None:
    service, floor = figures[SERVICE.name], figures[FLOOR.name]
    wrk_version = subprocess.run([WRK, "-v"], capture_output=True, text=True, timeout=10, check=False)  # noqa: S603
    print()
    print(f"  Date: {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC; {os.cpu_count()} CPUs")
    print(f"  Python {platform.python_version()}; {postgres}")
    print(f"  {(wrk_version.stdout or wrk_version.stderr).splitlines()[0].strip()}")
    for name, result in figures.items():
        print(f"  wrk command ({name}): {' '.join(result.run.command)}")
    print(
        f"  Mix per request: 60% GET list limit=50, 15% GET one, 10% POST, 10% PUT, 5% PATCH .../complete; "
        f"each connection one of {len(MIX_USERS)} users; after a {WARMUP_SECONDS} s warm-up."
    )
    print(
        f"  First pages: GET ?limit=50 for users with N tasks, {SEQUENTIAL} one at a time on one keep-alive "
        f"connection after {SEQUENTIAL_WARMUP} warm-up, right after the app's wrk run."
    )
    print()

    def both(cell: Callable[[Figures], str]) -> list[str]:
        return [cell(service), cell(floor)]

    def page(size: int) -> Callable[[Figures], str]:
        return lambda f: f"{f.first_page[size].median_us / 1e3:.2f} / {f.first_page[size].p95_us / 1e3:.2f}"

    rows = [
        ["requests/s", *both(lambda f: f"{f.run.per_second:,.0f}")],
        ["requests", *both(lambda f: f"{f.run.figures['requests']:,}")],
        ["latency p50 ms", *both(lambda f: f"{f.run.ms('p50_us'):.2f}")],
        ["latency p95 ms", *both(lambda f: f"{f.run.ms('p95_us'):.2f}")],
        ["latency p99 ms", *both(lambda f: f"{f.run.ms('p99_us'):.2f}")],
        ["non-2xx/3xx responses", *both(lambda f: f"{f.run.figures['status']:,}")],
        [
            "socket errors (connect/read/write/timeout)",
            *both(lambda f: "/".join(str(f.run.figures[k]) for k in ("connect", "read", "write", "timeout"))),
        ],
        ["peak RSS MB (VmHWM, after the run)", *both(lambda f: f"{f.peak_rss_mb:.1f}")],
        *([f"first page p50 / p95 ms, {size:,} tasks", *both(page(size))] for size in SIZES),
        ["CPU % of one core during the run: server", *both(lambda f: f"{f.cpu['server']:.0f}")],
        ["  wrk", *both(lambda f: f"{f.cpu['wrk']:.0f}")],
        [
            "  rest (PostgreSQL, other processes)",
            *both(lambda f: f"{f.cpu['machine'] - f.cpu['server'] - f.cpu['wrk']:.0f}"),
        ],
        [f"  whole machine (of {100 * (os.cpu_count() or 1)})", *both(lambda f: f"{f.cpu['machine']:.0f}")],
        ["  machine, app idle, just before (other work)", *both(lambda f: f"{f.cpu['before']:.0f}")],
        ["server log lines", *both(lambda f: f"{f.log_lines:,}")],
    ]
    print(table(["", SERVICE.name, FLOOR.name], rows))
    print()

    def p50(f: Figures, size: int) -> float:
        return f.first_page[size].median_us

    ratios = [
        ("throughput, service / floor", service.run.per_second / floor.run.per_second),
        ("latency p99, service / floor", service.run.figures["p99_us"] / floor.run.figures["p99_us"]),
        (
            f"single list request at low load ({LOW_LOAD_SIZE} tasks, p50), service / floor",
            p50(service, LOW_LOAD_SIZE) / p50(floor, LOW_LOAD_SIZE),
        ),
        (
            f"service: first page p50 at {SIZES[-1]:,} / at {SIZES[0]:,}",
            p50(service, SIZES[-1]) / p50(service, SIZES[0]),
        ),
        (
            f"floor: first page p50 at {SIZES[-1]:,} / at {SIZES[0]:,}",
            p50(floor, SIZES[-1]) / p50(floor, SIZES[0]),
        ),
    ]
    print(table(["ratio", ""], [(name, f"{value:.2f}") for name, value in ratios]))
    print()
    print(
        f"  Task rows: {seeded_rows:,} seeded, {final_rows:,} after both runs; task_count rows disagreeing "
        f"with the tasks: {drift}."
    )


def main() -> None:
    try:
        run()
    except BenchError as exc:
        print(f"\nbench.load failed: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("\nbench.load interrupted.", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
