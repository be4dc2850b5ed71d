"""Prometheus metrics: requests by route template and status, in flight, the database pool,
rate-limit rejections and token failures; served at GET /metrics (routes/metrics.py).

Every label takes values from a bounded set (route templates, never paths; known methods;
fixed reasons), so that no client can grow the number of series.

Each app has a registry of its own (tests build many apps in one process). With
PROMETHEUS_MULTIPROC_DIR set, prometheus-client keeps every value in files in that directory
instead, one per process, and /metrics adds up those of all the workers: what `uvicorn
--workers N` (or gunicorn) needs, since a scrape reaches only one of them. The directory must
exist and be emptied before the server starts (values of an earlier run would be added in).
"""

import os
from collections.abc import Callable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    multiprocess,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from sqlalchemy.pool import Pool

# The `*_created` series double the size of a scrape and tell nothing a restart's reset does not.
disable_created_metrics()

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
# API requests take a few milliseconds: finer buckets there than prometheus-client's defaults.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"  # the route label of a request no route matched (never its path)
RATE_LIMITS = ("user", "unauthenticated", "auth", "login")

# tokens.AuthError's fixed messages, each to a short reason (a test checks that every message
# raised in tokens.py has one). Matched by prefix: "Token has no 'exp' claim" names a claim.
TOKEN_REASONS = {
    "Token has expired": "expired",
    "Token is not valid yet": "not_yet_valid",
    "Token signature is invalid": "bad_signature",
    "Token signing key is unknown": "unknown_key",
    "Token has been revoked": "revoked",
    "Token is malformed": "malformed",
    "Token is too large": "malformed",
    "Token algorithm is not accepted": "algorithm",
    "Token type is not an access token": "wrong_type",
    "Token issuer is not accepted": "issuer",
    "Token audience is not accepted": "audience",
    "Token has no '": "missing_claim",
    "Token has no usable subject": "subject",
    "Token has an unusable jti": "jti",
}
MISSING_TOKEN = "missing"  # noqa: S105 (a label: no usable Authorization header)
KEYS_UNAVAILABLE = "keys_unavailable"  # the issuer's keys could not be fetched
OTHER = "other"
TOKEN_FAILURES = (*dict.fromkeys(TOKEN_REASONS.values()), MISSING_TOKEN, KEYS_UNAVAILABLE, OTHER)


def token_failure_reason(detail: str) -> str:
    """The reason label of an AuthError's message."""
    for message, reason in TOKEN_REASONS.items():
        if detail.startswith(message):
            return reason
    return OTHER


def pool_in_use(pool: Pool) -> int | None:
    """Connections checked out of the pool; None for a pool that does not count them (the
    single-connection pools SQLite uses in memory)."""
    checkedout: Callable[[], int] | None = getattr(pool, "checkedout", None)
    return checkedout() if checkedout is not None else None


class PoolCollector:
    """The pool's connections in use, read when scraped: nothing to do per request."""

    def __init__(self, pool: Callable[[], Pool]) -> None:
        self.pool = pool

    def collect(self) -> Iterator[Metric]:
        in_use = pool_in_use(self.pool())  # the engine's current pool: dispose() replaces it
        if in_use is not None:
            yield GaugeMetricFamily(POOL_IN_USE, POOL_IN_USE_HELP, value=in_use)


POOL_IN_USE = "todo_db_pool_connections_in_use"
POOL_IN_USE_HELP = "Database connections checked out of this process's pool"


class Metrics:
    """The service's metrics and the calls that record them (on the event loop)."""

    def __init__(self, pool: Callable[[], Pool], pool_capacity: int) -> None:
        directory = os.environ.get(MULTIPROCESS_DIR)
        self.multiprocess = bool(directory)
        if directory and not os.path.isdir(directory):  # else: a FileNotFoundError from deep inside
            raise SystemExit(
                f"Cannot start: {MULTIPROCESS_DIR}={directory} is not a directory (create it, empty)"
            )
        self.pool = pool
        # In multiprocess mode the values live in files and /metrics reads those: the metrics
        # then belong to no registry, and each scrape builds one over the files.
        registry = None if self.multiprocess else CollectorRegistry()
        self.registry = registry
        self.requests = Counter(
            "todo_http_requests_total",
            "HTTP requests answered, by method, route template and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.durations = Histogram(
            "todo_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by method, route template and status",
            ["method", "route", "status"],
            buckets=BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "todo_http_requests_in_flight",
            "HTTP requests being handled",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.rate_limit_rejections = Counter(
            "todo_rate_limit_rejections_total",
            "Requests refused with 429, by limit: user, unauthenticated (address), auth (address), login",
            ["limit"],
            registry=registry,
        )
        self.token_failures = Counter(
            "todo_token_failures_total",
            "Bearer tokens refused, by reason",
            ["reason"],
            registry=registry,
        )
        capacity = Gauge(
            "todo_db_pool_connections_max",
            "Database connections this process's pool may hold (DB_POOL_SIZE + DB_MAX_OVERFLOW)",
            multiprocess_mode="livesum",
            registry=registry,
        )
        capacity.set(pool_capacity)
        # Every label value known in advance is there from the start, at 0: a rate of a series
        # that appears only with its first increment misses that increment.
        self._limits = {limit: self.rate_limit_rejections.labels(limit) for limit in RATE_LIMITS}
        self._reasons = {reason: self.token_failures.labels(reason) for reason in TOKEN_FAILURES}
        # Label lookups cost more than the increments: each combination's children, kept.
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._pool_gauge: Gauge | None = None
        if self.multiprocess:
            # A worker cannot read the others' pools when scraped: each writes what its own
            # holds as its requests end, summed over the live workers.
            self._pool_gauge = Gauge(
                POOL_IN_USE, POOL_IN_USE_HELP, multiprocess_mode="livesum", registry=registry
            )
        else:
            assert registry is not None
            registry.register(PoolCollector(pool))
            ProcessCollector(registry=registry)  # CPU, memory, open files: of this one process

    def started(self) -> None:
        self.in_flight.inc()

    def finished(self, method: str, route: str, status: int, seconds: float) -> None:
        self.in_flight.dec()
        if method not in METHODS:
            method = OTHER
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            label = str(status)
            children = (
                self.requests.labels(method, route, label),
                self.durations.labels(method, route, label),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)
        if self._pool_gauge is not None:
            self._record_pool()

    def _record_pool(self) -> None:
        assert self._pool_gauge is not None
        in_use = pool_in_use(self.pool())
        if in_use is not None:
            self._pool_gauge.set(in_use)

    def rate_limited(self, limit: str) -> None:
        child = self._limits.get(limit)
        (child if child is not None else self.rate_limit_rejections.labels(OTHER)).inc()

    def token_failed(self, reason: str) -> None:
        self._reasons.get(reason, self._reasons[OTHER]).inc()

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The metrics in the format the scraper asks for (Prometheus text, or OpenMetrics)."""
        encoder, content_type = choose_encoder(accept or "")
        if self.multiprocess:
            self._record_pool()
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return encoder(registry), content_type
        assert self.registry is not None
        return encoder(self.registry), content_type

    def close(self) -> None:
        """At shutdown: this worker's live gauges leave the sums (its files are removed)."""
        if self.multiprocess:
            multiprocess.mark_process_dead(os.getpid())
