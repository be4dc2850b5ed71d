"""Floods against the real server (`make run`): what one client sends must not slow other users
past a second or take the process's memory past twice its normal; and instances sharing Redis
share their limits."""

import http.client
import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from testkit import sign
from testkit.server import RunningServer, make_run, make_runs

FLOOD_CLIENTS = 40
FLOOD_SECONDS = 6.0


def call(
    server: RunningServer, method: str, path: str, body: Any = None, token: str | None = None
) -> tuple[int, dict[str, str], Any]:
    connection = http.client.HTTPConnection(server.host, server.port, timeout=30)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        connection.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        response = connection.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(data or b"null")
    finally:
        connection.close()


class Watch:
    """While a flood runs: another user's request latencies, one request at a time, and the
    server's peak resident memory."""

    def __init__(self, server: RunningServer, victim: Callable[[], int]) -> None:
        self.server, self.victim = server, victim
        self.latencies: list[float] = []
        self.statuses: list[int] = []
        self.peak_rss = server.rss_bytes()
        self.done = threading.Event()
        self.threads = [threading.Thread(target=self._victim), threading.Thread(target=self._memory)]

    def _victim(self) -> None:
        while not self.done.is_set():
            started = time.perf_counter()
            self.statuses.append(self.victim())
            self.latencies.append(time.perf_counter() - started)
            time.sleep(0.05)

    def _memory(self) -> None:
        while not self.done.is_set():
            self.peak_rss = max(self.peak_rss, self.server.rss_bytes())
            time.sleep(0.02)

    def __enter__(self) -> "Watch":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.done.set()
        for thread in self.threads:
            thread.join()


def flood(request: Callable[[int], int], seconds: float = FLOOD_SECONDS) -> list[int]:
    """FLOOD_CLIENTS clients, each sending `request(n)` back to back for `seconds`."""
    statuses: list[int] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    counter = iter(range(10**9))

    def client() -> None:
        while time.monotonic() < deadline:
            with lock:
                n = next(counter)
            status = request(n)
            with lock:
                statuses.append(status)

    threads = [threading.Thread(target=client) for _ in range(FLOOD_CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def test_a_registration_flood_leaves_task_requests_fast_and_memory_bounded(tmp_path: Path) -> None:
    # The production Argon2 cost (64 MiB a hash), and no address limit: the bound on hashing
    # alone must protect the process (the address limit stops one address, not many).
    env = {"PASSWORD_HASH_TIME_COST": "3", "PASSWORD_HASH_MEMORY_KIB": "65536"}
    with make_run(tmp_path, env) as server:
        alice = sign({"sub": "alice"}, secret=server.secret)
        assert call(server, "POST", "/api/alice/tasks", {"title": "milk"}, alice)[0] == 201
        account = {"email": "warm@example.com", "password": "correct horse battery", "name": "W"}
        assert call(server, "POST", "/auth/register", account)[0] == 201  # one hash: its memory is normal
        normal_rss = server.rss_bytes()

        def register(n: int) -> int:
            body = {"email": f"flood{n}@example.com", "password": "correct horse battery", "name": "F"}
            return call(server, "POST", "/auth/register", body)[0]

        with Watch(server, lambda: call(server, "GET", "/api/alice/tasks", token=alice)[0]) as watch:
            statuses = flood(register)

    assert set(statuses) <= {201, 503}, set(statuses)  # served or told to retry; never a 500
    assert statuses.count(201) > 0 and statuses.count(503) > 0
    assert set(watch.statuses) == {200}
    assert len(watch.latencies) > 10
    assert max(watch.latencies) < 1.0, f"another user waited {max(watch.latencies):.2f} s"
    assert watch.peak_rss < 2 * normal_rss, f"peak {watch.peak_rss >> 20} MiB, normal {normal_rss >> 20} MiB"


def test_an_anonymous_flood_is_refused_by_address_and_others_are_served(tmp_path: Path) -> None:
    env = {"RATE_LIMIT_UNAUTHENTICATED_PER_ADDRESS": "50/day"}
    with make_run(tmp_path, env) as server:
        alice = sign({"sub": "alice"}, secret=server.secret)
        normal_rss = server.rss_bytes()
        with Watch(server, lambda: call(server, "GET", "/api/alice/tasks", token=alice)[0]) as watch:
            statuses = flood(lambda n: call(server, "GET", "/api/alice/tasks", token="not-a-token")[0], 3.0)
    assert statuses.count(401) == 50  # the first 50 of the day; the rest refused at once
    assert set(statuses) == {401, 429}
    assert set(watch.statuses) == {200}  # alice has a valid token: her own limit, not the address's
    assert max(watch.latencies) < 1.0
    assert watch.peak_rss < 2 * normal_rss


def test_two_real_instances_share_limits_and_logouts_through_redis(tmp_path: Path, redis_url: str) -> None:
    env = {
        "RATE_LIMIT_STORAGE_URI": redis_url,
        "RATE_LIMIT_PER_USER": "4/day",
        "RATE_LIMIT_AUTH_PER_ADDRESS": "5/day",
        "REVOCATION_REFRESH_SECONDS": "5",  # the database reload is too slow to be what refuses
    }
    with make_runs(tmp_path, 2, env) as (one, two):
        alice = sign({"sub": "alice"}, secret=one.secret)
        statuses = [call(server, "GET", "/api/alice/tasks", token=alice)[0] for server in [one, two] * 2]
        assert statuses == [200] * 4
        for server in (one, two):
            status, headers, _ = call(server, "GET", "/api/alice/tasks", token=alice)
            assert status == 429 and int(headers["retry-after"]) >= 1

        account = {"email": "ada@example.com", "password": "correct horse battery"}
        assert call(one, "POST", "/auth/register", {**account, "name": "Ada"})[0] == 201
        token = call(one, "POST", "/auth/login", account)[2]["access_token"]
        assert call(two, "GET", "/auth/me", token=token)[0] == 200
        assert call(one, "POST", "/auth/logout", token=token)[0] == 204
        time.sleep(0.2)
        assert call(two, "GET", "/auth/me", token=token)[2] == {"detail": "Token has been revoked"}

        wrong = {"email": "nobody@example.com", "password": "wrong password"}
        logins = [call(server, "POST", "/auth/login", wrong)[0] for server in [one, two] * 2]
        assert logins == [401, 401, 401, 429]  # 2 earlier + 3 here, across both: the 6th is over


def test_a_flood_of_large_bodies_leaves_others_fast_and_memory_bounded(tmp_path: Path) -> None:
    with make_run(tmp_path) as server:
        alice = sign({"sub": "alice"}, secret=server.secret)
        mallory = sign({"sub": "mallory"}, secret=server.secret)
        assert call(server, "POST", "/api/alice/tasks", {"title": "milk"}, alice)[0] == 201
        normal_rss = server.rss_bytes()
        # Just under MAX_BODY_BYTES (1 MiB): as many small objects as fit, the costliest to parse.
        body = json.dumps([{"t": 1}] * 100_000)
        assert len(body) < 1024 * 1024

        def post(n: int) -> int:
            connection = http.client.HTTPConnection(server.host, server.port, timeout=30)
            try:
                headers = {"Authorization": f"Bearer {mallory}", "Content-Type": "application/json"}
                connection.request("POST", "/api/mallory/tasks/bulk", body=body, headers=headers)
                return connection.getresponse().status
            finally:
                connection.close()

        with Watch(server, lambda: call(server, "GET", "/api/alice/tasks", token=alice)[0]) as watch:
            statuses = flood(post, 4.0)
    assert set(statuses) <= {422, 503, 429}, set(statuses)  # parsed and refused (100 at most), or waited
    assert set(watch.statuses) == {200}
    assert max(watch.latencies) < 1.0, f"another user waited {max(watch.latencies):.2f} s"
    assert watch.peak_rss < 2 * normal_rss, f"peak {watch.peak_rss >> 20} MiB, normal {normal_rss >> 20} MiB"


def test_large_bodies_past_the_ones_let_in_wait_then_get_503(tmp_path: Path) -> None:
    env = {"LARGE_BODY_CONCURRENCY": "1", "LARGE_BODY_WAIT_SECONDS": "0.5"}
    with make_run(tmp_path, env) as server:
        token = sign({"sub": "alice"}, secret=server.secret)
        head = (
            f"POST /api/alice/tasks/bulk HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 200000\r\n\r\n"
        )
        with socket.create_connection((server.host, server.port)) as holder:
            holder.sendall(head.encode() + b"[" + b" " * 1000)  # let in, and still sending
            time.sleep(0.3)
            started = time.perf_counter()
            status, headers, body = call(
                server, "POST", "/api/alice/tasks/bulk", [{"title": "x" * 100}] * 700, token
            )
            waited = time.perf_counter() - started
            assert status == 503 and headers["retry-after"] == "1", body
            assert 0.4 < waited < 2.0
            # A small body is never held back by large ones.
            assert call(server, "POST", "/api/alice/tasks", {"title": "small"}, token)[0] == 201
        # The holder is gone: the next large body is let in (and refused for its 700 tasks).
        assert call(server, "POST", "/api/alice/tasks/bulk", [{"title": "x" * 100}] * 700, token)[0] == 422
