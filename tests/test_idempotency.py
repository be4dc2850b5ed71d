"""Idempotency-Key on POST /tasks: a retried create answers as the first time and creates nothing."""

import os
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from db import make_engine
from testkit import base_settings, bearer, run_together, sign

TASKS = "/api/alice/tasks"
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")


def post(client: TestClient, headers: dict[str, str], key: str | None, **body: Any) -> Any:
    extra = {"Idempotency-Key": key} if key is not None else {}
    return client.post(TASKS, json={"title": "milk", **body}, headers={**headers, **extra})


def count(client: TestClient, headers: dict[str, str]) -> int:
    return int(client.get(TASKS, headers=headers).headers["X-Total-Count"])


def test_a_retry_with_the_same_key_answers_the_first_response(client: TestClient, alice: dict) -> None:
    first = post(client, alice, "key-1")
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    client.patch(f"{TASKS}/{first.json()['id']}", json={"title": "changed since"}, headers=alice)
    again = post(client, alice, "key-1")
    assert again.status_code == 201
    assert again.content == first.content  # the first response, not the task as it is now
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert count(client, alice) == 1


def test_the_same_key_with_another_body_is_422(client: TestClient, alice: dict) -> None:
    post(client, alice, "key-1")
    response = post(client, alice, "key-1", title="eggs")
    assert response.status_code == 422
    assert "another request" in response.json()["detail"]
    assert count(client, alice) == 1


def test_keys_are_per_user_and_other_keys_create(client: TestClient, alice: dict, bob: dict) -> None:
    post(client, alice, "shared")
    post(client, alice, "other")
    bobs = client.post("/api/bob/tasks", json={"title": "milk"}, headers={**bob, "Idempotency-Key": "shared"})
    assert bobs.status_code == 201 and bobs.json()["user_id"] == "bob"
    assert count(client, alice) == 2


@pytest.mark.parametrize("key", ["", "k" * 256])
def test_a_key_must_be_1_to_255_characters(client: TestClient, alice: dict, key: str) -> None:
    response = post(client, alice, key)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["header", "idempotency-key"]
    assert count(client, alice) == 0


def test_keys_survive_a_restart_and_expired_ones_are_purged(
    make_settings: Callable[..., Any], make_client: Callable[..., TestClient]
) -> None:
    settings = make_settings()
    alice = bearer(sign({"sub": "alice"}))
    first = make_client(settings)
    created = post(first, alice, "key-1")
    first.__exit__(None, None, None)
    restarted = make_client(settings)
    assert post(restarted, alice, "key-1").content == created.content
    engine = make_engine(settings)
    with engine.connect() as connection:  # a day later
        connection.execute(text("UPDATE idempotency_key SET expires_at = '2000-01-01 00:00:00'"))
    fresh = post(restarted, alice, "key-2")
    with engine.connect() as connection:
        keys = connection.execute(text("SELECT key FROM idempotency_key")).scalars().all()
    engine.dispose()
    assert keys == ["key-2"]  # key-1 expired and was purged
    assert post(restarted, alice, "key-1").json()["id"] not in (created.json()["id"], fresh.json()["id"])


def test_without_a_key_every_post_creates(client: TestClient, alice: dict) -> None:
    post(client, alice, None)
    post(client, alice, None)
    assert count(client, alice) == 2


@pytest.mark.skipif(not TEST_DATABASE_URL, reason="needs the PostgreSQL leg (TEST_DATABASE_URL)")
def test_identical_requests_racing_create_one_task(
    make_client: Callable[..., TestClient], migrated_postgres_url: str
) -> None:
    url = migrated_postgres_url
    client = make_client(base_settings(url))
    alice = bearer(sign({"sub": "alice"}))
    for round_ in range(5):

        def send(_: int, key: str = f"race-{round_}") -> tuple[int, bytes]:
            response = post(client, alice, key)
            return response.status_code, response.content

        answers = run_together(send, 4)
        assert len(answers) == 4 and len(set(answers)) == 1, answers
        assert answers[0][0] == 201
    assert count(client, alice) == 5
