"""Helpers shared by the tests and the benchmarks: settings for a throwaway app, and tokens."""

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import jwt

from settings import Settings

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

    from dependencies import Services

T = TypeVar("T")
TEST_SECRET = "Vq3r8kM2pZ7xL1nB4wT9sD6fH0jC5gY8aE2uR7iO3kW1mN6bV4cX8zA5sQ0wE9rT3yU7iP2"  # noqa: S105 (random, as production wants)


def base_settings(database_url: str, **overrides: Any) -> Settings:
    """Settings for a throwaway app: no `.env`, the test secret, no start-up migration."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "better_auth_secret": TEST_SECRET,
        "environment": "test",
        "auto_migrate": False,
        # Cheap hashes keep the suite fast; production uses the Argon2 defaults.
        "password_hash_time_cost": 1,
        "password_hash_memory_kib": 1024,
        # Tests hammer a few users; the rate-limit tests set their own low limits.
        "rate_limit_per_user": "100000/minute",
        "rate_limit_auth_per_address": "100000/minute",
        "rate_limit_unauthenticated_per_address": "100000/minute",
        # A database hop is 503 after this long: a stall of the shared test machine (a checkpoint,
        # steal time) must not become one. The outage tests set their own short deadline.
        "db_statement_timeout_seconds": 30.0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


def sign(claims: dict[str, Any], *, secret: str = TEST_SECRET, lifetime: int = 900, **headers: Any) -> str:
    """An HS256 token as a frontend's shared-secret route would mint it."""
    now = int(time.time())
    payload = {"iat": now, "exp": now + lifetime, **claims}
    return jwt.encode(payload, secret, algorithm="HS256", headers=headers or None)


def services_of(client: "TestClient") -> "Services":
    """The services of the app behind a test client (its database engine, limits, hasher)."""
    return client.app.state.services  # type: ignore[attr-defined]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def run_together(call: Callable[[int], T], count: int) -> list[T]:
    """`call(0)` ... `call(count - 1)` in threads released at the same moment; their results."""
    barrier = threading.Barrier(count)
    results: list[T] = []

    def run(n: int) -> None:
        barrier.wait()
        results.append(call(n))

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results
