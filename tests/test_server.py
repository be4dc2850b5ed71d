"""The server as `make run` starts it: bounded request heads, slow clients cut off, normal ones served.

These talk to the real process over sockets, since the limits live in the HTTP protocol
(server.py), below the app that the other tests reach through TestClient.
"""

import http.client
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest

from testkit import bearer, sign
from testkit.server import RunningServer, make_run

HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
MAX_HEADER_BYTES = 64 * 1024  # the defaults, which these tests keep
MAX_FIELD_BYTES = 16 * 1024
MAX_HEADERS = 100
HOST = b"Host: 127.0.0.1\r\n"
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    env = {
        "HTTP_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
        "HTTP_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
    }
    with make_run(tmp_path_factory.mktemp("server"), env) as running:
        yield running


def connect(server: RunningServer, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection((server.host, server.port), timeout=timeout)


def read_to_close(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a reset counts as a close)."""
    received = b""
    try:
        while data := sock.recv(65536):
            received += data
    except (ConnectionResetError, TimeoutError):
        pass
    return received


def exchange(server: RunningServer, request: bytes) -> bytes:
    """Send a request on a connection of its own and return the answer, up to the close."""
    with connect(server) as sock:
        with suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        return read_to_close(sock)


def status(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:200]
    return int(response.split(b" ", 2)[1])


def detail(response: bytes) -> str:
    message: str = json.loads(response.split(b"\r\n\r\n", 1)[1])["detail"]
    return message


def get_health(server: RunningServer) -> float:
    """Seconds a GET /health took on a new connection (it must answer 200)."""
    started = time.monotonic()
    connection = http.client.HTTPConnection(server.host, server.port, timeout=5)
    try:
        connection.request("GET", "/health")
        assert connection.getresponse().status == 200
    finally:
        connection.close()
    return time.monotonic() - started


def seconds_until_closed(sock: socket.socket, started: float, give_up: float) -> tuple[float | None, bytes]:
    """Seconds from `started` until the server closed `sock` (None if it had not after `give_up`
    seconds), and what it sent meanwhile."""
    received = b""
    while time.monotonic() - started < give_up:
        readable, _, _ = select.select([sock], [], [], 0.05)
        if readable:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                return time.monotonic() - started, received
            received += data
    return None, received


class Prober:
    """GET /health on new connections, over and over, in a thread, while the block runs."""

    def __init__(self, server: RunningServer) -> None:
        self.server = server
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.latencies.append(get_health(self.server))
            time.sleep(0.02)

    def __enter__(self) -> "Prober":
        self._thread.start()
        time.sleep(0.1)
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.1)
        self._stop.set()
        self._thread.join()


# --- oversized heads ---------------------------------------------------------------------------


def flood_header(server: RunningServer, size: int, give_up: float = 3.0) -> tuple[float | None, bytes]:
    """Stream a request head with one header of `size` bytes, in 64 KiB writes, reading between
    them. Seconds from passing the limit until the server answered or closed (None if it did
    neither within `give_up`), and what it answered."""
    head = b"GET /health HTTP/1.1\r\n" + HOST + b"X-Flood: "
    chunk = b"a" * 65536
    total = len(head) + size
    sent = 0
    pending = memoryview(head)
    over_at: float | None = None
    with connect(server) as sock:
        sock.setblocking(False)
        while True:  # until the server answers or closes, or it is time to give up
            if over_at is not None and time.monotonic() - over_at > give_up:
                return None, b""
            writing = [sock] if sent < total else []
            readable, writable, _ = select.select([sock], writing, [], 0.05)
            if readable:
                break
            if writable:
                if not pending:
                    pending = memoryview(chunk)[: total - sent]
                try:
                    count = sock.send(pending)
                except (BrokenPipeError, ConnectionResetError):
                    break
                pending = pending[count:]
                sent += count
                if over_at is None and sent > MAX_HEADER_BYTES:
                    over_at = time.monotonic()
        refused_after = time.monotonic() - over_at if over_at is not None else 0.0
        sock.setblocking(True)
        sock.settimeout(2)
        return refused_after, read_to_close(sock)


def test_a_96_mb_header_is_refused_within_a_second_and_others_are_served(server: RunningServer) -> None:
    memory_before = server.rss_bytes()
    with Prober(server) as prober:
        refused_after, answer = flood_header(server, 96 * 1024 * 1024)
    assert refused_after is not None, "the 96 MB header was neither refused nor cut off"
    assert refused_after < 1.0
    if answer:  # a 431, unless the connection was reset before it could be read
        assert status(answer) == 431
        assert b"connection: close" in answer.lower()
        assert "at most 65536 bytes" in detail(answer)
    assert prober.latencies, "no request was served during the flood"
    assert max(prober.latencies) < 1.0, prober.latencies
    assert server.rss_bytes() - memory_before < 20 * 1024 * 1024


def test_several_huge_headers_at_once_leave_memory_flat(server: RunningServer) -> None:
    memory_before = server.rss_bytes()
    results: list[float | None] = []
    floods = [
        threading.Thread(target=lambda: results.append(flood_header(server, 8 * 1024 * 1024)[0]))
        for _ in range(8)
    ]
    with Prober(server) as prober:
        for flood in floods:
            flood.start()
        for flood in floods:
            flood.join()
    assert len(results) == 8
    assert all(after is not None and after < 1.0 for after in results), results
    assert max(prober.latencies) < 1.0, prober.latencies
    assert server.rss_bytes() - memory_before < 20 * 1024 * 1024


def test_too_many_header_fields_get_431(server: RunningServer) -> None:
    fields = b"".join(b"X-Field-%d: v\r\n" % n for n in range(1000))
    answer = exchange(server, b"GET /health HTTP/1.1\r\n" + HOST + fields + b"\r\n")
    assert status(answer) == 431
    assert detail(answer) == f"Too many request header fields: at most {MAX_HEADERS}"


@pytest.mark.parametrize(
    "field",
    [b"X-Big: " + b"a" * (MAX_FIELD_BYTES + 1), b"X-" + b"n" * MAX_FIELD_BYTES + b": v"],
    ids=["value", "name"],
)
def test_a_header_field_over_the_limit_gets_431(server: RunningServer, field: bytes) -> None:
    answer = exchange(server, b"GET /health HTTP/1.1\r\n" + HOST + field + b"\r\n\r\n")
    assert status(answer) == 431
    assert "A request header field is too large" in detail(answer)


def test_a_long_request_line_counts_towards_the_head(server: RunningServer) -> None:
    answer = exchange(server, b"GET /health?q=" + b"a" * MAX_HEADER_BYTES + b" HTTP/1.1\r\n" + HOST + b"\r\n")
    assert status(answer) == 431


def test_a_browser_sized_request_is_served(server: RunningServer) -> None:
    """30 header fields, a 4 KiB cookie and the largest token the app reads: all under the limits."""
    headers = {f"X-Custom-{n}": "v" * 40 for n in range(28)}
    headers["Cookie"] = "session=" + "c" * 4096
    connection = http.client.HTTPConnection(server.host, server.port, timeout=5)
    connection.request("GET", "/health", headers=headers)
    assert connection.getresponse().read() == b'{"status":"ok"}'
    # A token just over the 8 KiB the app reads reaches it, which says so rather than a 431.
    connection.request("GET", "/api/alice/tasks", headers={**headers, **bearer("a" * 8193)})
    response = connection.getresponse()
    assert response.status == 401
    assert json.loads(response.read())["detail"] == "Token is too large"
    connection.close()


def test_oversized_chunked_trailers_close_the_connection(server: RunningServer) -> None:
    head = b"POST /auth/register HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n"
    head += b"Content-Type: application/json\r\n\r\n2\r\n{}\r\n0\r\nX-Trailer: "
    with connect(server) as sock:
        sock.sendall(head)
        started = time.monotonic()
        try:
            for _ in range(10):
                sock.sendall(b"t" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass
        closed_after, _ = seconds_until_closed(sock, started, give_up=BODY_TIMEOUT - 0.5)
    assert closed_after is not None, "the connection was still open"
    assert closed_after < 1.0


# --- slow clients ------------------------------------------------------------------------------


def test_a_head_sent_byte_by_byte_is_cut_off_after_the_header_timeout(server: RunningServer) -> None:
    head = b"GET /health HTTP/1.1\r\n" + HOST + b"X-Slow: " + b"a" * 100
    with connect(server) as sock:
        started = time.monotonic()
        closed_after = None
        for n, byte in enumerate(head):
            if n == 3:  # meanwhile, other clients are served as usual
                assert get_health(server) < 1.0
            try:
                sock.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed_after = time.monotonic() - started
                break
            waited, received = seconds_until_closed(sock, time.monotonic(), give_up=0.2)
            if waited is not None:
                closed_after = time.monotonic() - started
                assert received == b""
                break
            if time.monotonic() - started > HEADER_TIMEOUT + 1.5:
                break
    assert closed_after is not None, "the connection was still open"
    assert HEADER_TIMEOUT - 0.5 <= closed_after <= HEADER_TIMEOUT + 1.0


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(server: RunningServer) -> None:
    with connect(server) as sock:
        closed_after, received = seconds_until_closed(sock, time.monotonic(), give_up=HEADER_TIMEOUT + 1.5)
    assert closed_after is not None, "the connection was still open"
    assert received == b""
    assert HEADER_TIMEOUT - 0.5 <= closed_after <= HEADER_TIMEOUT + 1.0


def test_a_stalled_body_is_cut_off_after_the_body_timeout(server: RunningServer) -> None:
    head = b"POST /auth/register HTTP/1.1\r\n" + HOST
    head += b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    with connect(server) as sock:
        sock.sendall(head + b'{"email": ')
        closed_after, received = seconds_until_closed(sock, time.monotonic(), give_up=BODY_TIMEOUT + 1.5)
    assert closed_after is not None, "the connection was still open"
    assert received == b""
    assert BODY_TIMEOUT - 0.5 <= closed_after <= BODY_TIMEOUT + 1.0


def test_a_slow_but_steady_body_is_read_whole(server: RunningServer) -> None:
    """Longer in total than the body timeout, never idle that long: served."""
    body = json.dumps({"email": "steady@example.com", "password": "correct horse", "name": "Steady"}).encode()
    head = b"POST /auth/register HTTP/1.1\r\n" + HOST + b"Content-Type: application/json\r\n"
    head += b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
    pieces = [body[n : n + len(body) // 6 + 1] for n in range(0, len(body), len(body) // 6 + 1)]
    started = time.monotonic()
    with connect(server) as sock:
        sock.sendall(head)
        for piece in pieces:
            time.sleep(BODY_TIMEOUT / 4)
            sock.sendall(piece)
        answer = read_to_close(sock)
    assert time.monotonic() - started > BODY_TIMEOUT
    assert status(answer) == 201


def test_normal_writes_with_bodies_are_served(server: RunningServer) -> None:
    connection = http.client.HTTPConnection(server.host, server.port, timeout=5)
    account = {"email": "ada@example.com", "password": "correct horse", "name": "Ada"}
    connection.request("POST", "/auth/register", json.dumps(account), JSON)
    response = connection.getresponse()
    response.read()
    assert response.status == 201
    token = sign({"sub": "alice"}, secret=server.secret)
    task = json.dumps({"title": "Buy milk", "description": "x" * 900})
    connection.request("POST", "/api/alice/tasks", task, {**bearer(token), **JSON})
    response = connection.getresponse()
    assert response.status == 201
    assert json.loads(response.read())["title"] == "Buy milk"
    connection.close()


# --- keep-alive --------------------------------------------------------------------------------


def test_a_keep_alive_connection_outlives_the_timeouts(server: RunningServer) -> None:
    """Requests on one connection, spread over longer than both timeouts, bodies included."""
    token = sign({"sub": "bob"}, secret=server.secret)
    connection = http.client.HTTPConnection(server.host, server.port, timeout=5)
    connection.connect()
    sock = connection.sock
    started = time.monotonic()
    for n in range(6):
        if n % 2:
            connection.request("GET", "/health")
        else:
            body = json.dumps({"title": f"task {n}"})
            connection.request("POST", "/api/bob/tasks", body, {**bearer(token), **JSON})
        response = connection.getresponse()
        response.read()
        assert response.status in (200, 201)
        assert connection.sock is sock, "the connection was closed between requests"
        time.sleep(0.6)
    assert time.monotonic() - started > max(HEADER_TIMEOUT, BODY_TIMEOUT) + 1
    connection.close()


def test_pipelined_requests_are_all_answered(server: RunningServer) -> None:
    request = b"GET /health HTTP/1.1\r\n" + HOST + b"\r\n"
    last = b"GET /health HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n"
    answer = exchange(server, request * 5 + last)
    assert answer.count(b"HTTP/1.1 200 OK") == 6


def test_the_server_runs_the_bounded_protocol(server: RunningServer) -> None:
    command = Path(f"/proc/{server.pid}/cmdline").read_bytes().split(b"\0")
    assert b"server:BoundedHttpToolsProtocol" in command


# --- proxies --------------------------------------------------------------------------------


def forwarded(server: RunningServer, client: str) -> http.client.HTTPResponse:
    """A task create as a proxy would pass it on: for `client`, received over HTTPS."""
    connection = http.client.HTTPConnection(server.host, server.port, timeout=5)
    headers = {
        **bearer(sign({"sub": "alice"}, secret=server.secret)),
        **JSON,
        "X-Forwarded-For": client,
        "X-Forwarded-Proto": "https",
    }
    connection.request("POST", "/api/alice/tasks", body=json.dumps({"title": "t"}), headers=headers)
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


@pytest.mark.parametrize("trusted", [True, False], ids=["from-a-trusted-proxy", "from-anyone-else"])
def test_forwarded_headers_count_only_from_the_proxies_trusted(tmp_path: Path, trusted: bool) -> None:
    # uvicorn trusts FORWARDED_ALLOW_IPS (--forwarded-allow-ips); the test client is 127.0.0.1.
    env = {
        "FORWARDED_ALLOW_IPS": "127.0.0.1" if trusted else "192.0.2.10",
        "RATE_LIMIT_UNAUTHENTICATED_PER_ADDRESS": "1/day",
    }
    with make_run(tmp_path, env) as running:
        response = forwarded(running, "203.0.113.5")
        assert response.status == 201
        location = response.getheader("Location") or ""
        hsts = response.getheader("Strict-Transport-Security")
        if trusted:  # the proxy says the client came over HTTPS: links and HSTS follow
            assert location.startswith("https://127.0.0.1:")
            assert hsts is not None and "max-age=" in hsts
        else:  # a client cannot claim HTTPS, or another address, for itself
            assert location.startswith("http://127.0.0.1:")
            assert hsts is None

        def anonymous(client: str) -> int:
            connection = http.client.HTTPConnection(running.host, running.port, timeout=5)
            connection.request("GET", "/api/alice/tasks", headers={"X-Forwarded-For": client})
            status = connection.getresponse().status
            connection.close()
            return status

        # One unauthenticated request a day per client address: two forwarded clients are
        # two addresses only when the proxy is trusted to say so.
        assert anonymous("198.51.100.1") == 401
        assert anonymous("198.51.100.2") == (401 if trusted else 429)
