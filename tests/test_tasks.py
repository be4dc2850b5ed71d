"""The task API through HTTP: create, read, list, replace, patch, complete, delete."""

import re
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

TASKS = "/api/alice/tasks"


def create(client: TestClient, headers: dict[str, str], user: str = "alice", **fields: object) -> dict:
    response = client.post(f"/api/{user}/tasks", json={"title": "a task", **fields}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def error_locs(response: Any) -> list[list[str | int]]:
    """The `loc` of each validation error in a 422, in order."""
    assert response.status_code == 422, response.text
    return [error["loc"] for error in response.json()["detail"]]


def parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() is not None, f"{value} has no offset"
    return parsed


# --- create -----------------------------------------------------------------------------------


def test_create_returns_201_with_the_task_and_location(client: TestClient, alice: dict) -> None:
    response = client.post(TASKS, json={"title": "Buy milk", "description": "2 litres"}, headers=alice)
    assert response.status_code == 201
    task = response.json()
    assert task["title"] == "Buy milk"
    assert task["description"] == "2 litres"
    assert task["completed"] is False
    assert task["completed_at"] is None
    assert task["user_id"] == "alice"
    assert isinstance(task["id"], int)
    assert response.headers["Location"].endswith(f"/api/alice/tasks/{task['id']}")
    assert client.get(response.headers["Location"], headers=alice).json() == task


def test_created_timestamps_are_utc_with_offset(client: TestClient, alice: dict) -> None:
    task = create(client, alice)
    created = parse_time(task["created_at"])
    assert created.utcoffset() == timedelta(0)
    assert parse_time(task["updated_at"]) == created


def test_create_trims_the_title(client: TestClient, alice: dict) -> None:
    assert create(client, alice, title="  Walk the dog \n")["title"] == "Walk the dog"


def test_create_completed_sets_completed_at(client: TestClient, alice: dict) -> None:
    task = create(client, alice, completed=True)
    assert task["completed"] is True
    assert parse_time(task["completed_at"]) == parse_time(task["created_at"])


def test_create_ignores_read_only_fields(client: TestClient, alice: dict) -> None:
    sent = {
        "title": "echoed back",
        "id": 999_999,
        "user_id": "mallory",
        "created_at": "2000-01-01T00:00:00Z",
        "updated_at": "2000-01-01T00:00:00Z",
        "completed_at": "2000-01-01T00:00:00Z",
    }
    task = client.post(TASKS, json=sent, headers=alice).json()
    assert task["id"] != 999_999
    assert task["user_id"] == "alice"
    assert not task["created_at"].startswith("2000")
    assert task["completed_at"] is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "title"),
        ({"title": ""}, "title"),
        ({"title": "   "}, "title"),
        ({"title": "x" * 201}, "title"),
        ({"title": 42}, "title"),
        ({"title": None}, "title"),
        ({"title": ["a"]}, "title"),
        ({"title": "ok", "description": "x" * 1001}, "description"),
        ({"title": "ok", "completed": "maybe"}, "completed"),
        ({"title": "ok", "completed": "yes"}, "completed"),
        ({"title": "ok", "completed": 1}, "completed"),
        ({"title": "\u200b\u200d "}, "title"),
        ({"title": "\u00ad\u2060"}, "title"),
        ({"title": "ok", "status": "in_progress"}, "status"),
        ({"title": "ok", "status": 1}, "status"),
        ({"title": "nul \u0000 inside"}, "title"),
        ({"title": "ok", "description": "nul \u0000 inside"}, "description"),
    ],
    ids=[
        "missing-title",
        "empty-title",
        "blank-title",
        "long-title",
        "number-title",
        "null-title",
        "list-title",
        "long-description",
        "non-bool-completed",
        "yes-completed",
        "one-completed",
        "zero-width-title",
        "format-characters-title",
        "unknown-status",
        "number-status",
        "nul-in-title",
        "nul-in-description",
    ],
)
def test_invalid_create_is_422_and_stores_nothing(
    client: TestClient, alice: dict, body: dict, field: str
) -> None:
    response = client.post(TASKS, json=body, headers=alice)
    assert error_locs(response) == [["body", field]]
    assert client.get(TASKS, headers=alice).json() == []


def test_lone_surrogate_is_422(client: TestClient, alice: dict) -> None:
    headers = {**alice, "Content-Type": "application/json"}
    response = client.post(TASKS, content=b'{"title": "bad \\ud800 text"}', headers=headers)
    assert error_locs(response) == [["body", "title"]]
    assert client.get(TASKS, headers=alice).json() == []


def test_malformed_json_is_422(client: TestClient, alice: dict) -> None:
    headers = {**alice, "Content-Type": "application/json"}
    response = client.post(TASKS, content=b'{"title": ', headers=headers)
    assert error_locs(response) == [["body", 10]]  # the offset where the JSON breaks off
    assert response.json()["detail"][0]["type"] == "json_invalid"


def test_title_at_the_limits_is_accepted(client: TestClient, alice: dict) -> None:
    assert create(client, alice, title="x")["title"] == "x"
    assert create(client, alice, title="é" * 200, description="d" * 1000)["title"] == "é" * 200


def test_unicode_text_round_trips(client: TestClient, alice: dict) -> None:
    task = create(client, alice, title="Ünïcødé ✓ 🚀 中文", description="line1\nline2\ttab")
    again = client.get(f"{TASKS}/{task['id']}", headers=alice).json()
    assert again["title"] == "Ünïcødé ✓ 🚀 中文"
    assert again["description"] == "line1\nline2\ttab"


# --- read -------------------------------------------------------------------------------------


def test_get_one_task(client: TestClient, alice: dict) -> None:
    task = create(client, alice, title="read me")
    response = client.get(f"{TASKS}/{task['id']}", headers=alice)
    assert response.status_code == 200
    assert response.json() == task


def test_missing_task_is_404(client: TestClient, alice: dict) -> None:
    response = client.get(f"{TASKS}/123456", headers=alice)
    assert response.status_code == 404
    assert response.json() == {"detail": "Task not found"}


@pytest.mark.parametrize("task_id", ["abc", "1.5", "0", "-3", str(2**64)])
def test_bad_task_id_is_422(client: TestClient, alice: dict, task_id: str) -> None:
    assert error_locs(client.get(f"{TASKS}/{task_id}", headers=alice)) == [["path", "task_id"]]


def test_largest_task_id_is_a_plain_404(client: TestClient, alice: dict) -> None:
    assert client.get(f"{TASKS}/{2**63 - 1}", headers=alice).status_code == 404


# --- list -------------------------------------------------------------------------------------


def test_list_is_newest_first_by_default(client: TestClient, alice: dict) -> None:
    ids = [create(client, alice, title=f"t{i}")["id"] for i in range(3)]
    response = client.get(TASKS, headers=alice)
    assert response.status_code == 200
    assert [t["id"] for t in response.json()] == ids[::-1]
    assert response.headers["X-Total-Count"] == "3"
    assert "Link" not in response.headers


def test_empty_list(client: TestClient, alice: dict) -> None:
    response = client.get(TASKS, headers=alice)
    assert response.json() == []
    assert response.headers["X-Total-Count"] == "0"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=all", {"open", "done"}),
        ("status=pending", {"open"}),
        ("status=completed", {"done"}),
        ("completed=true", {"done"}),
        ("completed=false", {"open"}),
        ("status=completed&completed=true", {"done"}),
    ],
)
def test_status_filters(client: TestClient, alice: dict, query: str, expected: set[str]) -> None:
    create(client, alice, title="open")
    create(client, alice, title="done", completed=True)
    response = client.get(f"{TASKS}?{query}", headers=alice)
    assert {t["title"] for t in response.json()} == expected
    assert response.headers["X-Total-Count"] == str(len(expected))


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("status=in_progress", "status"),
        ("completed=perhaps", "completed"),
        ("sort=colour", "sort"),
        ("sort=id", "sort"),
        ("order=up", "order"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=x", "limit"),
        ("offset=-1", "offset"),
        (f"offset={2**40}", "offset"),
    ],
)
def test_bad_list_query_is_422(client: TestClient, alice: dict, query: str, param: str) -> None:
    response = client.get(f"{TASKS}?{query}", headers=alice)
    assert error_locs(response) == [["query", param]]


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ("status=pending&completed=true", "status and completed filters contradict each other"),
        ("status=completed&completed=false", "status and completed filters contradict each other"),
        ("sort=-title&order=asc", "sort '-title' and order=asc contradict each other"),
        ("sort=%2Btitle&order=desc", "sort '+title' and order=desc contradict each other"),
    ],
)
def test_contradicting_list_query_is_422(client: TestClient, alice: dict, query: str, detail: str) -> None:
    response = client.get(f"{TASKS}?{query}", headers=alice)
    assert response.status_code == 422
    assert response.json() == {"detail": detail, "message": detail}


@pytest.mark.parametrize(
    ("query", "titles"),
    [
        ("sort=title", ["apple", "banana", "cherry"]),
        ("sort=title&order=asc", ["apple", "banana", "cherry"]),
        ("sort=title&order=desc", ["cherry", "banana", "apple"]),
        ("sort=-title", ["cherry", "banana", "apple"]),
        ("sort=created_at", ["banana", "cherry", "apple"]),
        ("sort=created", ["banana", "cherry", "apple"]),
        ("sort=%2Bcreated_at", ["banana", "cherry", "apple"]),
        ("sort=-created_at", ["apple", "cherry", "banana"]),
        ("sort=created_at&order=desc", ["apple", "cherry", "banana"]),
        ("order=asc", ["banana", "cherry", "apple"]),
        ("", ["apple", "cherry", "banana"]),
    ],
)
def test_sorting(client: TestClient, alice: dict, query: str, titles: list[str]) -> None:
    for title in ("banana", "cherry", "apple"):
        create(client, alice, title=title)
    assert [t["title"] for t in client.get(f"{TASKS}?{query}", headers=alice).json()] == titles


def test_sort_by_updated(client: TestClient, alice: dict) -> None:
    first, second = create(client, alice, title="first"), create(client, alice, title="second")
    client.patch(f"{TASKS}/{first['id']}", json={"description": "touched"}, headers=alice)
    for query in ("sort=-updated_at", "sort=updated&order=desc"):
        titles = [t["title"] for t in client.get(f"{TASKS}?{query}", headers=alice).json()]
        assert titles == ["first", "second"]
    assert [t["id"] for t in client.get(f"{TASKS}?sort=updated_at", headers=alice).json()] == [
        second["id"],
        first["id"],
    ]


def test_ties_are_broken_by_id(client: TestClient, alice: dict) -> None:
    ids = [create(client, alice, title="same")["id"] for _ in range(4)]
    assert [t["id"] for t in client.get(f"{TASKS}?sort=title", headers=alice).json()] == ids
    assert [t["id"] for t in client.get(f"{TASKS}?sort=-title", headers=alice).json()] == ids[::-1]


def test_pagination_walks_every_task_once(client: TestClient, alice: dict) -> None:
    ids = [create(client, alice, title=f"t{i:02}")["id"] for i in range(7)]
    seen: list[int] = []
    url: str | None = f"{TASKS}?limit=3"
    pages = 0
    while url:
        response = client.get(url, headers=alice)
        assert response.headers["X-Total-Count"] == "7"
        seen += [t["id"] for t in response.json()]
        url = response.links.get("next", {}).get("url")
        pages += 1
    assert pages == 3
    assert seen == ids[::-1]


def test_link_header_has_prev_and_next(client: TestClient, alice: dict) -> None:
    for i in range(5):
        create(client, alice, title=f"t{i}")
    response = client.get(f"{TASKS}?limit=2&offset=2&status=all", headers=alice)
    links = response.links
    assert "offset=4" in links["next"]["url"] and "limit=2" in links["next"]["url"]
    assert "offset=0" in links["prev"]["url"]
    assert "status=all" in links["next"]["url"]
    assert "offset=4" in links["last"]["url"]
    first_page = client.get(f"{TASKS}?limit=2", headers=alice)
    assert "prev" not in first_page.links and "next" in first_page.links
    last_page = client.get(f"{TASKS}?limit=2&offset=4", headers=alice)
    assert "next" not in last_page.links and "prev" in last_page.links


def test_offset_past_the_end_still_counts(client: TestClient, alice: dict) -> None:
    for i in range(3):
        create(client, alice, title=f"t{i}")
    response = client.get(f"{TASKS}?offset=10", headers=alice)
    assert response.json() == []
    assert response.headers["X-Total-Count"] == "3"
    assert "next" not in response.links


def test_limit_defaults_to_100_and_caps_at_500(client: TestClient, alice: dict) -> None:
    for i in range(101):
        create(client, alice, title=f"t{i}")
    assert len(client.get(TASKS, headers=alice).json()) == 100
    assert len(client.get(f"{TASKS}?limit=500", headers=alice).json()) == 101
    assert error_locs(client.get(f"{TASKS}?limit=501", headers=alice)) == [["query", "limit"]]


# --- replace (PUT) and patch ----------------------------------------------------------------------


def test_put_changes_only_the_fields_sent_like_patch(client: TestClient, alice: dict) -> None:
    """An edit form that sends title and description must not un-complete the task."""
    task = create(client, alice, title="old", description="old text", completed=True)
    response = client.put(f"{TASKS}/{task['id']}", json={"title": "new"}, headers=alice)
    assert response.status_code == 200
    edited = response.json()
    assert edited["title"] == "new"
    assert edited["description"] == "old text"
    assert edited["completed"] is True
    assert edited["completed_at"] == task["completed_at"]
    assert edited["created_at"] == task["created_at"]
    assert parse_time(edited["updated_at"]) > parse_time(task["updated_at"])


def test_put_with_only_a_status_completes_the_task(client: TestClient, alice: dict) -> None:
    task = create(client, alice, title="keep me", description="and me")
    done = client.put(f"{TASKS}/{task['id']}", json={"status": "done"}, headers=alice).json()
    assert (done["title"], done["description"], done["completed"], done["status"]) == (
        "keep me",
        "and me",
        True,
        "completed",
    )
    assert done["completed_at"] is not None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": ""}, "title"),
        ({"title": None}, "title"),
        ({"title": "x" * 201}, "title"),
        ({"completed": None}, "completed"),
    ],
)
def test_put_validates_the_fields_it_sends(client: TestClient, alice: dict, body: dict, field: str) -> None:
    task = create(client, alice, title="keep")
    response = client.put(f"{TASKS}/{task['id']}", json=body, headers=alice)
    assert error_locs(response) == [["body", field]]
    assert client.get(f"{TASKS}/{task['id']}", headers=alice).json() == task


def test_put_null_clears_the_description(client: TestClient, alice: dict) -> None:
    task = create(client, alice, description="something")
    assert (
        client.put(f"{TASKS}/{task['id']}", json={"description": None}, headers=alice).json()["description"]
        is None
    )


def test_put_accepts_the_object_it_returned(client: TestClient, alice: dict) -> None:
    task = create(client, alice, title="round trip")
    edited = {**task, "title": "edited", "completed": True, "status": "completed"}
    response = client.put(f"{TASKS}/{task['id']}", json=edited, headers=alice)
    assert response.status_code == 200
    assert response.json()["title"] == "edited"
    assert response.json()["completed_at"] is not None
    assert response.json()["id"] == task["id"] and response.json()["user_id"] == "alice"


def test_unknown_fields_are_ignored_not_stored_nor_echoed(client: TestClient, alice: dict) -> None:
    """What frontends send that the API does not know (yet): accepted, and dropped."""
    body = {"title": "from a form", "project": "home", "assignee": 7, "colour": "red", "id": 999_999}
    response = client.post(TASKS, json=body, headers=alice)
    assert response.status_code == 201
    task = response.json()
    assert not {"project", "assignee", "colour"} & set(task)
    assert task["id"] != 999_999
    patched = client.patch(f"{TASKS}/{task['id']}", json={"colour": "blue"}, headers=alice)
    assert patched.json() == client.get(f"{TASKS}/{task['id']}", headers=alice).json()
    assert "colour" not in patched.json()


@pytest.mark.parametrize(
    ("word", "completed"),
    [
        ("pending", False),
        ("todo", False),
        ("completed", True),
        ("complete", True),
        ("done", True),
        ("Done", True),
    ],
)
def test_status_may_stand_for_completed(client: TestClient, alice: dict, word: str, completed: bool) -> None:
    task = create(client, alice, status=word)
    assert task["completed"] is completed
    assert task["status"] == ("completed" if completed else "pending")


@pytest.mark.parametrize("method", ["post", "put", "patch"])
def test_a_status_that_contradicts_completed_is_422(client: TestClient, alice: dict, method: str) -> None:
    task = create(client, alice)
    url = TASKS if method == "post" else f"{TASKS}/{task['id']}"
    body = {"title": "t", "status": "done", "completed": False}
    response = client.request(method, url, json=body, headers=alice)
    assert error_locs(response) == [["body"]]
    assert response.json()["detail"][0]["msg"] == "status 'done' contradicts completed=false"
    assert client.get(TASKS, headers=alice).json() == [task]


def test_patch_changes_only_the_fields_sent(client: TestClient, alice: dict) -> None:
    task = create(client, alice, title="title", description="description")
    response = client.patch(f"{TASKS}/{task['id']}", json={"description": "changed"}, headers=alice)
    assert response.status_code == 200
    patched = response.json()
    assert patched["title"] == "title"
    assert patched["description"] == "changed"
    assert patched["completed"] is False
    assert parse_time(patched["updated_at"]) > parse_time(task["updated_at"])


def test_patch_can_clear_the_description(client: TestClient, alice: dict) -> None:
    task = create(client, alice, description="something")
    patched = client.patch(f"{TASKS}/{task['id']}", json={"description": None}, headers=alice).json()
    assert patched["description"] is None


def test_patch_completed_sets_and_clears_completed_at(client: TestClient, alice: dict) -> None:
    task = create(client, alice)
    done = client.patch(f"{TASKS}/{task['id']}", json={"completed": True}, headers=alice).json()
    assert done["completed"] is True and done["completed_at"] is not None
    again = client.patch(f"{TASKS}/{task['id']}", json={"completed": True}, headers=alice).json()
    assert again["completed_at"] == done["completed_at"]
    undone = client.patch(f"{TASKS}/{task['id']}", json={"completed": False}, headers=alice).json()
    assert undone["completed"] is False and undone["completed_at"] is None


def test_empty_patch_changes_nothing(client: TestClient, alice: dict) -> None:
    task = create(client, alice)
    response = client.patch(f"{TASKS}/{task['id']}", json={}, headers=alice)
    assert response.status_code == 200
    assert response.json() == task


@pytest.mark.parametrize(
    ("body", "loc", "message"),
    [
        ({"title": None}, ["body", "title"], "may be left out, but not null"),
        ({"title": " "}, ["body", "title"], "at least 1 character"),
        ({"completed": None}, ["body", "completed"], "may be left out, but not null"),
        ({"description": 5}, ["body", "description"], "valid string"),
    ],
)
def test_invalid_patch_is_422_and_changes_nothing(
    client: TestClient, alice: dict, body: dict, loc: list[str], message: str
) -> None:
    task = create(client, alice)
    response = client.patch(f"{TASKS}/{task['id']}", json=body, headers=alice)
    assert error_locs(response) == [loc]
    assert message in response.json()["detail"][0]["msg"]
    assert client.get(f"{TASKS}/{task['id']}", headers=alice).json() == task


@pytest.mark.parametrize("method", ["put", "patch"])
def test_updating_a_missing_task_is_404(client: TestClient, alice: dict, method: str) -> None:
    response = client.request(method, f"{TASKS}/424242", json={"title": "x"}, headers=alice)
    assert response.status_code == 404


# --- complete / toggle --------------------------------------------------------------------------


@pytest.mark.parametrize("body", [None, {}, {"unknown": 1}], ids=["no-body", "empty-object", "only-unknown"])
@pytest.mark.parametrize("action", ["complete", "toggle"])
def test_no_body_flips_completed(client: TestClient, alice: dict, action: str, body: dict | None) -> None:
    task = create(client, alice)
    url = f"{TASKS}/{task['id']}/{action}"
    done = client.patch(url, json=body, headers=alice)
    assert done.status_code == 200
    assert done.json()["completed"] is True
    assert done.json()["completed_at"] is not None
    undone = client.patch(url, json=body, headers=alice).json()
    assert undone["completed"] is False
    assert undone["completed_at"] is None


@pytest.mark.parametrize("action", ["complete", "toggle"])
def test_body_sets_completed_so_retries_are_safe(client: TestClient, alice: dict, action: str) -> None:
    task = create(client, alice)
    url = f"{TASKS}/{task['id']}/{action}"
    first = client.patch(url, json={"completed": True}, headers=alice).json()
    retried = client.patch(url, json={"completed": True}, headers=alice).json()
    assert first["completed"] is retried["completed"] is True
    assert retried["completed_at"] == first["completed_at"]
    cleared = client.patch(url, json={"completed": False}, headers=alice).json()
    assert cleared["completed"] is False and cleared["completed_at"] is None
    assert client.patch(url, json={"completed": False}, headers=alice).json()["completed"] is False


@pytest.mark.parametrize(
    ("body", "locs"),
    [
        ({"completed": "soon"}, [["body", "completed"]]),
        ({"completed": None}, [["body", "completed"]]),
        ({"status": "later"}, [["body", "status"]]),
    ],
)
def test_bad_completion_body_is_422(client: TestClient, alice: dict, body: dict, locs: list) -> None:
    task = create(client, alice)
    response = client.patch(f"{TASKS}/{task['id']}/complete", json=body, headers=alice)
    assert error_locs(response) == locs
    assert client.get(f"{TASKS}/{task['id']}", headers=alice).json()["completed"] is False


def test_toggling_a_missing_task_is_404(client: TestClient, alice: dict) -> None:
    assert client.patch(f"{TASKS}/99999/toggle", headers=alice).status_code == 404


# --- delete -----------------------------------------------------------------------------------


def test_delete_is_204_then_404(client: TestClient, alice: dict) -> None:
    task = create(client, alice)
    response = client.delete(f"{TASKS}/{task['id']}", headers=alice)
    assert response.status_code == 204
    assert response.content == b""
    assert "content-type" not in response.headers
    assert client.get(f"{TASKS}/{task['id']}", headers=alice).status_code == 404
    assert client.delete(f"{TASKS}/{task['id']}", headers=alice).status_code == 404


def test_delete_leaves_other_tasks(client: TestClient, alice: dict) -> None:
    keep, drop = create(client, alice, title="keep"), create(client, alice, title="drop")
    client.delete(f"{TASKS}/{drop['id']}", headers=alice)
    assert [t["id"] for t in client.get(TASKS, headers=alice).json()] == [keep["id"]]


# --- isolation between users ------------------------------------------------------------------


def test_users_see_only_their_own_tasks(client: TestClient, alice: dict, bob: dict) -> None:
    create(client, alice, title="alice's")
    create(client, bob, user="bob", title="bob's")
    assert [t["title"] for t in client.get("/api/alice/tasks", headers=alice).json()] == ["alice's"]
    assert [t["title"] for t in client.get("/api/bob/tasks", headers=bob).json()] == ["bob's"]
    assert client.get("/api/bob/tasks", headers=bob).headers["X-Total-Count"] == "1"


@pytest.mark.parametrize(("owner", "intruder"), [("alice", "bob"), ("bob", "alice")])
def test_another_users_task_is_404_for_every_route(
    client: TestClient, auth, owner: str, intruder: str
) -> None:
    task = create(client, auth(owner), user=owner, title="private")
    base = f"/api/{intruder}/tasks/{task['id']}"
    headers = auth(intruder)
    assert client.get(base, headers=headers).status_code == 404
    assert client.put(base, json={"title": "stolen"}, headers=headers).status_code == 404
    assert client.patch(base, json={"title": "stolen"}, headers=headers).status_code == 404
    assert client.patch(f"{base}/complete", headers=headers).status_code == 404
    assert client.patch(f"{base}/toggle", json={"completed": True}, headers=headers).status_code == 404
    assert client.delete(base, headers=headers).status_code == 404
    assert client.get(f"/api/{owner}/tasks/{task['id']}", headers=auth(owner)).json() == task


@pytest.mark.parametrize(("owner", "intruder"), [("alice", "bob"), ("bob", "alice")])
def test_another_users_path_is_403(client: TestClient, auth, owner: str, intruder: str) -> None:
    task = create(client, auth(owner), user=owner)
    headers = auth(intruder)
    for method, url in [
        ("GET", f"/api/{owner}/tasks"),
        ("POST", f"/api/{owner}/tasks"),
        ("GET", f"/api/{owner}/tasks/{task['id']}"),
        ("PUT", f"/api/{owner}/tasks/{task['id']}"),
        ("PATCH", f"/api/{owner}/tasks/{task['id']}"),
        ("PATCH", f"/api/{owner}/tasks/{task['id']}/toggle"),
        ("DELETE", f"/api/{owner}/tasks/{task['id']}"),
    ]:
        response = client.request(method, url, json={"title": "x"}, headers=headers)
        assert response.status_code == 403, (method, url)
        assert response.json() == {"detail": "You may only reach your own tasks"}
    assert client.get(f"/api/{owner}/tasks/{task['id']}", headers=auth(owner)).json() == task


def test_user_ids_are_compared_exactly(client: TestClient, auth) -> None:
    create(client, auth("Alice"), user="Alice")
    assert client.get("/api/alice/tasks", headers=auth("Alice")).status_code == 403
    assert client.get("/api/alice/tasks", headers=auth("alice")).json() == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"title": "x" * 201}, "title: String should have at most 200 characters"),
        ({}, "title: Field required"),
        (
            {"title": "", "completed": "yes"},
            "title: String should have at least 1 character; completed: Input should be a valid boolean",
        ),
        ({"title": "t", "status": "done", "completed": False}, "status 'done' contradicts completed=false"),
    ],
)
def test_a_422_carries_one_readable_line(client: TestClient, alice: dict, body: dict, message: str) -> None:
    response = client.post(TASKS, json=body, headers=alice)
    assert response.status_code == 422
    assert response.json()["message"] == message
    assert isinstance(response.json()["detail"], list)


def test_a_query_422_names_the_parameter_in_its_message(client: TestClient, alice: dict) -> None:
    response = client.get(f"{TASKS}?limit=501", headers=alice)
    assert response.json()["message"] == "limit: Input should be less than or equal to 500"


# --- what other clients send to a list ---------------------------------------------------------


def titles(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [task["title"] for task in response.json()]


@pytest.mark.parametrize("word", ["complete", "done", "Completed"])
def test_status_filter_accepts_the_other_words_for_completed(
    client: TestClient, alice: dict, word: str
) -> None:
    create(client, alice, title="open")
    create(client, alice, title="closed", completed=True)
    assert titles(client.get(f"{TASKS}?status={word}", headers=alice)) == ["closed"]
    assert titles(client.get(f"{TASKS}?status=todo", headers=alice)) == ["open"]


@pytest.mark.parametrize("size_name", ["page_size", "per_page"])
def test_page_and_page_size_walk_every_task_once(client: TestClient, alice: dict, size_name: str) -> None:
    ids = [create(client, alice, title=f"t{i}")["id"] for i in range(7)]
    seen: list[int] = []
    url: str | None = f"{TASKS}?page=1&{size_name}=3"
    while url:
        response = client.get(url, headers=alice)
        assert response.headers["X-Total-Count"] == "7"
        seen += [task["id"] for task in response.json()]
        url = response.links.get("next", {}).get("url")
        if url:
            assert f"{size_name}=3" in url and "page=" in url and "offset" not in url
    assert seen == ids[::-1]
    third = client.get(f"{TASKS}?page=3&{size_name}=3", headers=alice)
    assert [task["id"] for task in third.json()] == [ids[0]]
    assert "page=2" in third.links["prev"]["url"] and "page=1" in third.links["first"]["url"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("sort_by=title&sort_order=desc", ["cherry", "banana", "apple"]),
        ("sort_by=title", ["apple", "banana", "cherry"]),
        ("sort=title:desc", ["cherry", "banana", "apple"]),
        ("sort=title:asc&order=asc", ["apple", "banana", "cherry"]),
        ("sort=created_at:asc", ["banana", "cherry", "apple"]),
    ],
)
def test_other_spellings_of_sort(client: TestClient, alice: dict, query: str, expected: list[str]) -> None:
    for title in ("banana", "cherry", "apple"):
        create(client, alice, title=title)
    assert titles(client.get(f"{TASKS}?{query}", headers=alice)) == expected


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ("page=2&offset=5", "'page' and 'offset' both say where the page starts: send one of them"),
        ("page_size=5&limit=5", "limit and page_size all set the page size: send one of them"),
        ("page_size=5&per_page=5", "page_size and per_page all set the page size: send one of them"),
        ("sort=title&sort_by=title", "'sort_by' is another name for 'sort': send one of them"),
        ("order=asc&sort_order=asc", "'sort_order' is another name for 'order': send one of them"),
        ("q=a&search=a", "'search' is another name for 'q': send one of them"),
        ("sort=title:desc&order=asc", "sort 'title:desc' and order=asc contradict each other"),
        ("sort=-title:asc", "sort '-title:asc' contradicts itself"),
    ],
)
def test_an_alias_mixed_with_its_name_is_422(
    client: TestClient, alice: dict, query: str, detail: str
) -> None:
    response = client.get(f"{TASKS}?{query}", headers=alice)
    assert response.status_code == 422
    assert response.json()["detail"] == detail


@pytest.mark.parametrize(
    ("query", "loc"), [("page=0", "page"), ("per_page=501", "per_page"), ("sort_by=id", "sort_by")]
)
def test_bad_aliases_are_422_at_their_name(client: TestClient, alice: dict, query: str, loc: str) -> None:
    assert error_locs(client.get(f"{TASKS}?{query}", headers=alice)) == [["query", loc]]


@pytest.mark.parametrize("name", ["q", "search"])
def test_search_finds_a_substring_of_title_or_description_ignoring_case(
    client: TestClient, alice: dict, name: str
) -> None:
    create(client, alice, title="Buy MILK", description=None)
    create(client, alice, title="Call mum", description="about the milkman")
    create(client, alice, title="Ünïcode Straße", description="x")
    create(client, alice, title="unrelated", description="nothing here")
    response = client.get(f"{TASKS}?{name}=milk", headers=alice)
    assert titles(response) == ["Call mum", "Buy MILK"]
    assert response.headers["X-Total-Count"] == "2"
    assert titles(client.get(f"{TASKS}?{name}=ÜNÏ", headers=alice)) == ["Ünïcode Straße"]
    assert titles(client.get(f"{TASKS}?{name}=milk&status=completed", headers=alice)) == []


@pytest.mark.parametrize("needle", ["%", "_", "\\"])
def test_search_takes_wildcards_literally(client: TestClient, alice: dict, needle: str) -> None:
    create(client, alice, title=f"100{needle} sure")
    create(client, alice, title="plain words")
    assert titles(client.get(TASKS, params={"q": needle}, headers=alice)) == [f"100{needle} sure"]


def test_search_counts_every_match_across_pages(client: TestClient, alice: dict) -> None:
    for i in range(5):
        create(client, alice, title=f"match {i}")
    create(client, alice, title="other")
    first = client.get(f"{TASKS}?q=match&limit=2", headers=alice)
    assert first.headers["X-Total-Count"] == "5"
    past = client.get(f"{TASKS}?q=match&offset=10", headers=alice)
    assert past.json() == [] and past.headers["X-Total-Count"] == "5"


def test_an_empty_search_lists_everything(client: TestClient, alice: dict) -> None:
    create(client, alice, title="a")
    create(client, alice, title="b")
    assert client.get(f"{TASKS}?q=", headers=alice).headers["X-Total-Count"] == "2"


# --- bulk ------------------------------------------------------------------------------------


def test_bulk_create_makes_every_task_in_order(client: TestClient, alice: dict) -> None:
    body = [{"title": f"t{i}", "completed": i == 1, "status": "todo" if i == 2 else None} for i in range(100)]
    body = [{k: v for k, v in task.items() if v is not None} for task in body]
    response = client.post(f"{TASKS}/bulk", json=body, headers=alice)
    assert response.status_code == 201
    created = response.json()
    assert [task["title"] for task in created] == [f"t{i}" for i in range(100)]
    assert created[1]["completed"] is True and created[1]["completed_at"] is not None
    assert [task["id"] for task in created] == sorted(task["id"] for task in created)
    listed = client.get(f"{TASKS}?limit=500", headers=alice)
    assert listed.headers["X-Total-Count"] == "100"
    assert {task["id"]: task for task in listed.json()} == {task["id"]: task for task in created}


@pytest.mark.parametrize(
    ("body", "locs"),
    [
        ([{"title": "fine"}, {"title": ""}], [["body", 1, "title"]]),
        ([], [["body"]]),
        ([{"title": "x"}] * 101, [["body"]]),
        ({"title": "not a list"}, [["body"]]),
    ],
    ids=["one-invalid", "empty", "over-100", "not-a-list"],
)
def test_bulk_create_is_all_or_none(client: TestClient, alice: dict, body: object, locs: list) -> None:
    response = client.post(f"{TASKS}/bulk", json=body, headers=alice)
    assert error_locs(response) == locs
    assert client.get(TASKS, headers=alice).json() == []


def test_bulk_create_is_only_for_the_caller(client: TestClient, alice: dict, bob: dict) -> None:
    assert client.post("/api/alice/tasks/bulk", json=[{"title": "x"}], headers=bob).status_code == 403
    assert client.get(TASKS, headers=alice).json() == []


@pytest.mark.parametrize("query", ["status=completed", "status=done", "completed=true"])
def test_clearing_completed_tasks_leaves_the_rest(
    client: TestClient, alice: dict, bob: dict, query: str
) -> None:
    keep = create(client, alice, title="open")
    for i in range(3):
        create(client, alice, title=f"done {i}", completed=True)
    client.post("/api/bob/tasks", json={"title": "bob's", "completed": True}, headers=bob)
    response = client.delete(f"{TASKS}?{query}", headers=alice)
    assert response.status_code == 200
    assert response.json() == {"deleted": 3}
    remaining = client.get(TASKS, headers=alice)
    assert [task["id"] for task in remaining.json()] == [keep["id"]]
    assert remaining.headers["X-Total-Count"] == "1"
    assert client.get("/api/bob/tasks", headers=bob).headers["X-Total-Count"] == "1"


@pytest.mark.parametrize("query", ["", "?status=all", "?q=done", "?status=pending&completed=true"])
def test_deleting_the_whole_collection_is_refused(client: TestClient, alice: dict, query: str) -> None:
    create(client, alice, title="done", completed=True)
    create(client, alice, title="open")
    response = client.delete(f"{TASKS}{query}", headers=alice)
    assert response.status_code == 422
    assert client.get(TASKS, headers=alice).headers["X-Total-Count"] == "2"


# --- what the OpenAPI document says (found by the schema fuzzer, e2e/test_fuzz.py) --------------

TITLE_SAMPLES = [
    "Buy milk",
    " x ",
    "\u200b\u200d ",
    "\u00a0\u3000",
    "\u0301",
    "\ue000",
    "\U0001f95b",
    "\t\n",
    "a\u200b",
]


def document_schema(client: TestClient, name: str) -> dict[str, Any]:
    schema: dict[str, Any] = client.get("/openapi.json").json()["components"]["schemas"][name]
    return schema


@pytest.mark.parametrize("title", TITLE_SAMPLES)
def test_the_documented_title_pattern_is_the_rule_the_api_applies(
    client: TestClient, alice: dict, title: str
) -> None:
    pattern = document_schema(client, "TaskCreate")["properties"]["title"]["pattern"]
    accepted = client.post(TASKS, json={"title": title}, headers=alice).status_code == 201
    assert accepted == bool(re.search(pattern, title))


def test_the_documented_title_pattern_refuses_nul(client: TestClient, alice: dict) -> None:
    pattern = document_schema(client, "TaskCreate")["properties"]["title"]["pattern"]
    assert not re.search(pattern, "a\x00b")
    assert client.post(TASKS, json={"title": "a\x00b"}, headers=alice).status_code == 422


def test_the_conditional_writes_document_their_409_412_and_304(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    single = paths["/api/{user_id}/tasks/{task_id}"]
    for operation in (
        single["put"],
        single["patch"],
        paths["/api/{user_id}/tasks/{task_id}/complete"]["patch"],
        paths["/api/{user_id}/tasks/{task_id}/toggle"]["patch"],
    ):
        assert {"409", "412"} <= set(operation["responses"]), operation["summary"]
        assert "ETag" in operation["responses"]["200"]["headers"]
    assert "412" in single["delete"]["responses"]
    assert "ETag" in single["get"]["responses"]["304"]["headers"]
    created = paths["/api/{user_id}/tasks"]["post"]["responses"]["201"]["headers"]
    assert created["Location"]["required"] is True
    listed = paths["/api/{user_id}/tasks"]["get"]["responses"]["200"]["headers"]
    assert listed["X-Total-Count"]["required"] is True


def test_a_422_of_the_routes_own_rules_matches_the_documented_422(client: TestClient, alice: dict) -> None:
    document = client.get("/openapi.json").json()
    documented = document["paths"]["/api/{user_id}/tasks"]["get"]["responses"]["422"]
    assert documented["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ValidationFailure"
    }
    failure = document["components"]["schemas"]["ValidationFailure"]
    response = client.get(TASKS, params={"q": "milk", "search": "milk"}, headers=alice)
    assert response.status_code == 422
    assert isinstance(response.json()["detail"], str)
    assert {"type": "string"} in failure["properties"]["detail"]["anyOf"]
    assert set(failure["required"]) <= set(response.json())


@pytest.mark.parametrize("parameter", ["q", "search"])
def test_a_search_with_nul_is_422(client: TestClient, alice: dict, parameter: str) -> None:
    # PostgreSQL cannot take NUL in a text parameter: it must not get that far.
    assert error_locs(client.get(TASKS, params={parameter: "a\x00b"}, headers=alice)) == [
        ["query", parameter]
    ]


@pytest.mark.parametrize("parameter", ["q", "search"])
def test_the_search_says_it_takes_no_nul(client: TestClient, alice: dict, parameter: str) -> None:
    """`search` is `q` by another name, and its schema says the same (found by the fuzzer)."""
    parameters = client.get("/openapi.json").json()["paths"]["/api/{user_id}/tasks"]["get"]["parameters"]
    schema = next(p["schema"] for p in parameters if p["name"] == parameter)
    patterns = [branch["pattern"] for branch in schema["anyOf"] if "pattern" in branch]
    assert patterns, schema
    for text in ("milk", "a\x00b"):
        accepted = client.get(TASKS, params={parameter: text}, headers=alice).status_code == 200
        assert accepted == all(re.search(pattern, text) for pattern in patterns)


@pytest.mark.parametrize("priority", ["h\u0131gh", "HIGH ", "x"])
def test_the_documented_priority_filter_is_the_rule_the_api_applies(
    client: TestClient, alice: dict, priority: str
) -> None:
    parameters = client.get("/openapi.json").json()["paths"]["/api/{user_id}/tasks"]["get"]["parameters"]
    schema = next(p["schema"] for p in parameters if p["name"] == "priority")
    pattern = schema["anyOf"][0]["items"]["pattern"]
    accepted = client.get(TASKS, params={"priority": priority}, headers=alice).status_code == 200
    assert accepted == bool(re.search(pattern, priority))


@pytest.mark.parametrize(
    ("method", "query"),
    [
        ("DELETE", "completed=true&completed=false"),
        ("DELETE", "status=completed&status=pending"),
        ("GET", "limit=5&limit=6"),
        ("GET", "sort=title&sort=-title"),
    ],
)
def test_a_single_valued_query_parameter_sent_twice_is_422(
    client: TestClient, alice: dict, method: str, query: str
) -> None:
    # Found by the schema fuzzer (e2e/test_fuzz.py): the last of many `completed` values decided
    # which tasks a bulk delete removed.
    create(client, alice, title="kept")
    create(client, alice, title="kept too", completed=True)
    response = client.request(method, f"{TASKS}?{query}", headers=alice)
    assert response.status_code == 422, response.text
    assert "once" in response.json()["detail"]
    assert len(client.get(TASKS, headers=alice).json()) == 2


def test_repeatable_and_empty_query_parameters_are_still_fine(client: TestClient, alice: dict) -> None:
    assert client.get(f"{TASKS}?priority=high&priority=low&tag=a&tag=b", headers=alice).status_code == 200
    assert client.delete(f"{TASKS}?completed=&completed=true", headers=alice).json() == {"deleted": 0}


def test_a_repeated_parameter_without_a_token_is_still_401(client: TestClient) -> None:
    assert client.get(f"{TASKS}?limit=5&limit=6").status_code == 401
