"""The service as `make run` starts it, in processes of their own: for tests of the real server
(its protocol limits, floods, several instances on one database or one Redis)."""

import http.client
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READY_SECONDS = 30.0
STOP_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class RunningServer:
    host: str
    port: int
    pid: int  # the uvicorn process itself (make's child), for its memory and its signals
    secret: str  # BETTER_AUTH_SECRET: sign tokens for it with testkit.sign(..., secret=...)
    log: Path  # what make and uvicorn printed

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def rss_bytes(self) -> int:
        """The server's resident memory now (VmRSS)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmRSS for process {self.pid}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, nearest first (from /proc, Linux only)."""
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop(0)
        try:
            tasks = list(Path(f"/proc/{parent}/task").iterdir())
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                children = [int(child) for child in (task / "children").read_text().split()]
            except (FileNotFoundError, ProcessLookupError):
                continue
            found.extend(children)
            pending.extend(children)
    return found


def uvicorn_pid(make_pid: int) -> int | None:
    for pid in descendants(make_pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"uvicorn" in cmdline and b"main:app" in cmdline:
            return pid
    return None


def answers(host: str, port: int) -> bool:
    connection = http.client.HTTPConnection(host, port, timeout=1)
    try:
        connection.request("GET", "/health")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def stop(process: "subprocess.Popen[bytes]") -> None:
    """SIGTERM to the whole process group (make and uvicorn), SIGKILL if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(STOP_SECONDS)
            return
        except subprocess.TimeoutExpired:
            continue


def run_command(port: int) -> list[str]:
    return ["make", "--no-print-directory", "run", "HOST=127.0.0.1", f"PORT={port}"]


def run_environment(workdir: Path, env: Mapping[str, str] | None, secret: str) -> dict[str, str]:
    """What `make run` is started with: this process's environment, the data in
    `workdir/todo.db`, `secret`, limits on addresses out of the way, cheap hashing, then `env`."""
    variables = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{workdir / 'todo.db'}",
        "ENVIRONMENT": "test",
        "BETTER_AUTH_SECRET": secret,
        "DEV_SECRET_FILE": str(workdir / ".dev-secret"),
        "RATE_LIMIT_AUTH_PER_ADDRESS": "100000/minute",
        "RATE_LIMIT_UNAUTHENTICATED_PER_ADDRESS": "100000/minute",
        "PASSWORD_HASH_TIME_COST": "1",
        "PASSWORD_HASH_MEMORY_KIB": "1024",
        **(env or {}),
    }
    variables.pop("MAKEFLAGS", None)  # a make above the tests must not steer this one
    return variables


@contextmanager
def make_run(
    workdir: Path, env: Mapping[str, str] | None = None, *, secret: str | None = None
) -> Iterator[RunningServer]:
    """`make run` on a free port of 127.0.0.1, until the block ends.

    By default the data is in `workdir/todo.db`, the secret is a fresh random one, limits on
    addresses are out of the way and hashing is cheap; `env` adds or overrides variables. It
    runs in the repository (a `.env` there applies to what is not set here) in a session of its
    own, and the whole group is stopped at the end.
    """
    port = free_port()
    secret = secret or secrets.token_urlsafe(48)
    log = workdir / f"server-{port}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(  # noqa: S603 (our own command, no shell)
            run_command(port),
            cwd=ROOT,
            env=run_environment(workdir, env, secret),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + READY_SECONDS
        pid = None
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"make run exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            pid = pid or uvicorn_pid(process.pid)
            if pid is not None and answers("127.0.0.1", port):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"make run not answering within {READY_SECONDS:g} s:\n{log.read_text()[-3000:]}"
                )
            time.sleep(0.1)
        yield RunningServer(host="127.0.0.1", port=port, pid=pid, secret=secret, log=log)
    finally:
        stop(process)


@contextmanager
def make_runs(
    workdir: Path, count: int, env: Mapping[str, str] | None = None
) -> Iterator[list[RunningServer]]:
    """`count` instances of `make run` on one database and one secret, started one after the
    other (each migrates first), until the block ends."""
    secret = secrets.token_urlsafe(48)
    with ExitStack() as stack:
        yield [stack.enter_context(make_run(workdir, env, secret=secret)) for _ in range(count)]
