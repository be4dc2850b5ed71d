"""Tags: what a task accepts, how lists filter on them (through an index), and what keeps them."""

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

import tasks
from testkit.sql import engine_of, plan_of, statements_seen

TASKS = "/api/alice/tasks"


def create(client: TestClient, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    response = client.post(TASKS, json={"title": "a task", **fields}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def titles(client: TestClient, headers: dict[str, str], query: str) -> list[str]:
    response = client.get(f"{TASKS}?{query}", headers=headers)
    assert response.status_code == 200, response.text
    return [task["title"] for task in response.json()]


def tag_rows(engine: Engine) -> list[tuple[int, str, str]]:
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(text("SELECT task_id, tag, user_id FROM task_tag"))]


def test_tags_are_trimmed_kept_in_order_and_each_once_ignoring_case(client: TestClient, alice: dict) -> None:
    task = create(client, alice, tags=[" Work ", "errands", "WORK", "Été", "été"])
    assert task["tags"] == ["Work", "errands", "Été"]
    assert client.get(f"{TASKS}/{task['id']}", headers=alice).json()["tags"] == ["Work", "errands", "Été"]
    assert create(client, alice)["tags"] == []
    assert create(client, alice, tags=None)["tags"] == []


@pytest.mark.parametrize(
    "tags",
    [
        [f"tag{i}" for i in range(21)],  # 21 distinct
        ["x" * 51],
        [""],
        ["   "],
        ["\u200b"],  # nothing visible
        [1],
        "work",  # a string, not a list
        ["a\x00b"],
    ],
    ids=["21 tags", "51 chars", "empty", "blank", "zero-width", "number", "string", "nul"],
)
def test_bad_tags_are_422_and_nothing_is_stored(client: TestClient, alice: dict, tags: Any) -> None:
    response = client.post(TASKS, json={"title": "t", "tags": tags}, headers=alice)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][:2] == ["body", "tags"]
    assert client.get(TASKS, headers=alice).headers["X-Total-Count"] == "0"


def test_twenty_tags_of_fifty_characters_are_accepted(client: TestClient, alice: dict) -> None:
    tags = [f"{i:02d}" + "x" * 48 for i in range(20)]
    assert create(client, alice, tags=[*tags, tags[0].upper()])["tags"] == tags


def test_patch_and_put_replace_the_tags_sent_and_keep_them_otherwise(client: TestClient, alice: dict) -> None:
    task = create(client, alice, tags=["a", "b"])
    url = f"{TASKS}/{task['id']}"
    assert client.patch(url, json={"title": "renamed"}, headers=alice).json()["tags"] == ["a", "b"]
    assert client.put(url, json={"tags": ["c"]}, headers=alice).json()["tags"] == ["c"]
    assert titles(client, alice, "tag=a") == []
    assert titles(client, alice, "tag=c") == ["renamed"]
    assert client.patch(url, json={"tags": None}, headers=alice).json()["tags"] == []
    assert titles(client, alice, "tag=c") == []


def test_the_tag_filter_wants_all_of_the_tags_ignoring_case(
    client: TestClient, alice: dict, bob: dict
) -> None:
    create(client, alice, title="both", tags=["Work", "urgent"])
    create(client, alice, title="work", tags=["work"])
    create(client, alice, title="urgent", tags=["URGENT"], completed=True)
    create(client, alice, title="none")
    client.post("/api/bob/tasks", json={"title": "bob's", "tags": ["work"]}, headers=bob)
    assert titles(client, alice, "tag=work&sort=title") == ["both", "work"]
    assert titles(client, alice, "tag=WORK&tag=Urgent") == ["both"]
    assert titles(client, alice, "tag=urgent&sort=title") == ["both", "urgent"]
    assert titles(client, alice, "tag=urgent&status=pending") == ["both"]
    assert titles(client, alice, "tag=urgent&tag=missing") == []
    response = client.get(f"{TASKS}?tag=work&limit=1", headers=alice)
    assert response.headers["X-Total-Count"] == "2"
    assert len(response.json()) == 1


@pytest.mark.parametrize("query", ["tag=%20", f"tag={'x' * 51}", "&".join(f"tag=t{i}" for i in range(21))])
def test_a_bad_tag_filter_is_422(client: TestClient, alice: dict, query: str) -> None:
    assert client.get(f"{TASKS}?{query}", headers=alice).status_code == 422


def test_deleting_tasks_deletes_their_tags(client: TestClient, alice: dict) -> None:
    first = create(client, alice, tags=["a", "b"])
    create(client, alice, tags=["c"], completed=True)
    kept = create(client, alice, tags=["d"])
    client.delete(f"{TASKS}/{first['id']}", headers=alice)
    client.delete(f"{TASKS}?status=completed", headers=alice)
    assert tag_rows(engine_of(client)) == [(kept["id"], "d", "alice")]


def test_bulk_created_tasks_are_tagged(client: TestClient, alice: dict) -> None:
    response = client.post(
        f"{TASKS}/bulk",
        json=[{"title": "one", "tags": ["x"]}, {"title": "two", "tags": ["x", "y"]}],
        headers=alice,
    )
    assert [task["tags"] for task in response.json()] == [["x"], ["x", "y"]]
    assert titles(client, alice, "tag=x&tag=y") == ["two"]


def test_a_list_is_one_statement_however_many_tasks_and_tags_it_returns(
    client: TestClient, alice: dict
) -> None:
    """Tags are read with their task's row: no statement per task or per tag."""
    create(client, alice, tags=["one"])
    with statements_seen(engine_of(client)) as seen:
        assert len(client.get(TASKS, headers=alice).json()) == 1
    few = len(seen)
    client.post(
        f"{TASKS}/bulk",
        json=[{"title": f"t{i}", "tags": [f"tag{j}" for j in range(20)]} for i in range(60)],
        headers=alice,
    )
    with statements_seen(engine_of(client)) as seen:
        page = client.get(f"{TASKS}?tag=tag3&tag=tag7", headers=alice).json()
    assert len(page) == 60 and all(len(task["tags"]) == 20 for task in page)
    assert few == len(seen) == 1


def test_a_tag_filter_reads_the_tag_index(client: TestClient, alice: dict, backend: str) -> None:
    create(client, alice, tags=["a"])
    where = tasks.TaskFilter(tags=("a", "b"))
    plan = plan_of(engine_of(client), where, tasks.TaskOrder())
    assert "ix_task_tag_user_tag" in plan, plan


def test_titles_sort_ignoring_case(client: TestClient, alice: dict) -> None:
    for title in ["banana", "Cherry", "apple", "Apple"]:
        create(client, alice, title=title)
    # Byte order would put "Cherry" first; ties (apple, Apple) go by id.
    assert titles(client, alice, "sort=title") == ["apple", "Apple", "banana", "Cherry"]
    assert titles(client, alice, "sort=-title") == ["Cherry", "banana", "Apple", "apple"]


def test_empty_query_values_are_taken_as_not_sent(client: TestClient, alice: dict) -> None:
    """What a form's empty fields send: `?status=&tag=&limit=` lists as if they were absent."""
    create(client, alice, title="one", tags=["a"])
    create(client, alice, title="two")
    query = "status=&completed=&q=&priority=&tag=&due_before=&overdue&limit=&page=&sort=&order=&since="
    response = client.get(f"{TASKS}?{query}", headers=alice)
    assert response.status_code == 200, response.text
    assert [task["title"] for task in response.json()] == ["two", "one"]
    paged = client.get(f"{TASKS}?tag=&limit=1&q=", headers=alice)
    assert paged.headers["Link"].startswith(f"<http://testserver{TASKS}?limit=1&offset=1>")
    assert client.get(f"{TASKS}?limit=0&tag=", headers=alice).status_code == 422  # a value sent is checked


def test_the_documented_tag_patterns_are_the_rules_the_api_applies(client: TestClient, alice: dict) -> None:
    # Found by the schema fuzzer (e2e/test_fuzz.py): an invisible tag was documented as valid.
    document = client.get("/openapi.json").json()
    item = document["components"]["schemas"]["TaskCreate"]["properties"]["tags"]["anyOf"][0]["items"]
    for tag in ("work", " Q1 ", "\u0016", "\u200b", "\u00a0"):
        accepted = client.post(TASKS, json={"title": "t", "tags": [tag]}, headers=alice).status_code == 201
        assert accepted == bool(re.search(item["pattern"], tag)), repr(tag)
    parameters = document["paths"]["/api/{user_id}/tasks"]["get"]["parameters"]
    schema = next(p["schema"] for p in parameters if p["name"] == "tag")
    pattern = schema["anyOf"][0]["items"]["pattern"]
    for tag in ("work", " work ", "  ", "a\x00b", "x" * 50, "x" * 51, " " + "x" * 50 + " "):
        accepted = client.get(TASKS, params={"tag": tag}, headers=alice).status_code == 200
        assert accepted == bool(re.search(pattern, tag)), repr(tag)


def test_the_documented_tag_filter_says_at_most_a_tasks_worth(client: TestClient, alice: dict) -> None:
    parameters = client.get("/openapi.json").json()["paths"]["/api/{user_id}/tasks"]["get"]["parameters"]
    schema = next(p["schema"] for p in parameters if p["name"] == "tag")
    assert schema["anyOf"][0]["maxItems"] == 20
    query = "&".join(f"tag=t{n}" for n in range(21))
    assert client.get(f"{TASKS}?{query}", headers=alice).status_code == 422


def test_the_tag_filter_counts_values_as_sent(client: TestClient, alice: dict) -> None:
    """21 values are refused even when, repeats dropped, fewer remain: the document's maxItems
    counts what is sent (found by the fuzzer), and so does the service."""
    twenty = "&".join(f"tag=t{n}" for n in range(20))
    assert client.get(f"{TASKS}?{twenty}", headers=alice).status_code == 200
    assert client.get(f"{TASKS}?{twenty}&tag=T0", headers=alice).status_code == 422
