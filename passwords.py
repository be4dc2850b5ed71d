"""Passwords of the service's own accounts: Argon2 hashing, bounded, and the failed-login throttle."""

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from limits import RateLimitItemPerSecond
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from ratelimit import RateLimits
from settings import Settings


class HashersBusy(Exception):
    """Every password-hashing slot stayed taken for as long as a request may wait."""


class PasswordHasher:
    """Argon2 with the configured cost; an unknown account is checked against a dummy hash."""

    def __init__(self, settings: Settings) -> None:
        self._hash = PasswordHash(
            (
                Argon2Hasher(
                    time_cost=settings.password_hash_time_cost,
                    memory_cost=settings.password_hash_memory_kib,
                ),
            )
        )
        # Made at the first login for an unknown email, not at start-up: hashing takes the whole
        # Argon2 memory (64 MiB by default), which would otherwise double the process's peak RSS
        # for a service that may never see a password.
        self._dummy: str | None = None
        # Each hash takes its whole Argon2 memory and a worker thread: at most this many at once,
        # so a flood of logins or registrations can take neither the memory nor the threads
        # that task requests need. Waiters queue on the event loop, not in threads.
        self._slots = asyncio.Semaphore(settings.password_hash_concurrency)
        self._wait = settings.password_hash_wait_seconds

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Wait (on the event loop) for a hashing slot; HashersBusy if none frees in time."""
        try:
            await asyncio.wait_for(self._slots.acquire(), self._wait)
        except TimeoutError:
            raise HashersBusy from None
        try:
            yield
        finally:
            self._slots.release()

    def hash(self, password: str) -> str:
        return self._hash.hash(password)

    def verify(self, password: str, stored: str | None) -> tuple[bool, str | None]:
        """(valid, a new hash if the parameters changed). With no stored hash, as slow as a miss."""
        if stored is None:
            self._dummy = stored = self._dummy or self._hash.hash(secrets.token_urlsafe(16))
            self._hash.verify(password, stored)
            return False, None
        valid, new_hash = self._hash.verify_and_update(password, stored)
        return valid, new_hash


class LoginThrottle:
    """Failed logins, counted in the rate-limit storage (shared through Redis when it is):

    - per email and client address together, counted when an attempt starts (before the slow
      password check, so parallel guesses cannot overrun it) and cleared by a success: an
      attacker elsewhere cannot lock the owner's own client out;
    - per client address, over every email: one address guessing many accounts;
    - per email from every address, a larger backstop against guesses spread over many
      addresses. These two count failures only, so a busy office behind one address is not
      refused for logging in.
    """

    def __init__(self, settings: Settings, limits: RateLimits) -> None:
        window = settings.login_failure_window_seconds
        self.limits = limits
        self.email_and_client = RateLimitItemPerSecond(settings.login_max_failures_per_email, window)
        self.client = RateLimitItemPerSecond(settings.login_max_failures_per_client, window)
        self.email = RateLimitItemPerSecond(settings.login_max_failures_per_email_total, window)

    async def attempt(self, email: str, client: str) -> int | None:
        """Count a login attempt; if a limit is reached, the seconds to wait instead (a 429)."""
        wait = await self._wait(email, client)
        if wait is not None:
            self.limits.rejected("login")
        return wait

    async def _wait(self, email: str, client: str) -> int | None:
        for item, keys in ((self.client, ("login-client", client)), (self.email, ("login-email", email))):
            wait = await self.limits.exhausted(item, *keys)
            if wait is not None:
                return wait
        verdict = await self.limits.hit(self.email_and_client, "login", email, client)
        if verdict is not None and not verdict.allowed:
            return max(1, verdict.reset_seconds)
        return None

    async def failed(self, email: str, client: str) -> None:
        await self.limits.hit(self.client, "login-client", client)
        await self.limits.hit(self.email, "login-email", email)

    async def succeeded(self, email: str, client: str) -> None:
        await self.limits.clear(self.email_and_client, "login", email, client)
