"""Bearer tokens: verification (shared secret and JWKS), the revocation list, minting.

Run `python tokens.py USER_ID` to print a development token signed with the configured secret.
"""

import asyncio
import base64
import json
import logging
import ssl
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import anyio
import h11
import jwt
from anyio import to_thread
from anyio.abc import ByteStream
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, delete, select

from models import USER_ID_MAX, RevokedToken
from schemas import storable_text
from settings import ASYMMETRIC_ALGORITHMS, Settings

log = logging.getLogger("todo.tokens")

MAX_TOKEN_BYTES = 8 * 1024
MAX_JTI_LENGTH = 64  # revoked_token.jti
MAX_JWKS_BYTES = 1024 * 1024
MAX_HEADER_BYTES = 64 * 1024  # of the JWKS response's status line and headers
ACCEPTED_TYPES = {None, "jwt", "at+jwt", "application/at+jwt"}
SESSION_CACHE_AUDIENCE = "better-auth:session-cache"
# The `aud` of the service's own tokens (/auth/login, `python tokens.py`): they are signed with
# the frontend's secret too, and this is what tells them apart from the frontend's HS256 tokens.
OWN_TOKEN_AUDIENCE = "todo-api:accounts"  # noqa: S105 (an audience, not a secret)
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


class KeySet:
    """The issuer's public keys, fetched from its JWKS on the event loop and kept in memory.

    Worker threads are as few as database connections, so nothing here takes one: the fetch is
    an HTTP/1.1 GET on the event loop (anyio streams, h11), and the requests that need it wait
    for it as coroutines. At most one fetch runs at a time, shared by every request waiting for
    it, and JWKS_TIMEOUT_SECONDS bounds all of it (name lookup, connect, TLS, every read), so a
    trickling issuer cannot hold requests longer. Redirects are not followed: the keys come from
    the configured address or not at all. The document is capped at MAX_JWKS_BYTES.

    Also: cached keys keep working while the issuer is down, with one fetch attempt per cooldown;
    tokens without `kid` are usable when exactly one published key fits the algorithm; keys that
    do not name their `alg` are matched by key type, so one RSA key serves RS256 and PS256.

    An unknown `kid` (a rotated key) refetches at once, at most once per cooldown. Requests that
    arrive while that refetch is under way wait for it; afterwards, for the rest of the cooldown,
    a kid that is not in the keys is refused at once: no fetch, and no wait on one under way.
    """

    def __init__(self, url: str, *, ttl: float, cooldown: float, timeout: float) -> None:
        self.url = url
        self.ttl = ttl
        self.cooldown = cooldown
        self.timeout = timeout
        self._published: list[dict[str, Any]] | None = None  # the last good document's keys
        self._keys: dict[tuple[str | None, str], jwt.PyJWK] = {}  # built from _published
        self._fetched_at = -float("inf")  # when the fetch that gave _published started
        self._started_at = -float("inf")  # when the last fetch (good or not) started
        self._failed_at = -float("inf")  # when the last failed fetch ended
        self._unknown_kid_fetch_at = -float("inf")
        self._fetch: _Fetch | None = None  # the one under way

    def cached_key(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        """The key from memory if it is there and fresh; None means `signing_key` must run."""
        if not self._fresh(time.monotonic()):
            return None
        return self._keys.get((kid, alg))

    async def signing_key(self, kid: str | None, alg: str) -> jwt.PyJWK:
        """Find the key, fetching the JWKS if needed (AuthError if unknown, KeysUnavailable if
        there are no keys and the issuer cannot be reached)."""
        arrived = time.monotonic()
        key = self._find(kid, alg)
        if key is None and self._refusing(arrived):
            raise AuthError("Token signing key is unknown")
        if not self._fresh(arrived):
            await self._refresh(arrived)
            key = self._find(kid, alg)
        if self._published is None:
            raise KeysUnavailable
        if key is None and self._may_refetch(arrived):
            await self._refresh(arrived, for_unknown_kid=True)
            key = self._find(kid, alg)
        if key is None:
            raise AuthError("Token signing key is unknown")
        return key

    def _fresh(self, now: float) -> bool:
        return self._published is not None and now - self._fetched_at < self.ttl

    def _refusing(self, now: float) -> bool:
        """Whether an unknown kid is refused now without a fetch or a wait: an unknown kid made
        the service refetch within the cooldown, and that refetch is over."""
        under_way = self._fetch is not None and self._fetch.for_unknown_kid
        return not under_way and now - self._unknown_kid_fetch_at < self.cooldown

    def _may_refetch(self, arrived: float) -> bool:
        """Whether a kid missing from the keys is worth a (shared) refetch."""
        if self._fetch is not None and self._fetch.for_unknown_kid:
            return True  # one is under way: its answer may have the key
        now = time.monotonic()
        return (
            now - self._unknown_kid_fetch_at >= self.cooldown
            and now - self._failed_at >= self.cooldown
            # A fetch that started after the token arrived has already answered it.
            and self._started_at < arrived
        )

    async def _refresh(self, now: float, *, for_unknown_kid: bool = False) -> None:
        """Wait for the fetch under way, or start one (not within the cooldown of a failure,
        unless an unknown kid asks: `_may_refetch` checked that)."""
        if self._fetch is None:
            if not for_unknown_kid and now - self._failed_at < self.cooldown:
                return
            self._started_at = time.monotonic()
            task = asyncio.get_running_loop().create_task(self._run_fetch(self._started_at))
            self._fetch = _Fetch(task)
        if for_unknown_kid and not self._fetch.for_unknown_kid:
            self._fetch.for_unknown_kid = True
            self._unknown_kid_fetch_at = self._started_at
        # Shielded: a waiting request that is cancelled (its client left) leaves the fetch to
        # the others. The task never raises: its outcome is in the state it leaves.
        await asyncio.shield(self._fetch.task)

    async def _run_fetch(self, started_at: float) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                body = await self._download()
            published = usable_keys(body)
        except Exception as exc:  # network, TLS, HTTP, timeout, JSON, no usable key: "unavailable"
            self._failed_at = time.monotonic()
            reason = f"no answer within {self.timeout:g} s" if isinstance(exc, TimeoutError) else exc
            log.warning("Could not fetch JWKS from %s: %s", self.url, reason)
        else:
            self._published = published
            self._keys.clear()
            self._fetched_at = started_at
        finally:
            self._fetch = None

    async def _download(self) -> bytes:
        """GET the JWKS document: a 2xx body of at most MAX_JWKS_BYTES, anything else an error."""
        url = urlsplit(self.url)
        host = url.hostname
        if url.scheme not in ("http", "https") or not host:
            raise ValueError("the JWKS URL is not an http(s) URL")
        tls = url.scheme == "https"
        port = url.port or (443 if tls else 80)
        target = (url.path or "/") + (f"?{url.query}" if url.query else "")
        stream: ByteStream
        if tls:  # a fresh default context: the system's CAs (or SSL_CERT_FILE's), hostname checked
            context = ssl.create_default_context()
            stream = await anyio.connect_tcp(
                host, port, ssl_context=context, tls_hostname=host, tls_standard_compatible=False
            )
        else:
            stream = await anyio.connect_tcp(host, port)
        async with stream:
            http = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEADER_BYTES)
            request = h11.Request(
                method="GET",
                target=target,
                headers=[
                    ("Host", url.netloc.rpartition("@")[2]),
                    ("Accept", "application/json"),
                    ("User-Agent", "todo-api"),
                    ("Connection", "close"),
                ],
            )
            await stream.send(http.send(request) + http.send(h11.EndOfMessage()))
            body = bytearray()
            while True:
                event = http.next_event()
                if event is h11.NEED_DATA:
                    try:
                        data = await stream.receive(64 * 1024)
                    except anyio.EndOfStream:
                        data = b""
                    http.receive_data(data)
                elif isinstance(event, h11.Response):
                    if not 200 <= event.status_code < 300:
                        # A redirect is not followed: the keys come from the URL configured.
                        location = dict(event.headers).get(b"location", b"").decode("latin-1")
                        moved = f" (redirect to {location}, not followed)" if location else ""
                        raise ValueError(f"HTTP {event.status_code}{moved}")
                elif isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > MAX_JWKS_BYTES:
                        raise ValueError("JWKS document too large")
                elif isinstance(event, h11.EndOfMessage):
                    return bytes(body)
                elif isinstance(event, h11.ConnectionClosed):  # pragma: no cover (h11 raises first)
                    raise ValueError("connection closed before the end of the document")

    def _find(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        if (kid, alg) in self._keys:
            return self._keys[(kid, alg)]
        if self._published is None:
            return None
        # Without a kid, a key is usable only if exactly one published key fits the algorithm.
        candidates = [jwk for jwk in self._published if kid is None or jwk.get("kid") == kid]
        matches = [jwk for jwk in candidates if _key_signs(jwk, alg)]
        if len(matches) != 1:
            return None
        try:
            key = jwt.PyJWK(matches[0], algorithm=alg)
        except jwt.PyJWTError:
            return None
        self._keys[(kid, alg)] = key
        return key


@dataclass(slots=True)
class _Fetch:
    task: "asyncio.Task[None]"
    for_unknown_kid: bool = False  # some request waits for it to find a kid the keys lack


def usable_keys(document: bytes) -> list[dict[str, Any]]:
    """The signing keys of a JWKS document; ValueError if it is not one or none is usable."""
    parsed = json.loads(document)
    keys = parsed.get("keys") if isinstance(parsed, dict) else None
    if not isinstance(keys, list):
        raise ValueError("JWKS document has no key list")
    published = [
        jwk
        for jwk in keys
        if isinstance(jwk, dict) and jwk.get("use", "sig") == "sig" and jwk.get("kty") != "oct"
    ]
    # One usable key is enough to accept the document; the others are built when a token names
    # them. (Building them all here, on the event loop, could take long for a large document.)
    if not any(_usable(jwk) for jwk in published):
        raise ValueError("JWKS document has no usable signing key")
    return published


def _usable(jwk: dict[str, Any]) -> bool:
    try:
        jwt.PyJWK(jwk)
    except jwt.PyJWTError:
        return False
    return True


def _key_signs(jwk: dict[str, Any], alg: str) -> bool:
    if "alg" in jwk:
        return bool(jwk["alg"] == alg)
    kty = jwk.get("kty")
    crv = None if kty == "RSA" else jwk.get("crv")
    return alg in KEY_ALGORITHMS.get((kty, crv), set())


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

    def add(self, jti: str) -> None:
        """Apply a revocation stored elsewhere (another instance's logout) here at once."""
        with self._lock:
            self._revoked = self._revoked | {jti}

    def expire(self) -> None:
        """Reload from the database at the next token check (revocations may have been missed)."""
        self._loaded_at = -float("inf")

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


class RevocationFeed:
    """Each logout, pushed at once to every instance that shares the Redis of the rate limits.

    The database stays the record of revocations, and each instance's periodic reload
    (REVOCATION_REFRESH_SECONDS) the fallback: this only makes a logout reach the others within
    milliseconds. While Redis is unreachable the feed waits and retries; once it is back, the
    next token check reloads from the database whatever was published meanwhile.
    """

    CHANNEL = "todo:revoked-tokens"
    RETRY_SECONDS = 1.0

    def __init__(self, url: str, revocations: RevocationList, timeout: float) -> None:
        from redis.asyncio import Redis  # only with a Redis storage configured

        url = url.removeprefix("async+").replace("redis+unix://", "unix://", 1)
        self.revocations = revocations
        # The health check pings a quiet subscription, so that a dead connection is noticed.
        self.redis = Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=30
        )
        self.listening = asyncio.Event()  # set while subscribed

    async def publish(self, jti: str) -> None:
        try:
            await self.redis.publish(self.CHANNEL, jti)
        except Exception as error:  # the other instances learn it at their next reload instead
            log.warning("could not publish a revocation to Redis: %s", error)

    async def listen(self) -> None:
        """Apply the other instances' revocations as they come, until cancelled."""
        complained = False
        while True:
            try:
                async with self.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self.CHANNEL)
                    self.revocations.expire()  # what was published before this subscription
                    self.listening.set()
                    complained = False
                    while True:
                        message = await pubsub.get_message(timeout=30.0)
                        if message is not None and isinstance(message.get("data"), bytes):
                            self.revocations.add(message["data"].decode("utf-8", "replace"))
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self.listening.clear()
                if not complained:
                    log.warning("revocation feed: Redis unreachable, retrying: %s", error)
                    complained = True
                await asyncio.sleep(self.RETRY_SECONDS)

    async def close(self) -> None:
        await self.redis.aclose()


def explicit_or_base_url(explicit: str | None, base_url: str | None) -> str | list[str] | None:
    """An explicit JWT_ISSUER/JWT_AUDIENCE is matched exactly; the Better Auth base URL that
    stands in for one is matched with or without a trailing slash, a common paste difference."""
    if explicit is not None or base_url is None:
        return explicit
    bare = base_url.rstrip("/")
    return [bare, bare + "/"]


class TokenVerifier:
    """Answers one question, `verify(token) -> Principal`: who is this, or why not (AuthError).

    Built once per app. Every token is checked on the event loop with no thread hop, a JWKS
    fetch included (see KeySet); only a revocation reload takes a worker thread. A shared-secret
    token never waits for a JWKS fetch.
    """

    def __init__(self, settings: Settings, revocations: RevocationList) -> None:
        self.revocations = revocations
        # Prepared once: passed as text, PyJWT would check and encode the secret on every call.
        secret = base64.urlsafe_b64encode(settings.secret.encode()).rstrip(b"=").decode()
        self.secret_key = jwt.PyJWK({"kty": "oct", "k": secret}, algorithm="HS256")
        self.algorithms = frozenset(settings.jwt_algorithms)
        self.leeway = settings.jwt_leeway_seconds
        self.subject_claims = tuple(settings.jwt_subject_claims)
        self.hs_issuer = settings.jwt_issuer
        # With JWT_AUDIENCE set, HS256 tokens are bound to an audience: the frontend's must
        # carry it, the service's own carry theirs. Unset, `aud` is not checked (Better Auth's
        # shared-secret route sets none), and own tokens pass like any other.
        self.hs_audience = [settings.jwt_audience, OWN_TOKEN_AUDIENCE] if settings.jwt_audience else None
        self.jwks_issuer = explicit_or_base_url(settings.jwt_issuer, settings.better_auth_url)
        self.jwks_audience = explicit_or_base_url(settings.jwt_audience, settings.better_auth_url)
        self.keys = (
            KeySet(
                settings.jwks_url,
                ttl=settings.jwks_cache_seconds,
                cooldown=settings.jwks_refetch_cooldown_seconds,
                timeout=settings.jwks_timeout_seconds,
            )
            if settings.jwks_url and self.algorithms & set(ASYMMETRIC_ALGORITHMS)
            else None
        )

    async def verify(self, token: str) -> Principal:
        """The token's user, or AuthError (401) / KeysUnavailable (503)."""
        header = self.header(token)
        key = None
        if header["alg"] != "HS256":
            assert self.keys is not None  # header() refuses asymmetric tokens without a JWKS
            kid, alg = header.get("kid"), header["alg"]
            key = self.keys.cached_key(kid, alg) or await self.keys.signing_key(kid, alg)
        principal = self.decode(token, header, key)
        if principal.jti is not None:
            if self.revocations.stale:
                await to_thread.run_sync(self.revocations.refresh)
            if self.revocations.is_revoked(principal.jti):
                raise AuthError("Token has been revoked")
        return principal

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
        if alg != "HS256" and self.keys is None:
            raise AuthError("Token algorithm is not accepted")
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.lower() not in ACCEPTED_TYPES):
            raise AuthError("Token type is not an access token")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise AuthError("Token is malformed")
        return header

    def decode(self, token: str, header: dict[str, Any], key: jwt.PyJWK | None) -> Principal:
        """Verify signature and claims. `key` is the JWKS key, or None for HS256."""
        issuer: str | list[str] | None
        audience: str | list[str] | None
        signing_key: jwt.PyJWK
        if header["alg"] == "HS256":
            issuer, audience, signing_key = self.hs_issuer, self.hs_audience, self.secret_key
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
        except jwt.exceptions.InvalidJTIError:
            raise AuthError("Token has an unusable jti") from None
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
                if isinstance(value, str) and usable_id(value, USER_ID_MAX):
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
    """An HS256 access token for `user_id`, with a `jti` so that it can be revoked.

    Its `aud` is OWN_TOKEN_AUDIENCE, never JWT_AUDIENCE: whatever accepts the frontend's tokens
    by their audience (this service's checks included) can tell these apart.
    """
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
    payload["aud"] = OWN_TOKEN_AUDIENCE
    return jwt.encode(payload, settings.secret, algorithm="HS256"), lifetime


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python tokens.py USER_ID")
    print(mint_token(Settings(), sys.argv[1])[0])
