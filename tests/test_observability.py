"""Request ids, the access log and /metrics, through HTTP on real apps (and real servers)."""

import http.client
import io
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from anyio import to_thread
from fastapi.testclient import TestClient
from httpx2 import Response
from prometheus_client.parser import text_string_to_metric_families

import logs
import metrics
from main import create_app
from settings import Settings
from testkit import TEST_SECRET, base_settings, bearer, services_of, sign
from testkit.server import RunningServer, make_run, make_runs

ROOT = Path(__file__).resolve().parent.parent
HEX_ID = re.compile(r"[0-9a-f]{32}")
ORIGIN = "http://localhost:3000"
ONE_TASK = "/api/{user_id}/tasks/{task_id}"
TASKS = "/api/{user_id}/tasks"
PASSWORD = "correct horse battery staple 42"
TITLE = "Buy a zebra-striped umbrella for Quintus"
TEXT_LINE = re.compile(
    r"INFO: +(?P<method>[A-Z]+) (?P<route>\S+) (?P<status>\d{3}) (?P<duration>\d+\.\d\d)ms "
    r"request_id=(?P<request_id>\S+) user_id=(?P<user_id>\S+) client=(?P<client>\S+)"
)
JSON_KEYS = {"time", "method", "route", "status", "duration_ms", "request_id", "user_id", "client"}


# --- helpers ------------------------------------------------------------------------------------


class AccessStream:
    """uvicorn's access logger as uvicorn sets it up (one stream handler, not propagating), and
    what reaches that stream once the app's access log has been taken in place of uvicorn's."""

    def __init__(self) -> None:
        self.stream = io.StringIO()

    def lines(self) -> list[str]:
        for handler in logging.getLogger(logs.ACCESS_LOGGER).handlers:
            handler.flush()  # out of the batch now, not half a second from now
        return self.stream.getvalue().splitlines()


@pytest.fixture(autouse=True)
def access() -> Iterator[AccessStream]:
    """For every test, set up before any app starts and put back after every app has stopped
    (an app takes uvicorn's handlers when it starts and puts them back when it stops)."""
    logger = logging.getLogger(logs.UVICORN_ACCESS_LOGGER)
    saved = (logger.handlers, logger.propagate, logger.level)
    captured = AccessStream()
    handler = logging.StreamHandler(captured.stream)
    handler.setFormatter(logging.Formatter('%(levelprefix)s %(client_addr)s - "%(request_line)s"'))
    logger.handlers, logger.propagate, logger.level = [handler], False, logging.INFO
    yield captured
    logger.handlers, logger.propagate, logger.level = saved


def scrape(client: TestClient, **headers: str) -> dict[str, float]:
    """/metrics as {'name{label="value",...}': value}, labels in sorted order."""
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def parse(text: str) -> dict[str, float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def requests(route: str, status: int, method: str = "GET") -> str:
    return f'todo_http_requests_total{{method="{method}",route="{route}",status="{status}"}}'


def create_task(client: TestClient, user: str, headers: dict[str, str], title: str = "a task") -> int:
    response = client.post(f"/api/{user}/tasks", json={"title": title}, headers=headers)
    assert response.status_code == 201, response.text
    task_id: int = response.json()["id"]
    return task_id


# --- request ids --------------------------------------------------------------------------------


@pytest.mark.parametrize("request_id", ["req-123", "A.b_c-9", "x" * 64, "7"])
def test_a_well_formed_request_id_is_echoed(client: TestClient, alice: dict, request_id: str) -> None:
    response = client.get("/api/alice/tasks", headers={**alice, "X-Request-ID": request_id})
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == request_id


@pytest.mark.parametrize(
    "request_id",
    [b"", b"x" * 65, b"a b", b"<script>", b"a/b", b"id;drop", b"line\tbreak", "\u00fcber".encode()],
    ids=["empty", "too-long", "space", "angle-brackets", "slash", "semicolon", "tab", "non-ascii"],
)
def test_a_malformed_request_id_is_replaced(client: TestClient, request_id: bytes) -> None:
    response = client.get("/health", headers={b"X-Request-ID": request_id})
    assert HEX_ID.fullmatch(response.headers["X-Request-ID"])
    assert response.headers.get_list("X-Request-ID") == [response.headers["X-Request-ID"]]


def test_a_request_id_is_generated_for_each_request_without_one(client: TestClient) -> None:
    ids = [client.get("/health").headers["X-Request-ID"] for _ in range(3)]
    assert all(HEX_ID.fullmatch(request_id) for request_id in ids)
    assert len(set(ids)) == 3


def test_every_kind_of_answer_has_a_request_id(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
) -> None:
    client = make_client(make_settings(rate_limit_per_user="1/day", allowed_hosts=["testserver"]))
    alice = bearer(sign({"sub": "alice"}))
    answers = {
        200: client.get("/api/alice/tasks", headers=alice),
        429: client.get("/api/alice/tasks", headers=alice),
        401: client.get("/api/bob/tasks", headers=bearer("not-a-token")),
        404: client.get("/nothing-here"),
        405: client.post("/health"),
        422: client.get("/api/bob/tasks?limit=nope", headers=bearer(sign({"sub": "bob"}))),
        # Answered by the middleware, before any route: the host check, and the body limit.
        400: client.get("/api/alice/tasks", headers={"Host": "elsewhere.example"}),
        413: client.post("/api/carol/tasks", content=b"x" * (2 * 1024 * 1024)),
    }
    for status, response in answers.items():
        assert response.status_code == status, (status, response.text)
        assert HEX_ID.fullmatch(response.headers.get("X-Request-ID", "")), status
        assert len(response.headers.get_list("X-Request-ID")) == 1, status


def test_a_cors_preflight_has_a_request_id(client: TestClient) -> None:
    response = client.options(
        "/api/alice/tasks",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST", "X-Request-ID": "pre-1"},
    )
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert response.headers["X-Request-ID"] == "pre-1"


def test_the_request_id_is_readable_cross_origin(client: TestClient, alice: dict) -> None:
    response = client.get("/api/alice/tasks", headers={**alice, "Origin": ORIGIN})
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    exposed = {name.strip().lower() for name in response.headers["Access-Control-Expose-Headers"].split(",")}
    assert "x-request-id" in exposed
    assert HEX_ID.fullmatch(response.headers["X-Request-ID"])


@pytest.mark.parametrize("sent", [None, "bad id!"], ids=["absent", "malformed"])
def test_a_500_names_the_request_id_of_its_header_and_access_line(
    access: AccessStream, buggy_client: TestClient, sent: str | None
) -> None:
    # `access` first: it must take hold of the access logger before the app starts.
    response = buggy_client.get("/boom", headers={"X-Request-ID": sent} if sent else {})
    assert response.status_code == 500
    request_id = response.headers["X-Request-ID"]
    assert HEX_ID.fullmatch(request_id)
    assert response.json()["request_id"] == request_id  # the one id: request.state.request_id
    assert response.headers.get_list("X-Request-ID") == [request_id]
    [line] = [line for line in access.lines() if "/boom" in line]
    assert f"request_id={request_id}" in line and " 500 " in line


# --- the access log -----------------------------------------------------------------------------


def test_one_line_per_request_with_the_route_template_and_its_fields(
    access: AccessStream, client: TestClient, alice: dict
) -> None:
    task_id = create_task(client, "alice", alice)
    access.lines()  # the create's line
    start = len(access.lines())
    response = client.get(f"/api/alice/tasks/{task_id}", headers={**alice, "X-Request-ID": "find-7"})
    assert response.status_code == 200
    lines = access.lines()[start:]
    assert len(lines) == 1, lines
    fields = TEXT_LINE.fullmatch(lines[0])
    assert fields, lines[0]
    assert fields["method"] == "GET"
    assert fields["route"] == ONE_TASK
    assert fields["status"] == "200"
    assert 0 < float(fields["duration"]) < 10_000
    assert fields["request_id"] == "find-7"
    assert fields["user_id"] == "alice"
    assert fields["client"] == "testclient"
    assert f"/api/alice/tasks/{task_id}" not in lines[0]


def test_the_access_log_replaces_uvicorns_own_and_is_put_back_after(
    make_client: Callable[..., TestClient], settings: Settings, access: AccessStream
) -> None:
    uvicorn = logging.getLogger(logs.UVICORN_ACCESS_LOGGER)
    before = list(uvicorn.handlers)  # the fixture's, and pytest's capture
    client = make_client(settings)
    # No handler, no propagation: uvicorn's protocol writes no line of its own (hasHandlers).
    assert not uvicorn.hasHandlers()
    client.get("/health")
    assert access.stream.getvalue() == ""  # kept for the next batch, not one write per line
    client.__exit__(None, None, None)  # shutdown writes out what is left
    [line] = access.stream.getvalue().splitlines()
    assert TEXT_LINE.fullmatch(line), line
    assert " /health 200 " in line and "user_id=-" in line
    assert uvicorn.handlers == before and not uvicorn.propagate
    assert logging.getLogger(logs.ACCESS_LOGGER).handlers == []


def test_a_full_batch_is_written_at_once(
    make_client: Callable[..., TestClient], settings: Settings, access: AccessStream
) -> None:
    make_client(settings)
    logger = logging.getLogger(logs.ACCESS_LOGGER)
    for n in range(logs.BATCH - 1):
        logger.info("line %d", n)
    assert access.stream.getvalue() == ""
    logger.info("the last of the batch")
    assert len(access.stream.getvalue().splitlines()) == logs.BATCH


def test_json_lines_parse_with_every_field(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings], access: AccessStream
) -> None:
    client = make_client(make_settings(log_format="json"))
    alice = bearer(sign({"sub": "alice"}))
    task_id = create_task(client, "alice", alice)
    client.patch(f"/api/alice/tasks/{task_id}/complete", headers={**alice, "X-Request-ID": "done-1"})
    client.get("/api/alice/nothing", headers=alice)
    client.get("/api/alice/tasks", headers=bearer("nope"))
    records = [json.loads(line) for line in access.lines()]
    assert [set(record) for record in records] == [JSON_KEYS] * 4
    created, completed, unmatched, refused = records
    assert (created["method"], created["route"], created["status"]) == ("POST", TASKS, 201)
    assert completed["route"] == ONE_TASK + "/complete"
    assert (completed["request_id"], completed["user_id"]) == ("done-1", "alice")
    assert isinstance(completed["duration_ms"], float) and completed["duration_ms"] > 0
    assert (unmatched["route"], unmatched["status"]) == (metrics.UNMATCHED, 404)
    assert (refused["status"], refused["user_id"]) == (401, None)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", created["time"])


def test_log_format_is_validated() -> None:
    assert base_settings("sqlite://", log_format="JSON").log_format == "json"
    with pytest.raises(ValueError, match="log_format"):
        base_settings("sqlite://", log_format="xml")


def test_an_empty_query_value_leaves_the_route_template_in_the_log(
    access: AccessStream, client: TestClient, alice: dict
) -> None:
    client.get("/api/alice/tasks?status=&q=&limit=5", headers=alice)
    [line] = access.lines()
    assert f" {TASKS} 200 " in line


def test_the_log_holds_no_token_password_or_task_text(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings], access: AccessStream
) -> None:
    for log_format in ("text", "json"):
        client = make_client(make_settings(log_format=log_format))
        email = f"quintus-{log_format}@example.com"
        response = client.post("/auth/register", json={"email": email, "password": PASSWORD, "name": "Q"})
        assert response.status_code == 201, response.text
        token = client.post("/auth/login", json={"email": email, "password": PASSWORD}).json()["access_token"]
        user = response.json()["id"]
        task_id = create_task(client, user, bearer(token), title=TITLE)
        client.get(f"/api/{user}/tasks", params={"q": "zebra-striped"}, headers=bearer(token))
        client.put(f"/api/{user}/tasks/{task_id}", json={"description": TITLE}, headers=bearer(token))
        client.post("/auth/login", json={"email": email, "password": PASSWORD + "-wrong"})
        lines = access.lines()
        assert len(lines) >= 6
        text = "\n".join(lines)
        for secret in (token, token.split(".")[2], PASSWORD, TITLE, "zebra", email):
            assert secret not in text, secret
        assert f"user_id={user}" in text or f'"user_id":"{user}"' in text
        client.__exit__(None, None, None)
        access.stream.truncate(0)
        access.stream.seek(0)


def test_no_access_log_means_no_lines_at_all(
    client_factory: Callable[[], TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    uvicorn = logging.getLogger(logs.UVICORN_ACCESS_LOGGER)
    saved = (uvicorn.handlers, uvicorn.propagate)
    uvicorn.handlers, uvicorn.propagate = [], False  # what `uvicorn --no-access-log` leaves
    try:
        with caplog.at_level(logging.INFO):
            client = client_factory()
            client.get("/health")
            client.__exit__(None, None, None)
        assert not [record for record in caplog.records if record.name == logs.ACCESS_LOGGER]
    finally:
        uvicorn.handlers, uvicorn.propagate = saved


@pytest.fixture
def client_factory(make_client: Callable[..., TestClient], settings: Settings) -> Callable[[], TestClient]:
    return lambda: make_client(settings)


def test_under_make_run_the_access_line_is_the_services(tmp_path: Path) -> None:
    with make_run(tmp_path) as server:
        token = sign({"sub": "alice"}, secret=server.secret)
        status, headers = call(server, "GET", "/api/alice/tasks/12345", token, {"X-Request-ID": "real-1"})
        assert (status, headers["X-Request-ID"]) == (404, "real-1")
    log = server.log.read_text()
    assert re.search(
        r"INFO: +GET /api/\{user_id\}/tasks/\{task_id\} 404 \S+ms request_id=real-1 user_id=alice", log
    )
    assert "HTTP/1.1" not in log and "/api/alice/tasks/12345" not in log  # no uvicorn line, no path


def call(
    server: RunningServer, method: str, path: str, token: str | None = None, headers: dict | None = None
) -> tuple[int, http.client.HTTPMessage]:
    connection = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        sent = {**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
        connection.request(method, path, headers=sent)
        response = connection.getresponse()
        response.read()
        return response.status, response.headers
    finally:
        connection.close()


# --- /metrics -----------------------------------------------------------------------------------


def test_requests_are_counted_and_timed_by_route_template_and_status(client: TestClient, alice: dict) -> None:
    task_id = create_task(client, "alice", alice)
    for _ in range(2):
        assert client.get(f"/api/alice/tasks/{task_id}", headers=alice).status_code == 200
    assert client.get("/api/alice/tasks/999999", headers=alice).status_code == 404
    client.get("/no/such/path")
    client.request("BREW", "/health")
    seen = scrape(client)
    assert seen[requests(TASKS, 201, "POST")] == 1
    assert seen[requests(ONE_TASK, 200)] == 2
    assert seen[requests(ONE_TASK, 404)] == 1
    assert seen[requests(metrics.UNMATCHED, 404)] == 1
    assert seen[requests("/health", 405, "other")] == 1
    histogram = 'todo_http_request_duration_seconds_{}{{method="GET",route="{}",status="200"}}'
    assert seen[histogram.format("count", ONE_TASK)] == 2
    assert 0 < seen[histogram.format("sum", ONE_TASK)] < 20
    bucket = 'todo_http_request_duration_seconds_bucket{{le="{}",method="GET",route="{}",status="200"}}'
    assert seen[bucket.format("+Inf", ONE_TASK)] == 2
    assert not any("/api/alice" in name or "/no/such" in name for name in seen)  # no path, ever


def test_in_flight_requests_are_counted(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings())
    release = threading.Event()

    @app.get("/slow")
    async def slow() -> None:
        await to_thread.run_sync(release.wait, 10)

    in_flight = "todo_http_requests_in_flight"
    with TestClient(app) as client:
        assert scrape(client)[in_flight] == 1  # the scrape itself
        waiting = threading.Thread(target=client.get, args=("/slow",))
        waiting.start()
        try:
            deadline = time.monotonic() + 10
            while scrape(client)[in_flight] != 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert scrape(client)[in_flight] == 2
        finally:
            release.set()
            waiting.join()
        assert scrape(client)[in_flight] == 1


def test_the_pool_in_use_is_read_when_scraped(client: TestClient) -> None:
    pool_in_use = "todo_db_pool_connections_in_use"
    assert scrape(client)[pool_in_use] == 0
    with services_of(client).database.engine.connect():
        assert scrape(client)[pool_in_use] == 1
    assert scrape(client)[pool_in_use] == 0
    assert scrape(client)["todo_db_pool_connections_max"] == services_of(client).settings.pool_capacity


def test_an_in_memory_database_has_no_pool_count(make_client: Callable[..., TestClient]) -> None:
    client = make_client(base_settings("sqlite://"))
    seen = scrape(client)
    assert "todo_db_pool_connections_in_use" not in seen
    assert seen["todo_http_requests_in_flight"] == 1


def test_every_limit_and_reason_is_there_from_the_start(client: TestClient) -> None:
    seen = scrape(client)
    for limit in metrics.RATE_LIMITS:
        assert seen[f'todo_rate_limit_rejections_total{{limit="{limit}"}}'] == 0
    for reason in metrics.TOKEN_FAILURES:
        assert seen[f'todo_token_failures_total{{reason="{reason}"}}'] == 0


def login_throttled(client: TestClient) -> Response:
    wrong = {"email": "nobody@example.com", "password": "wrong password"}
    client.post("/auth/login", json=wrong)
    return client.post("/auth/login", json=wrong)


def per_user(client: TestClient) -> Response:
    alice = bearer(sign({"sub": "alice"}))
    client.get("/api/alice/tasks", headers=alice)
    return client.get("/api/alice/tasks", headers=alice)


def without_token(client: TestClient) -> Response:
    client.get("/api/alice/tasks")
    return client.get("/api/alice/tasks", headers=bearer("garbage"))


def at_login(client: TestClient) -> Response:
    client.post("/auth/register", json={"email": "a@example.com", "password": PASSWORD, "name": "A"})
    return client.post("/auth/register", json={"email": "b@example.com", "password": PASSWORD, "name": "B"})


@pytest.mark.parametrize(
    ("limit", "overrides", "refuse"),
    [
        ("user", {"rate_limit_per_user": "1/day"}, per_user),
        ("unauthenticated", {"rate_limit_unauthenticated_per_address": "1/day"}, without_token),
        ("auth", {"rate_limit_auth_per_address": "1/day"}, at_login),
        ("login", {"login_max_failures_per_email": 1}, login_throttled),
    ],
)
def test_a_429_is_counted_under_its_limit(
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    limit: str,
    overrides: dict,
    refuse: Callable[[TestClient], Response],
) -> None:
    client = make_client(make_settings(**overrides))
    assert refuse(client).status_code == 429
    seen = scrape(client)
    for name in metrics.RATE_LIMITS:
        assert seen[f'todo_rate_limit_rejections_total{{limit="{name}"}}'] == float(name == limit), name


@pytest.mark.parametrize(
    ("reason", "headers"),
    [
        ("expired", bearer(sign({"sub": "alice"}, lifetime=-120))),
        ("bad_signature", bearer(sign({"sub": "alice"}, secret="another secret" * 4))),
        ("malformed", bearer("not-a-token")),
        ("missing", {}),
        ("missing", {"Authorization": "Basic YWxpY2U6cHc="}),
    ],
)
def test_a_refused_token_is_counted_by_reason(client: TestClient, reason: str, headers: dict) -> None:
    assert client.get("/api/alice/tasks", headers=headers).status_code == 401
    seen = scrape(client)
    failures = {name: value for name, value in seen.items() if name.startswith("todo_token_failures_total")}
    assert {name for name, value in failures.items() if value} == {
        f'todo_token_failures_total{{reason="{reason}"}}'
    }
    assert failures[f'todo_token_failures_total{{reason="{reason}"}}'] == 1


def test_every_token_error_message_has_a_reason() -> None:
    source = (ROOT / "tokens.py").read_text()
    messages = re.findall(r'AuthError\(f?"([^"]+)"', source)
    assert len(messages) > 10
    for message in messages:
        assert metrics.token_failure_reason(message) != metrics.OTHER, message


def test_metrics_can_be_turned_off(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings], access: AccessStream
) -> None:
    client = make_client(make_settings(metrics_enabled=False))
    response = client.get("/metrics")
    assert response.status_code == 404
    assert HEX_ID.fullmatch(response.headers["X-Request-ID"])  # the rest goes on
    assert client.get("/api/alice/tasks", headers=bearer("nope")).status_code == 401  # nothing to count
    assert len(access.lines()) == 2


METRICS_TOKEN = "m3tr1cs-t0ken-for-the-scraper-only"


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer wrong-token-of-some-length",
        f"Basic {METRICS_TOKEN}",
        f"Bearer {METRICS_TOKEN}x",
        "Bearer ",
    ],
    ids=["none", "wrong", "other-scheme", "longer", "empty"],
)
def test_a_metrics_token_is_required_when_set(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings], authorization: str | None
) -> None:
    client = make_client(make_settings(metrics_token=METRICS_TOKEN))
    response = client.get("/metrics", headers={"Authorization": authorization} if authorization else {})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert "todo_" not in response.text
    assert scrape(client, Authorization=f"Bearer {METRICS_TOKEN}")[requests("/metrics", 401)] == 1


def test_a_short_metrics_token_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 characters"):
        base_settings("sqlite://", metrics_token="short")
    assert base_settings("sqlite://", metrics_token="  ").metrics_token is None


def test_metrics_need_no_user_token_count_against_no_limit_and_answer_any_host(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
) -> None:
    client = make_client(
        make_settings(
            rate_limit_unauthenticated_per_address="1/day",
            rate_limit_per_user="1/day",
            allowed_hosts=["api.example.com"],
        )
    )
    for _ in range(5):
        assert client.get("/metrics", headers={"Host": "10.0.0.5:8000"}).status_code == 200
    assert "/metrics" not in client.get("/openapi.json", headers={"Host": "api.example.com"}).json()["paths"]


def test_production_warns_about_open_metrics(caplog: pytest.LogCaptureFixture) -> None:
    production = {"environment": "production", "allowed_hosts": ["api.example.com"]}
    with caplog.at_level(logging.WARNING, logger="todo"):
        create_app(base_settings("sqlite://", **production))
    assert any("METRICS_TOKEN is not set" in record.getMessage() for record in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="todo"):
        create_app(base_settings("sqlite://", **production, metrics_token=METRICS_TOKEN))
    assert not any("METRICS_TOKEN" in record.getMessage() for record in caplog.records)


def test_several_processes_add_up_in_multiprocess_mode(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    with make_runs(tmp_path, 2, {"PROMETHEUS_MULTIPROC_DIR": str(directory)}) as (one, two):
        token = sign({"sub": "alice"}, secret=one.secret)
        for server, count in ((one, 3), (two, 2)):
            for _ in range(count):
                assert call(server, "GET", "/api/alice/tasks", token)[0] == 200
        for server in (one, two):
            connection = http.client.HTTPConnection(server.host, server.port, timeout=10)
            connection.request("GET", "/metrics")
            seen = parse(connection.getresponse().read().decode())
            connection.close()
            assert seen[requests(TASKS, 200)] == 5  # both processes, whichever is asked
            assert seen["todo_http_requests_in_flight"] == 1  # the scrape, in one of them
            assert seen["todo_db_pool_connections_max"] == 2 * one_pool_capacity()
            assert "process_cpu_seconds_total" not in seen
        assert {path.name.split("_")[0] for path in directory.iterdir()} >= {"counter", "histogram", "gauge"}
    # Stopped, each took its live gauges out of the sums; counts stay until the next start.
    assert not list(directory.glob("gauge_live*"))
    assert list(directory.glob("counter_*"))


def test_a_missing_multiprocess_directory_stops_start_up(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields},
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "missing"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'todo.db'}",
        "BETTER_AUTH_SECRET": TEST_SECRET,
        "ENVIRONMENT": "test",
    }
    done = subprocess.run(
        [sys.executable, "-c", "import main"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert f"PROMETHEUS_MULTIPROC_DIR={tmp_path / 'missing'} is not a directory" in done.stderr
    assert "Traceback" not in done.stderr


def one_pool_capacity() -> int:
    return base_settings("sqlite:///x.db").pool_capacity
