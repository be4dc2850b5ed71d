"""Passwords of the service's own accounts: Argon2 hashing and the failed-login throttle."""

import secrets
import threading
import time
from collections import deque
from collections.abc import Callable

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from settings import Settings

SWEEP_ABOVE = 10_000  # limiter keys kept before expired ones are swept


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


class FailureLimiter:
    """Counts failed attempts per key in a sliding window (in memory, per process).

    An attempt is counted when it starts, before the slow password check, so that guesses sent
    in parallel cannot all slip past the limit; a successful one is forgiven afterwards.
    """

    def __init__(self, limit: int, window: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._sweep_above = SWEEP_ABOVE
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._failures)

    def attempt(self, key: str) -> int | None:
        """Count an attempt for `key`; if it is over the limit, the seconds to wait instead."""
        with self._lock:
            now = self.clock()
            failures = self._prune(key, now)
            if len(failures) >= self.limit:
                return max(1, int(failures[0] + self.window - now) + 1)
            failures.append(now)
            return None

    def forgive(self, key: str) -> None:
        """Take back the last attempt counted for `key` (it succeeded, or was not made)."""
        with self._lock:
            failures = self._failures.get(key)
            if failures:
                failures.pop()

    def reset(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)

    def _prune(self, key: str, now: float) -> deque[float]:
        if len(self._failures) > self._sweep_above:
            self._sweep(now)
        failures = self._failures.setdefault(key, deque())
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        return failures

    def _sweep(self, now: float) -> None:
        """Drop keys with no failure left in the window: bounds memory under a flood of keys.

        The next sweep waits until the table has doubled, so the cost stays constant per call.
        """
        cutoff = now - self.window
        for key in [k for k, v in self._failures.items() if not v or v[-1] <= cutoff]:
            del self._failures[key]
        self._sweep_above = max(SWEEP_ABOVE, 2 * len(self._failures))


class LoginThrottle:
    """Failed logins limited per email and per client address, within one sliding window."""

    def __init__(self, settings: Settings) -> None:
        window = settings.login_failure_window_seconds
        self.emails = FailureLimiter(settings.login_max_failures_per_email, window)
        self.clients = FailureLimiter(settings.login_max_failures_per_client, window)

    def attempt(self, email: str, client: str) -> int | None:
        """Count a login attempt; if either limit is reached, the seconds to wait instead."""
        wait = self.emails.attempt(email)
        if wait is None:
            wait = self.clients.attempt(client)
            if wait is not None:  # refused for the client: the email's attempt was not made
                self.emails.forgive(email)
        return wait

    def succeeded(self, email: str, client: str) -> None:
        self.emails.reset(email)
        self.clients.forgive(client)
