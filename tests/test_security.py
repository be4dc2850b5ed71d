"""What a careless client, a hostile page or a setting must not get past: each a finding's test."""

import json
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from settings import Settings
from testkit import TEST_SECRET, bearer, sign

TASKS = "/api/alice/tasks"
PASSWORD = "correct horse battery"


def register(client: TestClient, email: str = "ada@example.com") -> dict[str, Any]:
    response = client.post("/auth/register", json={"email": email, "name": "Ada", "password": PASSWORD})
    assert response.status_code == 201, response.text
    return response.json()


# --- logout ------------------------------------------------------------------------------------


def test_a_logged_out_token_stays_refused_through_the_expiry_leeway(
    make_settings: Callable[..., Settings], make_client: Callable[..., TestClient]
) -> None:
    """Expired 10 s ago, the token still passes (30 s of leeway); once logged out it must not,
    not even on an instance that loads the revocations afresh after its `exp`."""
    client = make_client(make_settings())
    token = sign({"sub": "alice", "jti": "in-its-leeway"}, lifetime=-10)
    assert client.get(TASKS, headers=bearer(token)).status_code == 200
    assert client.post("/auth/logout", headers=bearer(token)).status_code == 204
    fresh = make_client(make_settings())
    response = fresh.get(TASKS, headers=bearer(token))
    assert response.status_code == 401
    assert response.json()["detail"] == "Token has been revoked"


# --- requests that say two things at once ------------------------------------------------------


def test_two_authorization_headers_are_400(client: TestClient) -> None:
    alice, bob = bearer(sign({"sub": "alice"})), bearer(sign({"sub": "bob"}))
    headers = [("Authorization", alice["Authorization"]), ("Authorization", bob["Authorization"])]
    response = client.get(TASKS, headers=headers)
    assert response.status_code == 400
    assert response.json() == {"detail": "Send one Authorization header, not several"}
    assert client.get(TASKS, headers=alice).status_code == 200


def test_a_405_allows_every_method_the_path_serves(client: TestClient) -> None:
    response = client.put(TASKS, json={})
    assert response.status_code == 405
    assert response.headers["Allow"] == "DELETE, GET, HEAD, POST"
    one = client.post(f"{TASKS}/1", json={})
    assert one.status_code == 405
    assert one.headers["Allow"] == "DELETE, GET, HEAD, PATCH, PUT"
    assert client.get("/auth/login").headers["Allow"] == "POST"


# --- bodies ----------------------------------------------------------------------------------


def full_task(i: int) -> dict[str, Any]:
    return {
        "title": f"{i:03d}" + "t" * 197,
        "description": "d" * 1000,
        "tags": [f"{j:02d}" + "g" * 48 for j in range(20)],
        "priority": "high",
        "due_date": "2026-12-31T17:00:00+01:00",
        "completed": False,
    }


def test_a_bulk_create_of_100_full_tasks_fits_the_default_body_limit(client: TestClient) -> None:
    body = [full_task(i) for i in range(100)]
    assert len(json.dumps(body)) > 200_000  # three times the old 64 KiB limit
    response = client.post(f"{TASKS}/bulk", json=body, headers=bearer(sign({"sub": "alice"})))
    assert response.status_code == 201, response.text[:300]
    assert len(response.json()) == 100


def test_a_body_over_the_default_limit_is_413_before_it_is_read_whole(client: TestClient) -> None:
    alice = bearer(sign({"sub": "alice"}))
    declared = client.post(
        TASKS, content=b"{" * (1024 * 1024 + 1), headers={**alice, "Content-Type": "application/json"}
    )
    assert declared.status_code == 413

    def chunks() -> Any:  # no Content-Length: counted as it arrives
        for _ in range(20):
            yield b" " * 65536

    streamed = client.post(TASKS, content=chunks(), headers={**alice, "Content-Type": "application/json"})
    assert streamed.status_code == 413
    assert client.get(TASKS, headers=alice).headers["X-Total-Count"] == "0"


@pytest.mark.parametrize("path", ["/auth/register", "/auth/login"])
@pytest.mark.parametrize("content_type", ["text/plain", "text/plain;charset=UTF-8", None, "application/xml"])
def test_auth_takes_only_json_and_form_bodies(
    client: TestClient, path: str, content_type: str | None
) -> None:
    """A page on any site can make its visitors' browsers POST text/plain without a preflight."""
    body = json.dumps({"email": "eve@example.com", "name": "Eve", "password": PASSWORD}).encode()
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post(path, content=body, headers=headers)
    assert response.status_code == 415, response.text
    assert "application/json" in response.json()["detail"]
    # Nothing was created: the same account registers normally afterwards.
    assert (
        client.post("/auth/register", content=body, headers={"Content-Type": "application/json"}).status_code
        == 201
    )


def test_auth_still_takes_json_forms_and_bodiless_logout(client: TestClient) -> None:
    register(client)
    form = client.post("/auth/login", data={"username": "ada@example.com", "password": PASSWORD})
    assert form.status_code == 200
    token = client.post("/auth/login", json={"email": "ada@example.com", "password": PASSWORD}).json()
    assert client.post("/auth/logout", headers=bearer(token["access_token"])).status_code == 204


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/auth/register", {"email": "not-an-email", "name": "Ada", "password": PASSWORD}),
        ("/auth/register", {"email": "ada@example.com", "password": PASSWORD}),
        ("/auth/register", [PASSWORD]),
        ("/auth/login", {"email": "ada@example.com", "password": ""}),
        ("/auth/login", {"email": "", "password": PASSWORD, "extra": PASSWORD}),
    ],
    ids=["bad email", "missing name", "not an object", "empty password", "extra field"],
)
def test_auth_validation_errors_echo_no_input(client: TestClient, path: str, body: Any) -> None:
    response = client.post(path, json=body)
    assert response.status_code == 422
    assert PASSWORD not in response.text
    assert all("input" not in error for error in response.json()["detail"])


# --- headers on every response -------------------------------------------------------------


def test_api_responses_carry_the_security_headers_and_are_not_stored(client: TestClient) -> None:
    alice = bearer(sign({"sub": "alice"}))
    task = client.post(TASKS, json={"title": "t"}, headers=alice)
    for response in (
        task,
        client.get(f"{TASKS}/{task.json()['id']}", headers=alice),
        client.get(TASKS),  # a 401
        client.post("/auth/login", json={"email": "nobody@example.com", "password": "wrong-password"}),
    ):
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert response.headers["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"
        assert response.headers["Cache-Control"] == "no-store"
        assert "Strict-Transport-Security" not in response.headers


def test_the_docs_policy_lets_the_docs_load(client: TestClient) -> None:
    for path in ("/docs", "/redoc"):
        response = client.get(path)
        policy = response.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in policy
        # Their files are served by the app (tests/test_docs.py): no CDN is named or allowed.
        assert "https:" not in policy
        assert "https://cdn.jsdelivr.net" not in response.text


def test_https_responses_carry_hsts(make_client: Callable[..., TestClient], settings: Settings) -> None:
    client = make_client(settings, base_url="https://testserver")
    response = client.get("/health")
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")


def test_production_docs_do_not_keep_the_token_in_the_browser(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
) -> None:
    development = make_client(make_settings()).get("/docs").text
    app = make_client(make_settings(environment="production", allowed_hosts=["testserver"]))
    production = app.get("/docs").text
    assert '"persistAuthorization": true' in development
    assert '"persistAuthorization": false' in production


# --- allowed hosts ------------------------------------------------------------------------------


def test_a_forged_host_is_refused_and_never_echoed(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
) -> None:
    client = make_client(make_settings(allowed_hosts=["api.example.com"]))
    alice = bearer(sign({"sub": "alice"}))
    forged = client.post("/api/alice/tasks", json={"title": "t"}, headers={**alice, "Host": "evil.example"})
    assert forged.status_code == 400
    assert "evil" not in forged.text and "Location" not in forged.headers
    assert forged.json()["detail"].startswith("The Host header names a host")
    assert client.get("/api/alice/tasks", headers={**alice, "Host": "evil.example"}).status_code == 400
    created = client.post(
        "/api/alice/tasks", json={"title": "t"}, headers={**alice, "Host": "API.example.com:8443"}
    )
    assert created.status_code == 201
    assert created.headers["Location"].lower().startswith("http://api.example.com:8443/api/alice/tasks/")
    # Nothing was stored by the refused create.
    listed = client.get("/api/alice/tasks", headers={**alice, "Host": "api.example.com"})
    assert [task["title"] for task in listed.json()] == ["t"]


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("a.example.com", True),
        ("deep.a.example.com:80", True),
        ("example.com", False),  # *.example.com names the subdomains only
        ("evilexample.com", False),
        ("api.other.org", True),
        ("api.other.org.", True),  # the fully qualified form
        ("api.other.org.evil", False),
        ("api.other.org:80:80", False),
    ],
)
def test_allowed_hosts_match_names_wildcards_and_ports(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings], host: str, allowed: bool
) -> None:
    client = make_client(make_settings(allowed_hosts=["*.example.com", "api.other.org"]))
    response = client.get("/api/alice/tasks", headers={**bearer(sign({"sub": "alice"})), "Host": host})
    assert (response.status_code == 200) is allowed, response.text


@pytest.mark.parametrize("host", ["localhost:8000", "127.0.0.1", "[::1]:8000", "LOCALHOST"])
def test_development_answers_to_the_local_names(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings], host: str
) -> None:
    client = make_client(make_settings(environment="development"))
    alice = bearer(sign({"sub": "alice"}))
    assert client.get("/api/alice/tasks", headers={**alice, "Host": host}).status_code == 200
    assert client.get("/api/alice/tasks", headers={**alice, "Host": "192.0.2.1:8000"}).status_code == 400


def test_health_probes_answer_whatever_the_host(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
) -> None:
    client = make_client(make_settings(allowed_hosts=["api.example.com"]))
    for path in ("/health", "/health/ready"):
        assert client.get(path, headers={"Host": "10.0.0.7:8000"}).status_code == 200


def test_production_needs_allowed_hosts() -> None:
    secret = TEST_SECRET
    with pytest.raises(ValidationError, match="ALLOWED_HOSTS"):
        Settings(_env_file=None, environment="production", better_auth_secret=secret)
    anything = Settings(
        _env_file=None, environment="production", better_auth_secret=secret, allowed_hosts="*"
    )
    assert anything.hosts == ["*"]


@pytest.mark.parametrize(
    "value", ["https://api.example.com", "api example.com", "*example.com", "a.*.com", "*."]
)
def test_allowed_hosts_must_be_host_names(value: str) -> None:
    with pytest.raises(ValidationError, match="not a host name"):
        Settings(_env_file=None, allowed_hosts=[value])


def test_any_host_is_answered_with_a_star(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
) -> None:
    client = make_client(make_settings(allowed_hosts="*"))
    response = client.get(
        "/api/alice/tasks", headers={**bearer(sign({"sub": "alice"})), "Host": "any.example"}
    )
    assert response.status_code == 200
