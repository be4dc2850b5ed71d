"""Rate limits with the `limits` library: per user on the API, per client address on /auth and
on requests without a valid token, and the login-failure counters, all in one storage.

The storage is in memory (one process) unless RATE_LIMIT_STORAGE_URI names Redis, which
shares every limit between processes and machines. When that storage cannot be reached the
service keeps serving without limits (fails open) and says so in its log, at most once per
outage: an outage of a shared counter must not become an outage of the API.
"""

import ipaddress
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import HTTPException, Request, status
from limits import RateLimitItem, parse
from limits.aio.storage import Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string

from settings import Settings

log = logging.getLogger("todo.ratelimit")

# After the storage fails, it is left alone this long: requests pass at once meanwhile.
STORAGE_PAUSE_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int  # until the window has room again

    def headers(self) -> list[tuple[bytes, bytes]]:
        """The RateLimit-* headers of the IETF draft, as every response carries them."""
        return [
            (b"ratelimit-limit", str(self.limit).encode()),
            (b"ratelimit-remaining", str(self.remaining).encode()),
            (b"ratelimit-reset", str(self.reset_seconds).encode()),
        ]


def open_storage(uri: str, timeout: float) -> Storage:
    """The async storage a RATE_LIMIT_STORAGE_URI names (redis://... is used as async+redis://,
    through redis-py, with `timeout` on every call). Builds the client only: nothing connects
    until the first count. ValueError (or the storage's own error) for a URI it cannot use."""
    uri = uri if uri.startswith("async+") else f"async+{uri}"
    options: dict[str, float | str | bool] = {}
    if uri.startswith("async+redis"):  # redis, rediss, redis+unix
        options = {"implementation": "redispy", "socket_timeout": timeout, "socket_connect_timeout": timeout}
    storage = storage_from_string(uri, **options)
    assert isinstance(storage, Storage), "an async storage"
    return storage


def is_shared(uri: str) -> bool:
    """Whether the storage is shared between processes (Redis), not this process's memory."""
    return not uri.removeprefix("async+").startswith("memory")


def client_key(request: Request) -> str:
    """The client's address as limits count it: an IPv6 client by its /64, which one host
    usually holds whole, so that it cannot step around a limit address by address."""
    host = request.client.host if request.client else "-"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:  # ::ffff:192.0.2.1 is 192.0.2.1
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class RateLimits:
    def __init__(self, settings: Settings, on_rejection: Callable[[str], None] | None = None) -> None:
        self.storage = open_storage(
            settings.rate_limit_storage_uri, settings.rate_limit_storage_timeout_seconds
        )
        self.strategy = SlidingWindowCounterRateLimiter(self.storage)
        self.per_user = parse(settings.rate_limit_per_user)
        self.auth_per_address = parse(settings.rate_limit_auth_per_address)
        self.unauthenticated_per_address = parse(settings.rate_limit_unauthenticated_per_address)
        self.paused_until = 0.0
        self.on_rejection = on_rejection  # told which limit refused: metrics.Metrics.rate_limited

    async def hit(self, item: RateLimitItem, *identifiers: str) -> Verdict | None:
        """Count one request against `item`; None when the storage cannot say (it passes)."""
        if time.monotonic() < self.paused_until:
            return None
        try:
            allowed = await self.strategy.hit(item, *identifiers)
            stats = await self.strategy.get_window_stats(item, *identifiers)
        except Exception as error:
            self._pause(error)
            return None
        reset = max(0, math.ceil(stats.reset_time - time.time()))
        return Verdict(allowed, item.amount, stats.remaining, reset)

    async def exhausted(self, item: RateLimitItem, *identifiers: str) -> int | None:
        """Without counting: the seconds until `item` has room again, or None if it has room now."""
        if time.monotonic() < self.paused_until:
            return None
        try:
            if await self.strategy.test(item, *identifiers):
                return None
            stats = await self.strategy.get_window_stats(item, *identifiers)
        except Exception as error:
            self._pause(error)
            return None
        return max(1, math.ceil(stats.reset_time - time.time()))

    async def clear(self, item: RateLimitItem, *identifiers: str) -> None:
        if time.monotonic() < self.paused_until:
            return
        try:
            await self.strategy.clear(item, *identifiers)
        except Exception as error:
            self._pause(error)

    def _pause(self, error: Exception) -> None:
        self.paused_until = time.monotonic() + STORAGE_PAUSE_SECONDS
        log.warning(
            "rate limit storage unreachable, serving without limits for %.0f s: %s",
            STORAGE_PAUSE_SECONDS,
            error,
        )

    def rejected(self, limit: str) -> None:
        """A request refused by `limit` (user, unauthenticated, auth, login)."""
        if self.on_rejection is not None:
            self.on_rejection(limit)

    async def check(self, request: Request, item: RateLimitItem, *identifiers: str, limit: str) -> None:
        """Count this request; 429 with Retry-After when over the limit (named `limit`)."""
        verdict = await self.hit(item, *identifiers)
        if verdict is None:
            return
        request.state.rate_limit = verdict  # written into the response by middleware.SecurityHeaders
        if not verdict.allowed:
            self.rejected(limit)
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                "Too many requests: slow down and retry after the time Retry-After says",
                headers={"Retry-After": str(max(1, verdict.reset_seconds))},
            )

    async def user(self, request: Request, user_id: str) -> None:
        await self.check(request, self.per_user, "user", user_id, limit="user")

    async def unauthenticated(self, request: Request) -> None:
        item, address = self.unauthenticated_per_address, client_key(request)
        await self.check(request, item, "anonymous", address, limit="unauthenticated")

    async def auth(self, request: Request) -> None:
        await self.check(request, self.auth_per_address, "auth", client_key(request), limit="auth")
