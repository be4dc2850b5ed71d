"""Bearer tokens: verification (shared secret and JWKS), the revocation list, minting.

Run `python tokens.py USER_ID` to print a development token signed with the configured secret.
"""

import base64
import json
import logging
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt
from anyio import to_thread
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


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class KeySet(jwt.PyJWKClient):
    """The issuer's public keys: PyJWKClient's fetching and caching, plus what it lacks.

    Added here: a size cap on the JWKS document; cached keys kept working while the issuer is
    down (with one fetch attempt per cooldown, not one per request); tokens without `kid`
    (usable when exactly one published key fits the algorithm); keys that do not name their
    `alg` matched by key type, so one RSA key serves RS256 and PS256; and an unknown `kid`
    refetching at once, at most once per cooldown, so made-up key ids cannot hammer the issuer.
    """

    def __init__(self, url: str, *, ttl: float, cooldown: float, timeout: float) -> None:
        super().__init__(
            url,
            cache_jwk_set=True,
            lifespan=max(ttl, 1e-6),  # 0 means "fetch on every request"; PyJWT needs > 0
            timeout=timeout,
            headers={"Accept": "application/json"},
            cooldown_duration=cooldown,
        )
        self.cooldown = cooldown
        self._published: list[dict[str, Any]] | None = None  # the last good document's keys
        self._fetched: list[dict[str, Any]] = []
        self._keys: dict[tuple[str | None, str], jwt.PyJWK] = {}
        self._failed_at = -float("inf")
        self._unknown_kid_fetch_at = -float("inf")
        self._lock = threading.Lock()

    def cached_key(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        """The key from memory if it is there and fresh; None means `signing_key` must run."""
        assert self.jwk_set_cache is not None
        if self.jwk_set_cache.get() is None:
            return None
        return self._keys.get((kid, alg))

    def signing_key(self, kid: str | None, alg: str) -> jwt.PyJWK:
        """Find the key, fetching the JWKS if needed. Blocking: call it from a worker thread."""
        with self._lock:
            now = time.monotonic()
            assert self.jwk_set_cache is not None
            if self.jwk_set_cache.get() is None:
                self._try_fetch(now)
            key = self._find(kid, alg)
            if key is None and now - self._unknown_kid_fetch_at >= self.cooldown:
                self._unknown_kid_fetch_at = now
                self._try_fetch(now)
                key = self._find(kid, alg)
            if key is None:
                raise AuthError("Token signing key is unknown")
            return key

    def fetch_data(self) -> Any:
        """The JWKS document, at most MAX_JWKS_BYTES, without following redirects."""
        request = urllib.request.Request(self.uri, headers=self.headers)  # noqa: S310 (http(s) only)
        with urllib.request.build_opener(_NoRedirects).open(request, timeout=self.timeout) as response:
            body = response.read(MAX_JWKS_BYTES + 1)
        if len(body) > MAX_JWKS_BYTES:
            raise ValueError("JWKS document too large")
        keys = json.loads(body).get("keys")
        if not isinstance(keys, list):
            raise ValueError("JWKS document has no key list")
        published = [
            jwk
            for jwk in keys
            if isinstance(jwk, dict) and jwk.get("use", "sig") == "sig" and jwk.get("kty") != "oct"
        ]
        self._fetched = published
        return {"keys": published}

    def _try_fetch(self, now: float) -> None:
        if now - self._failed_at < self.cooldown:
            if self._published is None:
                raise KeysUnavailable
            return
        try:
            self.get_jwk_set(refresh=True)  # fetch_data(), parsed and cached by PyJWKClient
        except Exception as exc:  # network, HTTP, JSON, no usable key: all mean "issuer unavailable"
            self._failed_at = now
            log.warning("Could not fetch JWKS from %s: %s", self.uri, exc)
            if self._published is None:
                raise KeysUnavailable from exc
            return
        self._published = self._fetched
        self._keys.clear()

    def _find(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        if (kid, alg) in self._keys:
            return self._keys[(kid, alg)]
        assert self._published is not None
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


def _key_signs(jwk: dict[str, Any], alg: str) -> bool:
    if "alg" in jwk:
        return jwk["alg"] == alg
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


def explicit_or_base_url(explicit: str | None, base_url: str | None) -> str | list[str] | None:
    """An explicit JWT_ISSUER/JWT_AUDIENCE is matched exactly; the Better Auth base URL that
    stands in for one is matched with or without a trailing slash, a common paste difference."""
    if explicit is not None or base_url is None:
        return explicit
    bare = base_url.rstrip("/")
    return [bare, bare + "/"]


class TokenVerifier:
    """Answers one question, `verify(token) -> Principal`: who is this, or why not (AuthError).

    Built once per app. A shared-secret token, or one whose JWKS key is cached, is checked on
    the event loop with no thread hop; only a key fetch or a revocation reload leaves it.
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
        self.hs_audience = settings.jwt_audience
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
            key = self.keys.cached_key(kid, alg) or await to_thread.run_sync(self.keys.signing_key, kid, alg)
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


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python tokens.py USER_ID")
    print(mint_token(Settings(), sys.argv[1])[0])
