"""The service around the routes: health, errors, CORS, docs, settings, migrations, restarts."""

import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from db import ROOT, alembic_config, make_engine, migrate, migrate_down
from routes.auth import JSON_OR_FORM
from settings import Settings
from testkit import base_settings, bearer, sign

TASKS = "/api/alice/tasks"
INTERNAL_ERROR = "Internal server error"


def error_locs(response: Any) -> list[list[str | int]]:
    """The `loc` of each validation error in a 422, in order."""
    assert response.status_code == 422, response.text
    return [error["loc"] for error in response.json()["detail"]]


# --- health -----------------------------------------------------------------------------------


def test_health_needs_no_token(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}


def test_ready_when_the_database_answers(client: TestClient) -> None:
    response = client.get("/health/ready")
    assert response.status_code == 200
    assert response.json()["database"] == "ok"


def test_not_ready_when_the_database_is_unreachable(
    make_client: Callable[..., TestClient], backend: str, tmp_path: Path
) -> None:
    url = (
        f"sqlite:///{tmp_path}/missing-dir/todo.db"
        if backend == "sqlite"
        else "postgresql://postgres@127.0.0.1:1/nowhere"
    )
    client = make_client(base_settings(url, db_pool_timeout=1))
    response = client.get("/health/ready")
    assert response.status_code == 503
    assert response.json() == {"detail": "Database unavailable"}
    assert response.headers["Retry-After"] == "5"
    assert client.get("/health").status_code == 200


# --- errors -----------------------------------------------------------------------------------


def test_unknown_route_is_json_404(client: TestClient) -> None:
    response = client.get("/api/alice/nothing-here", headers=bearer(sign({"sub": "alice"})))
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


def test_wrong_method_is_json_405(client: TestClient) -> None:
    response = client.post("/health")
    assert response.status_code == 405
    assert response.json() == {"detail": "Method Not Allowed"}


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/bulk", "POST"),
        ("GET", "/bulk", "POST"),
        ("DELETE", "/stats", "GET, HEAD"),
        ("PATCH", "/changes", "GET, HEAD"),
    ],
)
def test_a_method_a_fixed_path_does_not_serve_is_405_not_a_bad_task_id(
    client: TestClient, method: str, path: str, allow: str
) -> None:
    # Found by the schema fuzzer (e2e/test_fuzz.py): PUT /tasks/bulk reached PUT /tasks/{task_id}
    # and was answered 422 "task_id: not an integer".
    response = client.request(method, f"{TASKS}{path}", json={}, headers=bearer(sign({"sub": "alice"})))
    assert response.status_code == 405, response.text
    assert response.headers["Allow"] == allow
    assert response.json() == {"detail": "Method Not Allowed"}


def test_a_task_id_that_is_no_integer_is_still_422(client: TestClient) -> None:
    response = client.put(f"{TASKS}/abc", json={}, headers=bearer(sign({"sub": "alice"})))
    assert error_locs(response) == [["path", "task_id"]]


def test_a_bug_is_a_generic_500_logged_with_a_request_id(
    buggy_client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        response = buggy_client.get(
            "/boom", headers={"X-Request-ID": "req-123", "Origin": "http://localhost:3000"}
        )
    assert response.status_code == 500
    assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert response.json() == {"detail": INTERNAL_ERROR, "request_id": "req-123"}
    assert "SELECT" not in response.text and "Traceback" not in response.text
    assert any("req-123" in record.getMessage() for record in caplog.records)


def test_a_bug_is_answered_and_not_raised_to_the_server(buggy_app: FastAPI) -> None:
    """The error is answered and ends there: an exception raised on to the server makes uvicorn
    close the keep-alive connection, and the client cannot tell it from an unanswered request."""
    with TestClient(buggy_app, raise_server_exceptions=True) as client:  # raises what reaches the server
        response = client.get("/boom", headers={"Origin": "http://localhost:3000"})
    assert response.status_code == 500
    assert response.json()["detail"] == INTERNAL_ERROR
    # Answered inside the CORS and security-header middleware, so it has their headers too.
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"


@pytest.mark.parametrize(
    "request_id", ["req-123", "A.b_c-9", "x" * 64, "7"], ids=["plain", "all-classes", "64-chars", "one-char"]
)
def test_a_well_formed_request_id_is_reused_on_a_500(buggy_client: TestClient, request_id: str) -> None:
    response = buggy_client.get("/boom", headers={"X-Request-ID": request_id})
    assert response.status_code == 500
    assert response.json() == {"detail": INTERNAL_ERROR, "request_id": request_id}
    assert response.headers["X-Request-ID"] == request_id


@pytest.mark.parametrize(
    "request_id",
    [None, b"", b"x" * 65, b"a b", b"<x>", b"a/b", b"id;drop", "\u00fcber".encode()],
    ids=["absent", "empty", "too-long", "space", "angle-brackets", "slash", "semicolon", "non-ascii"],
)
def test_a_malformed_request_id_is_replaced_on_a_500(
    buggy_client: TestClient, caplog: pytest.LogCaptureFixture, request_id: bytes | None
) -> None:
    headers = {} if request_id is None else {b"X-Request-ID": request_id}
    with caplog.at_level(logging.ERROR):
        first = buggy_client.get("/boom", headers=headers)
        second = buggy_client.get("/boom", headers=headers)
    generated = first.headers["X-Request-ID"]
    assert first.status_code == 500
    assert re.fullmatch("[0-9a-f]{32}", generated), generated
    assert first.json() == {"detail": INTERNAL_ERROR, "request_id": generated}
    assert second.headers["X-Request-ID"] != generated  # one new id per request
    assert any(generated in record.getMessage() for record in caplog.records)


# --- CORS -------------------------------------------------------------------------------------


def test_cors_preflight_allows_the_frontend(client: TestClient) -> None:
    response = client.options(
        "/api/alice/tasks",
        headers={
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert "authorization" in response.headers["Access-Control-Allow-Headers"].lower()


def test_cors_exposes_the_paging_headers(client: TestClient) -> None:
    headers = {"Origin": "http://localhost:3000", **bearer(sign({"sub": "alice"}))}
    response = client.get("/api/alice/tasks", headers=headers)
    exposed = {h.strip().lower() for h in response.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"x-total-count", "link", "location"} <= exposed


def test_cors_refuses_other_origins(client: TestClient) -> None:
    response = client.options(
        "/api/alice/tasks",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert "Access-Control-Allow-Origin" not in response.headers


def test_cors_origins_come_from_settings(
    make_settings: Callable[..., Settings], make_client: Callable[..., TestClient]
) -> None:
    client = make_client(make_settings(cors_origins="https://app.example, https://admin.example"))
    for origin in ("https://app.example", "https://admin.example"):
        response = client.options(
            "/health", headers={"Origin": origin, "Access-Control-Request-Method": "GET"}
        )
        assert response.headers["Access-Control-Allow-Origin"] == origin


# --- docs -------------------------------------------------------------------------------------


def test_every_route_is_documented(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            assert operation.get("summary"), f"{method} {path} has no summary"
            if path.startswith("/api/"):
                assert {"401", "403"} <= set(operation["responses"]), f"{method} {path}"
            if "{task_id}" in path:
                assert "404" in operation["responses"], f"{method} {path}"
            if "requestBody" in operation:  # an undecodable body, one that is too large, a bad one
                assert {"400", "413", "422"} <= set(operation["responses"]), f"{method} {path}"


def takes_null(schema: dict[str, Any]) -> bool:
    branches = schema.get("anyOf", [schema])
    return any(branch.get("type") == "null" or "null" in (branch.get("type") or []) for branch in branches)


def test_the_docs_say_which_body_fields_take_null(client: TestClient, alice: dict[str, str]) -> None:
    """Each field of each task body is documented nullable exactly when null is accepted there."""
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    task_id = client.post("/api/alice/tasks", json={"title": "t"}, headers=alice).json()["id"]
    wrong, checked = [], 0
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            ref = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
            name = ref.get("schema", {}).get("$ref", "").rpartition("/")[2]
            if not path.startswith("/api/") or schemas.get(name, {}).get("type") != "object":
                continue
            url = path.format(user_id="alice", task_id=task_id)
            base = {"title": "t"} if "title" in schemas[name].get("required", []) else {}
            for field, schema in schemas[name]["properties"].items():
                response = client.request(method, url, json={**base, field: None}, headers=alice)
                refused = response.status_code == 422 and ["body", field] in [
                    error["loc"] for error in response.json()["detail"] if isinstance(error, dict)
                ]
                checked += 1
                if refused == takes_null(schema):
                    wrong.append(f"{method.upper()} {path} {field}: documented nullable={takes_null(schema)}")
    assert wrong == []
    assert checked > 20


# --- settings ---------------------------------------------------------------------------------


def test_production_refuses_a_missing_secret(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="BETTER_AUTH_SECRET"):
        Settings(_env_file=None, environment="production", better_auth_secret=None)


def test_production_refuses_a_short_secret() -> None:
    with pytest.raises(ValidationError, match="shorter than 32 characters"):
        Settings(_env_file=None, environment="production", better_auth_secret="too-short")


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        ("better-auth-secret-12345678901234567890", "example or placeholder"),
        ("x" * 32, "repeats too few"),
        ("test-secret-" + "x" * 60, "repeats too few"),
        ("Kq7" * 12, "repeats too few|one short sequence"),
        ("0123456789abcdef" * 2, "one short sequence"),
        ("please-change-me-" + "Zx9Lp2Qw7Rt5Yu1Io3", "example or placeholder"),
        ("dev_better_auth_secret_change_me_32_chars", "example or placeholder"),
    ],
)
def test_production_refuses_a_weak_secret(secret: str, why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        Settings(_env_file=None, environment="production", better_auth_secret=secret)


def test_a_weak_secret_is_a_warning_outside_production(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="todo.settings"):
        Settings(_env_file=None, environment="development", better_auth_secret="x" * 40)
    assert "BETTER_AUTH_SECRET is too weak" in caplog.text
    assert "production would refuse it" in caplog.text


@pytest.mark.parametrize("generated", ["openssl rand -base64 32", "openssl rand -hex 32", "token_urlsafe"])
def test_production_accepts_generated_secrets(generated: str) -> None:
    import base64
    import secrets

    for _ in range(50):
        raw = secrets.token_bytes(32)
        secret = {
            "openssl rand -base64 32": base64.b64encode(raw).decode(),
            "openssl rand -hex 32": raw.hex(),
            "token_urlsafe": secrets.token_urlsafe(32),
        }[generated]
        production = Settings(
            _env_file=None,
            environment="production",
            better_auth_secret=secret,
            allowed_hosts=["api.example.com"],
        )
        assert production.secret == secret


def test_the_development_secret_file_is_private_and_never_followed_through_a_link(tmp_path: Path) -> None:
    path = tmp_path / ".dev-secret"
    settings = Settings(
        _env_file=None, environment="development", better_auth_secret=None, dev_secret_file=path
    )
    assert path.stat().st_mode & 0o777 == 0o600
    assert (
        Settings(
            _env_file=None, environment="development", better_auth_secret=None, dev_secret_file=path
        ).secret
        == settings.secret
    )
    path.chmod(0o644)
    Settings(_env_file=None, environment="development", better_auth_secret=None, dev_secret_file=path)
    assert path.stat().st_mode & 0o777 == 0o600  # tightened when found readable by others
    target = tmp_path / "elsewhere"
    target.write_text("not to be touched")
    link = tmp_path / "linked-secret"
    link.symlink_to(target)
    with pytest.raises(ValidationError, match=r"DEV_SECRET_FILE=.* cannot be used"):
        Settings(_env_file=None, environment="development", better_auth_secret=None, dev_secret_file=link)
    assert target.read_text() == "not to be touched"


def test_production_start_up_stops_with_a_clear_message(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    env.update(ENVIRONMENT="production", BETTER_AUTH_SECRET="short")
    result = subprocess.run(
        [sys.executable, "-c", "import main"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "Cannot start: invalid settings" in result.stderr
    assert "BETTER_AUTH_SECRET is too weak: it is shorter than 32 characters" in result.stderr
    assert "Traceback" not in result.stderr


def test_production_does_not_migrate_at_startup(
    empty_database_url: str, make_client: Callable[..., TestClient]
) -> None:
    settings = base_settings(
        empty_database_url, environment="production", auto_migrate=None, allowed_hosts=["testserver"]
    )
    client = make_client(settings)
    assert client.get("/health/ready").status_code == 200  # started, and the database answers
    engine = make_engine(settings)
    tables = inspect(engine).get_table_names()
    engine.dispose()
    assert tables == []


def test_development_generates_and_keeps_a_secret(tmp_path: Path) -> None:
    secret_file = tmp_path / ".dev-secret"
    first = Settings(_env_file=None, better_auth_secret=None, dev_secret_file=secret_file)
    again = Settings(_env_file=None, better_auth_secret=None, dev_secret_file=secret_file)
    assert len(first.secret) >= 32
    assert first.secret == again.secret
    assert secret_file.stat().st_mode & 0o077 == 0


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORS_ORIGINS", "https://a.example,https://b.example")
    monkeypatch.setenv("JWT_ALGORITHMS", '["EdDSA"]')
    monkeypatch.setenv("ACCESS_TOKEN_MINUTES", "15")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    settings = Settings(_env_file=None)
    assert settings.log_level == "DEBUG"
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.jwt_algorithms == ["EdDSA"]
    assert settings.access_token_minutes == 15


def test_unknown_log_level_is_refused() -> None:
    with pytest.raises(ValidationError, match="log_level"):
        Settings(_env_file=None, log_level="LOUD")


def test_unknown_jwt_algorithm_setting_is_refused() -> None:
    with pytest.raises(ValidationError, match="unsupported"):
        Settings(_env_file=None, jwt_algorithms="none")


@pytest.mark.parametrize(
    "url",
    [
        "postgres://user:pw@ep-cool-1.eu-central-1.aws.neon.tech/neondb?sslmode=require&channel_binding=require",
        "postgresql://user:pw@ep-cool-1.eu-central-1.aws.neon.tech/neondb?sslmode=require&channel_binding=require",
        "postgresql+psycopg2://user:pw@ep-cool-1.eu-central-1.aws.neon.tech/neondb?sslmode=require&channel_binding=require",
    ],
)
def test_pasted_postgres_urls_are_normalized(url: str) -> None:
    parsed = make_url(Settings(_env_file=None, database_url=url).database_url)
    assert parsed.drivername == "postgresql+psycopg2"
    assert parsed.query == {"sslmode": "require", "channel_binding": "require"}
    assert parsed.database == "neondb"


def test_engine_connects_as_configured(settings: Settings, backend: str, database_url: str) -> None:
    """SQLite: WAL and foreign keys. PostgreSQL: the `postgres://` form users paste connects."""
    if backend == "sqlite":
        engine = make_engine(settings)
        with engine.connect() as connection:
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
    else:
        pasted = database_url.replace("postgresql+psycopg2://", "postgres://") + "?sslmode=prefer"
        engine = make_engine(base_settings(pasted))
        with engine.connect() as connection:
            assert connection.execute(text("SELECT 1")).scalar() == 1
        assert engine.pool.size() == settings.db_pool_size  # type: ignore[attr-defined]
    engine.dispose()


# --- migrations and restarts ------------------------------------------------------------------


def test_startup_migrates_an_empty_database(
    empty_database_url: str, make_client: Callable[..., TestClient]
) -> None:
    """The hackathon path: no `make migrate`, just start the app outside production."""
    settings = base_settings(empty_database_url, auto_migrate=None, environment="development")
    client = make_client(settings, base_url="http://localhost:8000")
    alice = bearer(sign({"sub": "alice"}))
    assert client.post("/api/alice/tasks", json={"title": "first"}, headers=alice).status_code == 201
    engine = make_engine(settings)
    tables = set(inspect(engine).get_table_names())
    indexes = {index["name"] for index in inspect(engine).get_indexes("task")}
    with engine.connect() as connection:
        version = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    engine.dispose()
    assert {"task", "users", "revoked_token", "alembic_version"} <= tables
    assert "ix_task_user_created" in indexes
    assert version == ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_migrations_go_down_and_up_again(empty_database_url: str) -> None:
    engine = make_engine(base_settings(empty_database_url))
    migrate(engine)
    migrate_down(engine, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    migrate(engine)
    assert "task" in inspect(engine).get_table_names()
    engine.dispose()


def test_data_survives_an_app_restart(
    make_settings: Callable[..., Settings], make_client: Callable[..., TestClient]
) -> None:
    settings = make_settings()
    alice = bearer(sign({"sub": "alice"}))
    first = make_client(settings)
    task = first.post("/api/alice/tasks", json={"title": "persisted"}, headers=alice).json()
    first.__exit__(None, None, None)
    restarted = make_client(settings)
    assert restarted.get(f"/api/alice/tasks/{task['id']}", headers=alice).json() == task


def test_migrations_match_the_models(settings: Settings) -> None:
    """A model change without its migration fails here."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlmodel import SQLModel

    engine = make_engine(settings)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, SQLModel.metadata) == []
    engine.dispose()


@pytest.mark.parametrize("path", ["/health", "/health/ready"])
def test_probes_answer_head(client: TestClient, path: str) -> None:
    assert client.head(path).status_code == 200


def padded_task(size: int) -> bytes:
    """A valid task body of exactly `size` bytes (JSON whitespace makes up the length)."""
    head, tail = b'{"title": "padded"', b"}"
    return head + b" " * (size - len(head) - len(tail)) + tail


def chunked(body: bytes, size: int = 4096) -> Iterator[bytes]:
    """The body as an iterator, which the client sends without Content-Length."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def send_body(client: TestClient, body: bytes, framing: str) -> Any:
    headers = {**bearer(sign({"sub": "alice"})), "Content-Type": "application/json"}
    content = body if framing == "content-length" else chunked(body)
    response = client.post(TASKS, content=content, headers=headers)
    assert ("content-length" in response.request.headers) is (framing == "content-length")
    return response


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_oversized_body_is_413_and_stores_nothing(
    client: TestClient, settings: Settings, framing: str
) -> None:
    response = send_body(client, padded_task(settings.max_body_bytes + 1), framing)
    assert response.status_code == 413
    assert response.json() == {"detail": f"Request body is larger than {settings.max_body_bytes} bytes"}
    assert client.get(TASKS, headers=bearer(sign({"sub": "alice"}))).json() == []


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_body_of_exactly_the_limit_is_accepted(
    client: TestClient, settings: Settings, framing: str
) -> None:
    response = send_body(client, padded_task(settings.max_body_bytes), framing)
    assert response.status_code == 201, response.text
    assert response.json()["title"] == "padded"


def test_validation_errors_echo_input_short_and_safe(client: TestClient) -> None:
    headers = {**bearer(sign({"sub": "alice"})), "Content-Type": "application/json"}
    long_title = client.post("/api/alice/tasks", json={"title": "x" * 5000}, headers=headers)
    assert error_locs(long_title) == [["body", "title"]]
    assert len(long_title.content) < 1000
    not_a_number = client.post(
        "/api/alice/tasks", content=b'{"title": "t", "completed": NaN}', headers=headers
    )
    assert error_locs(not_a_number) == [["body", "completed"]]
    not_a_number.json()  # strict JSON: no bare NaN/Infinity
    assert "NaN" not in not_a_number.text.replace('"NaN"', "").replace('"nan"', "")
    password = client.post("/auth/register", json={"email": "a@b.io", "password": "pw-1x7q", "name": "A"})
    assert error_locs(password) == [["body", "password"]]
    assert "pw-1x7q" not in password.text


NOT_PARSED = "There was an error parsing the body"


@pytest.mark.parametrize(
    ("path", "content", "content_type", "status", "detail"),
    [
        # Not declared as JSON: on a task, the bytes are read as text, which is not an object;
        # /auth takes only JSON and forms.
        ("/auth/register", b"\xff\xfe", "text/plain", 415, JSON_OR_FORM),
        ("/api/alice/tasks", b"\xff\xfe", "text/plain", 422, [["body"]]),
        ("/auth/login", b"\xff\xfe", "text/plain", 415, JSON_OR_FORM),
        # A UTF-16 byte order mark: decodes, but to no JSON (the error is at offset 0).
        ("/auth/register", b"\xff\xfe", "application/json", 422, [["body", 0]]),
        # Not UTF-8 at all: cannot be decoded (README: 400).
        ("/auth/register", b'{"name": "\xc3\x28"}', "application/json", 400, NOT_PARSED),
        ("/api/alice/tasks", b'{"title": "\xc3\x28"}', "application/json", 400, NOT_PARSED),
        ("/auth/login", b'{"email": "\xc3\x28"}', "application/json", 400, NOT_PARSED),
        # JSON nested deeper than the parser goes.
        ("/api/alice/tasks", b"[" * 60_000, "application/json", 400, NOT_PARSED),
        ("/auth/login", b"[" * 60_000, "application/json", 400, NOT_PARSED),
    ],
    ids=[
        "register-text",
        "task-text",
        "login-text",
        "register-utf16-bom",
        "register-bad-utf8",
        "task-bad-utf8",
        "login-bad-utf8",
        "task-deep",
        "login-deep",
    ],
)
def test_unreadable_bodies_are_refused(
    client: TestClient, path: str, content: bytes, content_type: str, status: int, detail: str | list
) -> None:
    headers = {**bearer(sign({"sub": "alice"})), "Content-Type": content_type}
    response = client.post(path, content=content, headers=headers)
    assert response.status_code == status
    if isinstance(detail, str):
        # A 422 the code raises itself carries its detail as the readable message too.
        assert response.json() == (
            {"detail": detail, "message": detail} if status == 422 else {"detail": detail}
        )
    else:
        assert error_locs(response) == detail
    assert client.get(TASKS, headers=bearer(sign({"sub": "alice"}))).json() == []


def test_every_task_parameter_and_header_has_an_example_in_the_docs(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    missing, seen = [], 0
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []) if path.startswith("/api/") else []:
                seen += 1
                if not (parameter.get("examples") or parameter["schema"].get("examples")):
                    missing.append(f"{method.upper()} {path}: {parameter['in']} {parameter['name']}")
    assert missing == []
    assert seen > 40
    listed = {p["name"]: p for p in spec["paths"]["/api/{user_id}/tasks"]["get"]["parameters"]}
    # The first example, which "Try it out" picks, sends nothing: no alias clashes with its name.
    assert all(
        next(iter(p["examples"].values()))["value"] == "" for p in listed.values() if p["in"] == "query"
    )
    for name in ("TaskCreate", "TaskPatch"):
        assert spec["components"]["schemas"][name].get("examples"), name


def test_every_setting_is_documented_in_the_readme_and_env_example() -> None:
    readme = (ROOT / "README.md").read_text()
    table = {row.split("|")[1].strip().strip("`") for row in readme.splitlines() if row.startswith("| `")}
    example = (ROOT / ".env.example").read_text()
    named = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", example, re.MULTILINE))
    settings = {name.upper() for name in Settings.model_fields}
    assert settings - table == set(), "settings missing from the README's table"
    assert settings - named == set(), "settings missing from .env.example"
