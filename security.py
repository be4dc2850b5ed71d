"""Token verification (shared secret and JWKS), token minting, password hashing, login throttling.

Run `python security.py USER_ID` to print a development token signed with the configured secret.
"""

import json
import logging
import sys
import threading
import time
import urllib.request
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, delete, select

from models import RevokedToken, storable_text
from settings import ASYMMETRIC_ALGORITHMS, Settings

log = logging.getLogger("todo.security")

MAX_TOKEN_BYTES = 8 * 1024
MAX_SUBJECT_LENGTH = 255  # task.user_id
MAX_JTI_LENGTH = 64  # revoked_token.jti
MAX_JWKS_BYTES = 1024 * 1024
SWEEP_ABOVE = 10_000  # login limiter keys kept before expired ones are swept
ACCEPTED_TYPES = {None, "jwt", "at+jwt", "application/at+jwt"}
SESSION_CACHE_AUDIENCE = "better-auth:session-cache"
# What each key type may sign, for JWKS entries that do not name their `alg`.
KEY_ALGORITHMS: dict[tuple[Any, Any], set[str]] = {
    ("OKP", "Ed25519"): {"EdDSA"},
    ("EC", "P-256"): {"ES256"},
    ("EC", "P-521"): {"ES512"},
    ("RSA", None): {"RS256", "PS256"},
}


class AuthError(Exception):
    """The token is refused: 401."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class KeysUnavailable(Exception):
    """No signing keys are known and the issuer cannot be reached: 503."""


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    claims: dict[str, Any]

    @property
    def jti(self) -> str | None:
        return self.claims.get("jti")


class JWKSCache:
    """The issuer's public keys, kept in memory and fetched again only when needed.

    An unknown `kid` triggers a refetch at once, but at most one per cooldown, so a flood of
    made-up key ids cannot hammer the issuer. When the issuer is down, cached keys keep working.
    """

    def __init__(self, url: str, *, ttl: float, cooldown: float, timeout: float) -> None:
        self.url = url
        self.ttl = ttl
        self.cooldown = cooldown
        self.timeout = timeout
        self._jwks: dict[str | None, list[dict[str, Any]]] | None = None
        self._keys: dict[tuple[str | None, str], jwt.PyJWK] = {}
        self._fetched_at = 0.0
        self._failed_at = -float("inf")
        self._unknown_kid_fetch_at = -float("inf")
        self._lock = threading.Lock()

    def cached_key(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        """The key from memory if it is there and fresh; None means `resolve_key` must run."""
        if self._jwks is None or time.monotonic() - self._fetched_at > self.ttl:
            return None
        return self._keys.get((kid, alg))

    def resolve_key(self, kid: str | None, alg: str) -> jwt.PyJWK:
        """Find the key, fetching the JWKS if needed. Blocking: call it from a worker thread."""
        with self._lock:
            now = time.monotonic()
            if self._jwks is None or now - self._fetched_at > self.ttl:
                self._try_fetch(now)
            key = self._find(kid, alg)
            if key is None and now - self._unknown_kid_fetch_at >= self.cooldown:
                self._unknown_kid_fetch_at = now
                self._try_fetch(now)
                key = self._find(kid, alg)
            if key is None:
                raise AuthError("Token signing key is unknown")
            return key

    def _try_fetch(self, now: float) -> None:
        if now - self._failed_at < self.cooldown:
            if self._jwks is None:
                raise KeysUnavailable
            return
        try:
            self._jwks = self._fetch()
            self._keys.clear()
            self._fetched_at = now
        except Exception as exc:  # network, HTTP or JSON: all mean "issuer unavailable"
            self._failed_at = now
            log.warning("Could not fetch JWKS from %s: %s", self.url, exc)
            if self._jwks is None:
                raise KeysUnavailable from exc

    def _fetch(self) -> dict[str | None, list[dict[str, Any]]]:
        # The URL's scheme is limited to http(s) by the settings.
        request = urllib.request.Request(self.url, headers={"Accept": "application/json"})  # noqa: S310
        with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
            body = response.read(MAX_JWKS_BYTES + 1)
        if len(body) > MAX_JWKS_BYTES:
            raise ValueError("JWKS document too large")
        keys = json.loads(body).get("keys")
        if not isinstance(keys, list):
            raise ValueError("JWKS document has no key list")
        by_kid: dict[str | None, list[dict[str, Any]]] = {}
        for jwk in keys:
            if isinstance(jwk, dict) and jwk.get("use", "sig") == "sig" and jwk.get("kty") != "oct":
                by_kid.setdefault(jwk.get("kid"), []).append(jwk)
        return by_kid

    def _find(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        if (kid, alg) in self._keys:
            return self._keys[(kid, alg)]
        assert self._jwks is not None
        if kid is not None:
            candidates = self._jwks.get(kid, [])
        else:  # no kid: usable only if exactly one published key fits the algorithm
            candidates = [jwk for jwks in self._jwks.values() for jwk in jwks]
        matches = [jwk for jwk in candidates if _key_signs(jwk, alg)]
        if len(matches) != 1:
            return None
        try:
            key = jwt.PyJWK(matches[0], algorithm=alg)
        except jwt.PyJWTError:
            return None
        self._keys[(kid, alg)] = key
        return key


def _key_signs(jwk: dict[str, Any], alg: str) -> bool:
    if "alg" in jwk:
        return jwk["alg"] == alg
    kty = jwk.get("kty")
    crv = None if kty == "RSA" else jwk.get("crv")
    return alg in KEY_ALGORITHMS.get((kty, crv), set())


def explicit_or_base_url(explicit: str | None, base_url: str | None) -> str | list[str] | None:
    """An explicit JWT_ISSUER/JWT_AUDIENCE is matched exactly; the Better Auth base URL that
    stands in for one is matched with or without a trailing slash, a common paste difference."""
    if explicit is not None or base_url is None:
        return explicit
    bare = base_url.rstrip("/")
    return [bare, bare + "/"]


class TokenVerifier:
    """Checks a bearer token and names its user. Built once per app from the settings."""

    def __init__(self, settings: Settings) -> None:
        self.secret = settings.secret
        self.algorithms = frozenset(settings.jwt_algorithms)
        self.leeway = settings.jwt_leeway_seconds
        self.subject_claims = tuple(settings.jwt_subject_claims)
        self.hs_issuer = settings.jwt_issuer
        self.hs_audience = settings.jwt_audience
        self.jwks_issuer = explicit_or_base_url(settings.jwt_issuer, settings.better_auth_url)
        self.jwks_audience = explicit_or_base_url(settings.jwt_audience, settings.better_auth_url)
        self.jwks = (
            JWKSCache(
                settings.jwks_url,
                ttl=settings.jwks_cache_seconds,
                cooldown=settings.jwks_refetch_cooldown_seconds,
                timeout=settings.jwks_timeout_seconds,
            )
            if settings.jwks_url and self.algorithms & set(ASYMMETRIC_ALGORITHMS)
            else None
        )

    def header(self, token: str) -> dict[str, Any]:
        """The unverified header, after the checks that need no key."""
        if len(token) > MAX_TOKEN_BYTES:
            raise AuthError("Token is too large")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("Token is malformed") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise AuthError("Token algorithm is not accepted")
        if alg != "HS256" and self.jwks is None:
            raise AuthError("Token algorithm is not accepted")
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.lower() not in ACCEPTED_TYPES):
            raise AuthError("Token type is not an access token")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise AuthError("Token is malformed")
        return header

    def cached_key(self, header: dict[str, Any]) -> jwt.PyJWK | None:
        """The JWKS key for an asymmetric token if memory has it fresh; else `resolve_key` must run."""
        assert self.jwks is not None  # header() refuses asymmetric tokens without a JWKS
        return self.jwks.cached_key(header.get("kid"), header["alg"])

    def resolve_key(self, header: dict[str, Any]) -> jwt.PyJWK:
        """The JWKS key for an asymmetric token, fetching if needed. Blocking: use a worker thread."""
        assert self.jwks is not None
        return self.jwks.resolve_key(header.get("kid"), header["alg"])

    def decode(self, token: str, header: dict[str, Any], key: jwt.PyJWK | None) -> Principal:
        """Verify signature and claims. `key` is the JWKS key, or None for HS256."""
        issuer: str | list[str] | None
        audience: str | list[str] | None
        signing_key: str | jwt.PyJWK
        if header["alg"] == "HS256":
            issuer, audience, signing_key = self.hs_issuer, self.hs_audience, self.secret
        else:
            assert key is not None
            issuer, audience, signing_key = self.jwks_issuer, self.jwks_audience, key
        try:
            claims = jwt.decode(
                token,
                signing_key,
                algorithms=[header["alg"]],
                issuer=issuer,
                audience=audience,
                leeway=self.leeway,
                options={"require": ["exp"], "verify_aud": audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("Token has expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("Token is not valid yet") from None
        except jwt.InvalidIssuerError:
            raise AuthError("Token issuer is not accepted") from None
        except jwt.InvalidAudienceError:
            raise AuthError("Token audience is not accepted") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"Token has no '{exc.claim}' claim") from None
        except jwt.exceptions.InvalidSubjectError:
            raise AuthError("Token has no usable subject") from None
        except jwt.InvalidSignatureError:
            raise AuthError("Token signature is invalid") from None
        except jwt.PyJWTError:
            raise AuthError("Token is malformed") from None
        aud = claims.get("aud")
        if aud == SESSION_CACHE_AUDIENCE or (isinstance(aud, list) and SESSION_CACHE_AUDIENCE in aud):
            raise AuthError("Token type is not an access token")
        jti = claims.get("jti")
        if jti is not None and not (isinstance(jti, str) and usable_id(jti, MAX_JTI_LENGTH)):
            raise AuthError("Token has an unusable jti")
        return Principal(self.subject(claims), claims)

    def subject(self, claims: dict[str, Any]) -> str:
        for name in self.subject_claims:
            if name in claims:
                value = claims[name]
                if isinstance(value, str) and usable_id(value, MAX_SUBJECT_LENGTH):
                    return value
                break
        raise AuthError("Token has no usable subject")


def usable_id(value: str, max_length: int) -> bool:
    """An id the database can store and compare: not blank or padded, no NUL, valid Unicode."""
    if not 0 < len(value) <= max_length or value.strip() != value:
        return False
    try:
        storable_text(value)
    except ValueError:
        return False
    return True


def mint_token(
    settings: Settings, user_id: str, *, minutes: int | None = None, **claims: Any
) -> tuple[str, int]:
    """An HS256 access token for `user_id`, with a `jti` so that it can be revoked."""
    lifetime = (minutes or settings.access_token_minutes) * 60
    now = int(time.time())
    payload: dict[str, Any] = {
        "sub": user_id,
        "iat": now,
        "exp": now + lifetime,
        "jti": uuid.uuid4().hex,
        **claims,
    }
    if settings.jwt_issuer:
        payload["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        payload["aud"] = settings.jwt_audience
    return jwt.encode(payload, settings.secret, algorithm="HS256"), lifetime


def password_hasher(settings: Settings) -> PasswordHash:
    return PasswordHash(
        (
            Argon2Hasher(
                time_cost=settings.password_hash_time_cost,
                memory_cost=settings.password_hash_memory_kib,
            ),
        )
    )


class RevocationList:
    """Logged-out token ids, shared through the database and cached in memory.

    The cache is reloaded at most every `refresh_seconds`, so a logout reaches every instance
    within that time while a task request costs no extra query.
    """

    def __init__(self, engine: Engine, refresh_seconds: float) -> None:
        self.engine = engine
        self.refresh_seconds = refresh_seconds
        self._revoked: frozenset[str] = frozenset()
        self._loaded_at = -float("inf")
        self._lock = threading.Lock()

    @property
    def stale(self) -> bool:
        return time.monotonic() - self._loaded_at >= self.refresh_seconds

    def refresh(self) -> None:
        """Reload the unexpired revocations (blocking: call it from a worker thread)."""
        with self._lock:
            if not self.stale:
                return
            loaded_at = time.monotonic()
            query = select(RevokedToken.jti).where(RevokedToken.expires_at > datetime.now(UTC))
            with Session(self.engine) as session:
                self._revoked = frozenset(session.exec(query))
            self._loaded_at = loaded_at

    def is_revoked(self, jti: str) -> bool:
        return jti in self._revoked

    def revoke(self, session: Session, jti: str, expires_at: datetime) -> None:
        """Store the revocation (idempotent) and apply it here at once."""
        # Expired revocations protect nothing: logouts are rare, so drop them here.
        session.exec(delete(RevokedToken).where(col(RevokedToken.expires_at) <= datetime.now(UTC)))
        session.add(RevokedToken(jti=jti, expires_at=expires_at))
        try:
            session.commit()
        except IntegrityError:  # already revoked (a retried or concurrent logout)
            session.rollback()
        with self._lock:
            self._revoked = self._revoked | {jti}


class FailureLimiter:
    """Counts failed attempts per key in a sliding window (in memory, per process).

    An attempt is counted when it starts, before the slow password check, so that guesses sent
    in parallel cannot all slip past the limit; a successful one is forgiven afterwards.
    """

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[str, deque[float]] = {}
        self._sweep_above = SWEEP_ABOVE
        self._lock = threading.Lock()

    def attempt(self, key: str) -> int | None:
        """Count an attempt for `key`; if it is over the limit, the seconds to wait instead."""
        with self._lock:
            now = time.monotonic()
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


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python security.py USER_ID")
    print(mint_token(Settings(), sys.argv[1])[0])
