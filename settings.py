"""Every setting of the service, read once from the environment and `.env`."""

import json
import logging
import math
import os
import secrets
from collections import Counter
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from limits import parse
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

log = logging.getLogger("todo.settings")

MIN_SECRET_LENGTH = 32
MIN_METRICS_TOKEN_LENGTH = 16
ASYMMETRIC_ALGORITHMS = ("EdDSA", "ES256", "ES512", "RS256", "PS256")
# Hosts production may fetch the JWKS from over plain http://: this machine.
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def normalize_database_url(url: str) -> str:
    """Turn the URL forms people paste (Heroku, Neon, psql) into what SQLAlchemy wants."""
    url = url.strip()
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix) :]
    return url


# Values that appear in examples and defaults (Better Auth's own fallback among them): anyone
# can sign tokens with them.
KNOWN_EXAMPLE_SECRETS = frozenset(
    {
        "better-auth-secret-123456789",
        "better-auth-secret-12345678901234567890",
        "your-better-auth-secret-min-32-characters-long",
        "dev_better_auth_secret_change_me_32_chars",
    }
)
PLACEHOLDER_WORDS = (
    "changeme",
    "change-me",
    "change_me",
    "your-secret",
    "your_secret",
    "example",
    "placeholder",
)
MIN_SECRET_BITS = 96  # a 32-character hex secret (128 random bits) estimates at about 112


def weak_secret(secret: str) -> str | None:
    """Why a shared secret is too weak to sign tokens with, or None if it is not."""
    if len(secret) < MIN_SECRET_LENGTH:
        return f"it is shorter than {MIN_SECRET_LENGTH} characters"
    lowered = secret.lower()
    if lowered in KNOWN_EXAMPLE_SECRETS or any(word in lowered for word in PLACEHOLDER_WORDS):
        return "it is a published example or placeholder value"
    # Shannon entropy of its characters, times its length: what it would take to guess it if
    # its characters were drawn at random with their own frequencies (an upper bound).
    counts = Counter(secret)
    bits = -sum(n * math.log2(n / len(secret)) for n in counts.values())
    if bits < MIN_SECRET_BITS or len(counts) < 8:
        return "it repeats too few characters to be random"
    if any(secret == secret[:n] * (len(secret) // n) for n in range(1, len(secret) // 2 + 1)):
        return "it is one short sequence repeated"
    return None


def load_or_create_dev_secret(path: Path) -> str:
    """Keep one generated secret per checkout, so restarts and the token command agree.

    The file is read and written only as a regular file of this user's (never through a
    symbolic link, which could point it at another file), and only its owner may read it.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        pass
    else:
        with os.fdopen(fd) as f:
            if os.fstat(f.fileno()).st_mode & 0o077:
                os.fchmod(f.fileno(), 0o600)
            secret = f.read().strip()
        if len(secret) >= MIN_SECRET_LENGTH:
            return secret
        path.unlink()
    secret = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    log.warning(
        "BETTER_AUTH_SECRET is not set: generated a development secret and saved it in %s. "
        "Set BETTER_AUTH_SECRET to the frontend's secret to accept its tokens.",
        path,
    )
    return secret


def split_list(value: object) -> object:
    """Accept `a,b` as well as a JSON list for list settings."""
    if isinstance(value, str):
        value = value.strip()
        if value.startswith("["):
            return json.loads(value)
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    environment: Literal["development", "test", "production"] = "development"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    # The access log's lines: readable text, or one JSON object a line (for log collectors).
    log_format: Literal["text", "json"] = "text"
    # GET /metrics for Prometheus; with a token set, only with `Authorization: Bearer <token>`.
    metrics_enabled: bool = True
    metrics_token: SecretStr | None = None

    # Database
    database_url: str = "sqlite:///./todo.db"
    # Where migrations run, if not DATABASE_URL: on Neon, the direct URL (no `-pooler`), since
    # migrations take an advisory lock and run DDL in one transaction that a pooler may split.
    migration_database_url: str | None = None
    db_pool_size: int = Field(10, ge=1)
    db_max_overflow: int = Field(10, ge=0)
    db_pool_timeout: float = Field(10.0, gt=0)
    # Neon closes idle connections after a few minutes; recycle well before that.
    db_pool_recycle: int = Field(240, ge=-1)
    # PostgreSQL: a pooled connection idle longer than this is tested before use.
    db_ping_after_idle_seconds: float = Field(10.0, ge=0)
    # Outages (Neon suspends idle computes and drops connections): how long opening a
    # connection may take; how long a request's database work may take in all, after which it
    # is answered 503 (also PostgreSQL's statement_timeout, where the connection allows it);
    # and how long start-up waits for an unreachable database before it gives up.
    db_connect_timeout_seconds: int = Field(3, ge=1, le=60)
    db_statement_timeout_seconds: float = Field(5.0, gt=0, le=600)
    db_startup_timeout_seconds: float = Field(30.0, ge=0)
    auto_migrate: bool | None = None

    # Sync and retries: what deleted tasks leave behind for the changes feed, and how often
    # expired tombstones and idempotency keys are purged (also once at start-up).
    tombstone_days: int = Field(30, ge=1)
    sweep_interval_seconds: float = Field(3600.0, gt=0)
    # Audit events older than this are purged by the same sweep; 0 keeps them for ever.
    audit_retention_days: int = Field(90, ge=0)

    # Tokens
    better_auth_secret: SecretStr | None = None
    better_auth_url: str | None = None
    jwt_jwks_url: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_algorithms: Annotated[list[str], NoDecode] = ["HS256", *ASYMMETRIC_ALGORITHMS]
    jwt_subject_claims: Annotated[list[str], NoDecode] = ["sub", "id", "user_id", "userId"]
    jwt_leeway_seconds: int = Field(30, ge=0, le=600)
    jwks_cache_seconds: int = Field(600, ge=0)
    jwks_refetch_cooldown_seconds: float = Field(5.0, ge=0)
    jwks_timeout_seconds: float = Field(3.0, gt=0)
    dev_secret_file: Path = Path(".dev-secret")

    # The service's own accounts
    accounts_enabled: bool = True
    access_token_minutes: int = Field(60, ge=1, le=60 * 24 * 30)
    password_hash_time_cost: int = Field(3, ge=1)
    password_hash_memory_kib: int = Field(65536, ge=1024)
    revocation_refresh_seconds: float = Field(2.0, ge=0, le=5)
    # Failed logins within the window: per email from one client, per client over all emails,
    # and per email from all clients together (the backstop).
    login_max_failures_per_email: int = Field(5, ge=1)
    login_max_failures_per_client: int = Field(20, ge=1)
    login_max_failures_per_email_total: int = Field(100, ge=1)
    login_failure_window_seconds: int = Field(900, ge=1)
    # Password hashes computed at once (each takes PASSWORD_HASH_MEMORY_KIB and a thread), and
    # how long a login or registration waits for a turn before it is answered 503.
    password_hash_concurrency: int = Field(1, ge=1)
    password_hash_wait_seconds: float = Field(2.0, gt=0)

    # Rate limits, one rate each in the `limits` notation ("300/minute", "20 per minute")
    rate_limit_per_user: str = "300/minute"  # each authenticated user, on every route
    rate_limit_auth_per_address: str = "20/minute"  # each client address, on login and register
    rate_limit_unauthenticated_per_address: str = "60/minute"  # requests without a valid token
    # memory:// (one process) or redis://host:port/db, shared by every process that names it.
    rate_limit_storage_uri: str = "memory://"
    rate_limit_storage_timeout_seconds: float = Field(0.5, gt=0)

    # HTTP
    # A bulk create of 100 tasks with every field full is about 240 KiB of ASCII (more in UTF-8).
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    # Requests with a body over 64 KiB let in at once (their parsing holds the event loop), and
    # how long another waits for a turn before it is answered 503.
    large_body_concurrency: int = Field(2, ge=1)
    large_body_wait_seconds: float = Field(5.0, gt=0)
    # Request heads and slow clients, enforced by server.py's protocol (what `make run` serves
    # with): request line and header fields together, one field's name or value (above the
    # 8 KiB a bearer token may take), the number of fields; how long a head may take to arrive,
    # and how long a request body may go without sending anything.
    http_max_header_bytes: int = Field(64 * 1024, ge=8 * 1024)
    http_max_header_field_bytes: int = Field(16 * 1024, ge=1024)
    http_max_headers: int = Field(100, ge=10)
    http_header_timeout_seconds: float = Field(10.0, gt=0)
    http_body_timeout_seconds: float = Field(30.0, gt=0)
    cors_origins: Annotated[list[str], NoDecode] = ["http://localhost:3000"]
    # Host names the service answers to (`Host`); unset: the local names outside production,
    # and production refuses to start (name the public host, or `*` for any).
    allowed_hosts: Annotated[list[str] | None, NoDecode] = None
    # Serve /docs, /redoc and their files; /openapi.json is served either way (clients are
    # generated from it).
    docs_enabled: bool = True

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("metrics_token", mode="before")
    @classmethod
    def _blank_token_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("metrics_token")
    @classmethod
    def _long_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().strip()) < MIN_METRICS_TOKEN_LENGTH:
            raise ValueError(
                f"must be at least {MIN_METRICS_TOKEN_LENGTH} characters (openssl rand -hex 32 makes one)"
            )
        return value

    @field_validator("jwt_algorithms", "jwt_subject_claims", "cors_origins", "allowed_hosts", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return split_list(value)

    @field_validator("jwt_algorithms")
    @classmethod
    def _known_algorithms(cls, value: list[str]) -> list[str]:
        allowed = {"HS256", *ASYMMETRIC_ALGORITHMS}
        unknown = [alg for alg in value if alg not in allowed]
        if unknown:
            raise ValueError(f"unsupported JWT algorithms {unknown}; choose from {sorted(allowed)}")
        return value

    @field_validator(
        "rate_limit_per_user", "rate_limit_auth_per_address", "rate_limit_unauthenticated_per_address"
    )
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        try:
            parse(value)
        except ValueError:
            raise ValueError("must be a rate in the limits notation, such as 300/minute") from None
        return value

    @field_validator("rate_limit_storage_uri")
    @classmethod
    def _storage_uri(cls, value: str) -> str:
        if not value.removeprefix("async+").startswith(
            ("memory://", "redis://", "rediss://", "redis+unix://")
        ):
            raise ValueError("must be memory:// or a redis:// (rediss://) URL")
        from ratelimit import open_storage  # here: ratelimit imports this module

        try:  # builds the client only: nothing connects until the first request
            open_storage(value, timeout=1.0)
        except Exception as error:  # each storage has its own ways of saying a URL is wrong
            raise ValueError(f"cannot be used: {error} (redis://host:6379/0 is the usual form)") from None
        return value

    @field_validator("database_url")
    @classmethod
    def _normalize_url(cls, value: str) -> str:
        return normalize_database_url(value)

    @field_validator("migration_database_url")
    @classmethod
    def _normalize_migration_url(cls, value: str | None) -> str | None:
        return normalize_database_url(value) if value and value.strip() else None

    @property
    def migration_settings(self) -> "Settings":
        """These settings with MIGRATION_DATABASE_URL, when set, as the database to use."""
        if self.migration_database_url is None:
            return self
        return self.model_copy(update={"database_url": self.migration_database_url})

    @field_validator("better_auth_url", "jwt_jwks_url", "jwt_issuer", "jwt_audience", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("better_auth_url", "jwt_jwks_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _production_jwks_url(self) -> "Settings":
        """Over http://, anyone on the way to the issuer could serve keys of their own and sign
        any token: production fetches the JWKS over https://, or in the clear from this machine."""
        url = self.jwks_url
        if self.environment != "production" or url is None:
            return self
        if not set(self.jwt_algorithms) & set(ASYMMETRIC_ALGORITHMS):
            return self  # no JWKS token is accepted, so the keys are never fetched
        if urlsplit(url).scheme == "http" and urlsplit(url).hostname not in LOCAL_HOSTS:
            name = "JWT_JWKS_URL" if self.jwt_jwks_url else "BETTER_AUTH_URL"
            value = self.jwt_jwks_url or self.better_auth_url
            raise ValueError(
                f"ENVIRONMENT=production refuses {name}={value}: the JWKS must be fetched over "
                "https:// (http:// only from localhost, 127.0.0.1 or ::1)"
            )
        return self

    @model_validator(mode="after")
    def _secret(self) -> "Settings":
        secret = self.better_auth_secret.get_secret_value() if self.better_auth_secret else ""
        if not secret and self.environment != "production":
            try:
                secret = load_or_create_dev_secret(self.dev_secret_file)
            except OSError as error:  # a symbolic link, a directory, no permission
                raise ValueError(f"DEV_SECRET_FILE={self.dev_secret_file} cannot be used: {error}") from None
            object.__setattr__(self, "better_auth_secret", SecretStr(secret))
            return self
        weakness = weak_secret(secret) if secret else "it is not set"
        if weakness is None:
            return self
        advice = f"BETTER_AUTH_SECRET is too weak: {weakness} (generate one with: openssl rand -base64 32)"
        if self.environment == "production":
            raise ValueError(f"ENVIRONMENT=production refuses it. {advice}")
        log.warning("%s; production would refuse it", advice)
        return self

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, value: list[str] | None) -> list[str] | None:
        for host in value or ():
            name = host.removeprefix("*.")
            if host != "*" and (not name or "*" in name or "/" in name or " " in name):
                raise ValueError(f"{host!r} is not a host name: use api.example.com, *.example.com or *")
        return value

    @model_validator(mode="after")
    def _production_hosts(self) -> "Settings":
        if self.environment == "production" and not self.allowed_hosts:
            raise ValueError(
                "ENVIRONMENT=production needs ALLOWED_HOSTS: the public host names of the API "
                "(api.example.com; *.example.com for every subdomain; * for any host)"
            )
        return self

    @property
    def hosts(self) -> list[str]:
        """ALLOWED_HOSTS, or the local names outside production (and the test client's)."""
        if self.allowed_hosts:
            return self.allowed_hosts
        local = ["localhost", "127.0.0.1", "::1"]
        return [*local, "testserver"] if self.environment == "test" else local

    @property
    def secret(self) -> str:
        assert self.better_auth_secret is not None
        return self.better_auth_secret.get_secret_value()

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def pool_capacity(self) -> int:
        """Connections one process may hold at once; also its number of worker threads."""
        return self.db_pool_size + self.db_max_overflow

    @property
    def migrate_on_startup(self) -> bool:
        if self.auto_migrate is not None:
            return self.auto_migrate
        return self.environment != "production"

    @property
    def jwks_url(self) -> str | None:
        if self.jwt_jwks_url:
            return self.jwt_jwks_url
        if self.better_auth_url:
            return self.better_auth_url.rstrip("/") + "/api/auth/jwks"
        return None
