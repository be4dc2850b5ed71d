"""ETags and If-Match: a write based on a stale copy changes nothing, even when writers race."""

import os
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from testkit import base_settings, bearer, run_together, sign

TASKS = "/api/alice/tasks"
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")


def create(client: TestClient, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    response = client.post(TASKS, json={"title": "a task", **fields}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def test_every_single_task_response_carries_its_etag(client: TestClient, alice: dict) -> None:
    created = client.post(TASKS, json={"title": "t"}, headers=alice)
    task = created.json()
    assert created.headers["ETag"] == f'"{task["id"]}.1"'
    url = f"{TASKS}/{task['id']}"
    assert client.get(url, headers=alice).headers["ETag"] == f'"{task["id"]}.1"'
    assert client.patch(url, json={"title": "u"}, headers=alice).headers["ETag"] == f'"{task["id"]}.2"'
    assert client.patch(f"{url}/toggle", headers=alice).headers["ETag"] == f'"{task["id"]}.3"'


def test_get_with_a_matching_if_none_match_is_304(client: TestClient, alice: dict) -> None:
    task = create(client, alice)
    url = f"{TASKS}/{task['id']}"
    tag = client.get(url, headers=alice).headers["ETag"]
    for sent in (tag, f"W/{tag}", f'"0.9", {tag}', "*"):
        response = client.get(url, headers={**alice, "If-None-Match": sent})
        assert response.status_code == 304, sent
        assert response.content == b"" and response.headers["ETag"] == tag
    client.patch(url, json={"title": "changed"}, headers=alice)
    assert client.get(url, headers={**alice, "If-None-Match": tag}).status_code == 200


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("PUT", "", {"title": "x"}),
        ("PATCH", "", {"title": "x"}),
        ("PATCH", "/complete", None),
        ("DELETE", "", None),
    ],
    ids=["put", "patch", "complete", "delete"],
)
def test_a_stale_if_match_is_412_with_the_current_task_and_changes_nothing(
    client: TestClient, alice: dict, method: str, suffix: str, body: Any
) -> None:
    task = create(client, alice)
    url = f"{TASKS}/{task['id']}"
    stale = client.get(url, headers=alice).headers["ETag"]
    current = client.patch(url, json={"description": "moved on"}, headers=alice).json()
    response = client.request(method, f"{url}{suffix}", json=body, headers={**alice, "If-Match": stale})
    assert response.status_code == 412
    assert response.json() == current
    assert response.headers["ETag"] == f'"{task["id"]}.{current["version"]}"'
    assert client.get(url, headers=alice).json() == current


@pytest.mark.parametrize(
    ("method", "suffix", "body", "status"),
    [("PUT", "", {"title": "x"}, 200), ("PATCH", "/complete", {}, 200), ("DELETE", "", None, 204)],
    ids=["put", "complete", "delete"],
)
def test_a_current_if_match_writes(
    client: TestClient, alice: dict, method: str, suffix: str, body: Any, status: int
) -> None:
    task = create(client, alice)
    url = f"{TASKS}/{task['id']}"
    tag = client.get(url, headers=alice).headers["ETag"]
    for sent in (tag, f'"1.99", {tag}'):
        fresh = create(client, alice)
        fresh_url = f"{TASKS}/{fresh['id']}"
        fresh_tag = client.get(fresh_url, headers=alice).headers["ETag"]
        sent = sent.replace(tag, fresh_tag)
        response = client.request(
            method, f"{fresh_url}{suffix}", json=body, headers={**alice, "If-Match": sent}
        )
        assert response.status_code == status, (sent, response.text)
    response = client.request(method, f"{url}{suffix}", json=body, headers={**alice, "If-Match": "*"})
    assert response.status_code == status


@pytest.mark.parametrize("sent", ['W/"{id}.1"', '"{id}.2"', '"999999.1"', "garbage"])
def test_if_match_compares_strongly_and_by_task(client: TestClient, alice: dict, sent: str) -> None:
    task = create(client, alice)
    url = f"{TASKS}/{task['id']}"
    response = client.patch(
        url, json={"title": "x"}, headers={**alice, "If-Match": sent.format(id=task["id"])}
    )
    assert response.status_code == 412
    assert client.get(url, headers=alice).json() == task


def test_a_body_version_does_the_same_for_clients_without_headers(client: TestClient, alice: dict) -> None:
    task = create(client, alice)
    url = f"{TASKS}/{task['id']}"
    assert client.patch(url, json={"title": "first", "version": 1}, headers=alice).status_code == 200
    late = client.put(url, json={"title": "second", "version": 1}, headers=alice)
    assert late.status_code == 409
    assert late.json()["title"] == "first" and late.json()["version"] == 2
    stale_completion = client.patch(f"{url}/complete", json={"completed": True, "version": 1}, headers=alice)
    assert stale_completion.status_code == 409
    assert client.get(url, headers=alice).json()["completed"] is False


def test_if_match_on_a_missing_task_is_404(client: TestClient, alice: dict) -> None:
    response = client.patch(
        f"{TASKS}/424242", json={"title": "x"}, headers={**alice, "If-Match": '"424242.1"'}
    )
    assert response.status_code == 404


@pytest.mark.skipif(not TEST_DATABASE_URL, reason="needs the PostgreSQL leg (TEST_DATABASE_URL)")
def test_two_writers_racing_with_the_same_version_cannot_both_win(
    make_client: Callable[..., TestClient], migrated_postgres_url: str
) -> None:
    url = migrated_postgres_url
    client = make_client(base_settings(url))
    alice = bearer(sign({"sub": "alice"}))
    for round_ in range(10):
        task = create(client, alice, title=f"round {round_}")
        task_url = f"{TASKS}/{task['id']}"
        tag = client.get(task_url, headers=alice).headers["ETag"]
        headers = {**alice, "If-Match": tag}

        def write(n: int, task_url: str = task_url, headers: dict[str, str] = headers) -> tuple[int, str]:
            response = client.patch(task_url, json={"title": f"writer {n}"}, headers=headers)
            return response.status_code, response.json()["title"]

        outcomes = run_together(write, 4)
        winners = [title for status, title in outcomes if status == 200]
        assert len(winners) == 1, outcomes
        assert sorted(status for status, _ in outcomes) == [200, 412, 412, 412]
        final = client.get(task_url, headers=alice).json()
        assert final["title"] == winners[0] and final["version"] == 2
