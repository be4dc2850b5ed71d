"""Database outages against the real server (`make run`) and a PostgreSQL cluster of the test's
own, which it stops, freezes and restarts: 503 with Retry-After within the timeout, never a 500
or a hang, the connection kept open, nothing half-written, and writes again once it is back."""

import http.client
import json
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testkit import sign
from testkit.postgres import Cluster, postgres_bin, throwaway_cluster
from testkit.server import ROOT, RunningServer, free_port, make_run, run_command, run_environment

TIMEOUT = 2.0  # DB_STATEMENT_TIMEOUT_SECONDS in these tests
OUTAGE_ENV = {
    "DB_STATEMENT_TIMEOUT_SECONDS": str(TIMEOUT),
    "DB_CONNECT_TIMEOUT_SECONDS": "1",
    "DB_STARTUP_TIMEOUT_SECONDS": "20",
}


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    if postgres_bin() is None:
        if os.environ.get("CI") or os.environ.get("TEST_DATABASE_URL"):
            pytest.fail("initdb and pg_ctl are needed for the outage tests (Debian: postgresql)")
        pytest.skip("initdb and pg_ctl are not installed")
    # Not under pytest's tmp_path: its parents are private to root, and PostgreSQL runs as
    # the postgres user.
    workdir = Path(tempfile.mkdtemp(prefix="todo-outage-"))
    try:
        with throwaway_cluster(workdir) as running:
            yield running
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


Answer = tuple[int, Any, float, Any]  # status, body, seconds, the response


class Client:
    """One keep-alive connection to the server, as a frontend holds it."""

    def __init__(self, server: RunningServer) -> None:
        self.connection = http.client.HTTPConnection(server.host, server.port, timeout=30)
        self.token = sign({"sub": "alice"}, secret=server.secret)
        self.socket: Any = None

    def send(
        self, method: str, path: str, body: Any = None, token: bool = True
    ) -> tuple[int, Any, float, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if token else {}
        if body is not None:
            headers["Content-Type"] = "application/json"
        started = time.perf_counter()
        self.connection.request(
            method, path, body=None if body is None else json.dumps(body), headers=headers
        )
        response = self.connection.getresponse()
        data = json.loads(response.read() or b"null")
        took = time.perf_counter() - started
        if self.socket is None:
            self.socket = self.connection.sock
        # The same socket throughout: an error answer must not cost the client its connection.
        assert self.connection.sock is self.socket, "the server closed the connection"
        return response.status, data, took, response


def assert_outage(answer: Answer) -> None:
    status, data, took, response = answer
    assert status == 503, data
    assert response.getheader("Retry-After") == "2"
    assert data["detail"].startswith("The database is unavailable")
    assert took < TIMEOUT + 1.0, f"answered after {took:.1f} s"


def consistent(client: Client) -> list[str]:
    """The titles of alice's tasks, checked against the kept count (X-Total-Count)."""
    status, tasks, _, response = client.send("GET", "/api/alice/tasks?limit=100")
    assert status == 200
    assert int(response.getheader("X-Total-Count")) == len(tasks)
    assert all(task["title"] and task["user_id"] == "alice" for task in tasks)
    return sorted(task["title"] for task in tasks)


def test_a_stopped_database_is_an_outage_and_writes_resume_when_it_is_back(
    tmp_path: Path, cluster: Cluster
) -> None:
    with make_run(tmp_path, {**OUTAGE_ENV, "DATABASE_URL": cluster.url}) as server:
        client = Client(server)
        assert client.send("POST", "/api/alice/tasks", {"title": "before"})[0] == 201
        cluster.stop()
        for n in range(3):
            assert_outage(client.send("POST", "/api/alice/tasks", {"title": f"during-{n}"}))
            assert_outage(client.send("GET", "/api/alice/tasks"))
        status, _, took, _ = client.send("GET", "/health/ready", token=False)
        assert status == 503 and took < 2.0
        # Said once in the log, not once per request answered 503.
        assert server.log.read_text().count("Database unavailable on") == 1
        cluster.start()
        assert client.send("POST", "/api/alice/tasks", {"title": "after"})[0] == 201
        assert consistent(client) == ["after", "before"]  # nothing from the outage, nothing half
        assert client.send("GET", "/health/ready", token=False)[0] == 200


def test_a_frozen_database_is_answered_within_the_timeout_and_thaws(tmp_path: Path, cluster: Cluster) -> None:
    with make_run(tmp_path, {**OUTAGE_ENV, "DATABASE_URL": cluster.url}) as server:
        client = Client(server)
        assert client.send("POST", "/api/alice/tasks", {"title": "before"})[0] == 201
        cluster.freeze()
        try:
            sent = []
            for n in range(3):
                sent.append(f"frozen-{n}")
                assert_outage(client.send("POST", "/api/alice/tasks", {"title": sent[-1]}))
            assert_outage(client.send("GET", "/api/alice/tasks"))
            status, _, took, _ = client.send("GET", "/health/ready", token=False)
            assert status == 503 and took < 2.0
        finally:
            cluster.thaw()
        # The requests left waiting finish now: each write answered 503 was stored whole or
        # not at all, and new ones succeed.
        deadline = time.monotonic() + 10
        while client.send("GET", "/health/ready", token=False)[0] != 200:
            assert time.monotonic() < deadline, "not ready again after the thaw"
            time.sleep(0.2)
        assert client.send("POST", "/api/alice/tasks", {"title": "after"})[0] == 201
        titles = consistent(client)
        assert {"before", "after"} <= set(titles) <= {"before", "after", *sent}


def make_run_once(workdir: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """`make run` until it exits on its own (or `timeout`), with its output."""
    return subprocess.run(  # noqa: S603 (our own command)
        run_command(free_port()),
        cwd=ROOT,
        env=run_environment(workdir, env, secrets.token_urlsafe(48)),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_start_up_waits_a_bounded_time_then_exits_with_one_message(tmp_path: Path, cluster: Cluster) -> None:
    cluster.stop()
    started = time.monotonic()
    result = make_run_once(tmp_path, {"DATABASE_URL": cluster.url, "DB_STARTUP_TIMEOUT_SECONDS": "2"}, 60)
    took = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert 2 <= took < 30, f"exited after {took:.1f} s"
    assert output.count("cannot be reached") == 2, output  # "retrying for up to 2 s", then the end
    assert "retrying for up to 2 s" in output
    assert "Cannot start: the database at postgresql+psycopg2://postgres@127.0.0.1:" in output
    assert "Traceback" not in output, output


def test_start_up_waits_for_a_database_that_comes_up(tmp_path: Path, cluster: Cluster) -> None:
    cluster.stop()
    timer = threading.Timer(3.0, cluster.start)
    timer.start()
    try:
        with make_run(tmp_path, {**OUTAGE_ENV, "DATABASE_URL": cluster.url}) as server:
            assert Client(server).send("POST", "/api/alice/tasks", {"title": "t"})[0] == 201
            log = server.log.read_text()
            assert "cannot be reached" in log and "retrying for up to 20 s" in log
            assert "The database answers after" in log
    finally:
        timer.join()


def test_the_cluster_runs_as_postgres_not_as_root(cluster: Cluster) -> None:
    """The harness itself: its processes are the postgres user's, on the test's own port."""
    owner = os.stat(f"/proc/{cluster.postmaster()}").st_uid
    assert owner == (pwd.getpwnam("postgres").pw_uid if os.geteuid() == 0 else os.geteuid())
    assert cluster.port != 5432
