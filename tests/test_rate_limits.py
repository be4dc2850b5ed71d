"""Rate limits: per user, per address without a token, per address on login and register;
in memory or shared through Redis; failing open when Redis is gone."""

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from settings import Settings
from testkit import bearer, services_of, sign


def limits_of(response: Any) -> tuple[int, int]:
    return int(response.headers["RateLimit-Limit"]), int(response.headers["RateLimit-Remaining"])


def test_each_user_has_a_limit_of_their_own(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
) -> None:
    client = make_client(make_settings(rate_limit_per_user="3/day"))
    alice, bob = bearer(sign({"sub": "alice"})), bearer(sign({"sub": "bob"}))
    seen = [limits_of(client.get("/api/alice/tasks", headers=alice)) for _ in range(3)]
    assert seen == [(3, 2), (3, 1), (3, 0)]
    refused = client.get("/api/alice/tasks", headers=alice)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 86400  # until the day's window has room
    assert limits_of(refused) == (3, 0)
    assert "Retry-After" in refused.json()["detail"]
    assert client.get("/api/bob/tasks", headers=bob).status_code == 200
    # Every route with a token counts against its user, /auth/me included.
    assert client.get("/auth/me", headers=alice).status_code == 429


def test_requests_without_a_valid_token_are_limited_by_address(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
) -> None:
    client = make_client(make_settings(rate_limit_unauthenticated_per_address="2/day"))
    forged = bearer(sign({"sub": "alice"}, secret="not the secret" * 4))
    assert [client.get("/api/alice/tasks").status_code for _ in range(2)] == [401, 401]
    assert client.get("/api/alice/tasks", headers=forged).status_code == 429
    # A valid token is counted against its user, not the address.
    assert client.get("/api/alice/tasks", headers=bearer(sign({"sub": "alice"}))).status_code == 200


def test_login_and_register_are_limited_by_address(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
) -> None:
    client = make_client(make_settings(rate_limit_auth_per_address="2/day"))
    body = {"email": "ada@example.com", "name": "Ada", "password": "correct horse battery"}
    assert client.post("/auth/register", json=body).status_code == 201
    assert client.post("/auth/login", json=body | {"name": None}).status_code == 422
    refused = client.post("/auth/login", json={"email": body["email"], "password": body["password"]})
    assert refused.status_code == 429
    assert client.post("/auth/register", json=body | {"email": "bo@example.com"}).status_code == 429


def test_ipv6_clients_are_counted_by_their_64(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
) -> None:
    app = make_client(make_settings(rate_limit_unauthenticated_per_address="2/day")).app
    first = TestClient(app, client=("2001:db8:1:2::1", 50000))  # one app: one set of counters
    neighbour = TestClient(app, client=("2001:db8:1:2:ffff::9", 50000))
    elsewhere = TestClient(app, client=("2001:db8:1:3::1", 50000))
    assert first.get("/api/alice/tasks").status_code == 401
    assert first.get("/api/alice/tasks").status_code == 401
    assert neighbour.get("/api/alice/tasks").status_code == 429
    assert elsewhere.get("/api/alice/tasks").status_code == 401


def test_the_rate_limit_headers_are_readable_cross_origin(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
) -> None:
    client = make_client(make_settings())
    response = client.get(
        "/api/alice/tasks", headers={**bearer(sign({"sub": "alice"})), "Origin": "http://localhost:3000"}
    )
    exposed = {name.strip().lower() for name in response.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "retry-after"} <= exposed


def test_a_limit_holds_across_two_instances_sharing_redis(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings], redis_url: str
) -> None:
    settings = make_settings(rate_limit_storage_uri=redis_url, rate_limit_per_user="4/day")
    one, two = make_client(settings), make_client(settings)
    user = f"u{uuid.uuid4().hex[:8]}"
    token = bearer(sign({"sub": user}))
    statuses = [
        client.get(f"/api/{user}/tasks", headers=token).status_code for client in (one, two, one, two)
    ]
    assert statuses == [200] * 4
    assert one.get(f"/api/{user}/tasks", headers=token).status_code == 429
    assert two.get(f"/api/{user}/tasks", headers=token).status_code == 429


def test_login_limits_hold_across_two_instances_sharing_redis(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings], redis_url: str
) -> None:
    settings = make_settings(rate_limit_storage_uri=redis_url, rate_limit_auth_per_address="2/day")
    one, two = make_client(settings), make_client(settings)
    wrong = {"email": "nobody@example.com", "password": "wrong password"}
    assert one.post("/auth/login", json=wrong).status_code == 401
    assert two.post("/auth/login", json=wrong).status_code == 401
    assert one.post("/auth/login", json=wrong).status_code == 429


def test_an_unreachable_redis_fails_open(
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(
        rate_limit_storage_uri="redis://127.0.0.1:1/0",
        rate_limit_per_user="1/day",
        rate_limit_storage_timeout_seconds=0.2,
    )
    client = make_client(settings)
    alice = bearer(sign({"sub": "alice"}))
    with caplog.at_level(logging.WARNING, logger="todo.ratelimit"):
        statuses = [client.get("/api/alice/tasks", headers=alice).status_code for _ in range(5)]
    assert statuses == [200] * 5  # served, and not limited: the counter is unreachable
    assert caplog.text.count("rate limit storage unreachable") == 1  # said once, not per request
    assert "RateLimit-Limit" not in client.get("/api/alice/tasks", headers=alice).headers


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("rate_limit_per_user", "lots"),
        ("rate_limit_storage_uri", "memcached://x"),
        ("rate_limit_storage_uri", "redis://no-port/0"),
        ("rate_limit_auth_per_address", ""),
    ],
)
def test_bad_rate_limit_settings_are_refused(name: str, value: str) -> None:
    with pytest.raises(ValidationError, match=name):
        values: dict[str, Any] = {name: value}
        Settings(_env_file=None, **values)


def test_a_logout_reaches_the_other_instance_at_once_through_redis(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings], redis_url: str
) -> None:
    # Reloads from the database every 5 s (the most allowed): a refusal within a second is Redis.
    settings = make_settings(rate_limit_storage_uri=redis_url, revocation_refresh_seconds=5)
    one, two = make_client(settings), make_client(settings)
    for client in (one, two):
        feed = services_of(client).revocation_feed
        assert feed is not None
        assert client.portal is not None
        assert client.portal.call(wait_for, feed.listening)
    body = {"email": "ada@example.com", "name": "Ada", "password": "correct horse battery"}
    assert one.post("/auth/register", json=body).status_code == 201
    token = one.post("/auth/login", json={"email": body["email"], "password": body["password"]}).json()
    headers = bearer(token["access_token"])
    assert two.get("/auth/me", headers=headers).status_code == 200  # two has loaded its revocations
    assert one.post("/auth/logout", headers=headers).status_code == 204
    deadline = time.monotonic() + 1.0
    while (status := two.get("/auth/me", headers=headers).status_code) == 200 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert status == 401
    assert two.get("/auth/me", headers=headers).json()["detail"] == "Token has been revoked"


async def wait_for(event: asyncio.Event) -> bool:
    with anyio.move_on_after(5):
        await event.wait()
    return event.is_set()
