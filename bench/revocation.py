"""1. What the revocation check costs a task request, in time and in SQL statements."""

import gc
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
from sqlmodel import Session

from bench.support import (
    USER,
    RunningApp,
    Samples,
    bench_settings,
    expect,
    heading,
    recorded_statements,
    running_app,
    sample,
    shared_secret_token,
    table,
    temporary_database,
)
from db import make_engine
from models import RevokedToken
from settings import Settings
from testkit import bearer
from tokens import RevocationList, mint_token

REVOKED_COUNT = 5000
WARMUP = 100
ROUNDS = 8
PER_ROUND = 125
COUNTED_REQUESTS = 300
CHECKS = 100_000
RELOADS = 20

PLAIN = "(a) HS256, no jti"
OWN = "(b) own token, jti, 0 revoked"
PLAIN_BESIDE_REVOKED = "(a') HS256, no jti, on app (c)"
OWN_REVOKED = f"(c) own token, jti, {REVOKED_COUNT:,} revoked"
# (numerator, denominator, note): each ratio compares requests served by one and the same app.
RATIOS = (
    (OWN, PLAIN, "(b)/(a)"),
    (OWN_REVOKED, PLAIN_BESIDE_REVOKED, "(c)/(a), (a) on app (c)"),
    (OWN_REVOKED, PLAIN, "(c)/(a), across the two apps"),
)


@dataclass(frozen=True)
class Case:
    running: RunningApp
    path: str
    token: str

    def request(self) -> Callable[[], object]:
        client, headers = self.running.client, bearer(self.token)

        def get() -> object:
            return expect(client.get(self.path, headers=headers), 200)

        return get


@dataclass(frozen=True)
class Timing:
    client: Samples  # as the caller sees it, test client included
    app: Samples  # inside the app, from arrival to response start


def seed_revocations(settings: Settings, count: int, *jtis: str) -> None:
    """`count` unexpired revocations in all: those of `jtis`, then of unrelated tokens."""
    expires_at = datetime.now(UTC) + timedelta(hours=1)
    jtis = jtis + tuple(uuid.uuid4().hex for _ in range(count - len(jtis)))
    engine = make_engine(settings)
    try:
        with Session(engine) as session:
            session.add_all(RevokedToken(jti=jti, expires_at=expires_at) for jti in jtis)
            session.commit()
    finally:
        engine.dispose()


def create_task(running: RunningApp, token: str) -> str:
    response = running.client.post(f"/api/{USER}/tasks", json={"title": "benchmark"}, headers=bearer(token))
    return f"/api/{USER}/tasks/{expect(response, 201).json()['id']}"


def measure(cases: dict[str, Case]) -> dict[str, Timing]:
    """Time every case in turn, round after round, in a rotating order, so drift hits them alike."""
    requests = {name: case.request() for name, case in cases.items()}
    for request in requests.values():
        sample(request, WARMUP)
    client: dict[str, list[int]] = {name: [] for name in cases}
    app: dict[str, list[int]] = {name: [] for name in cases}
    names = list(cases)
    for round_number in range(ROUNDS):
        gc.collect()
        shift = round_number % len(names)  # each case takes its turn at every position
        for name in names[shift:] + names[:shift]:
            timer = cases[name].running.timer
            seen = len(timer.durations)
            client[name].extend(sample(requests[name], PER_ROUND))
            app[name].extend(timer.durations[seen:])
    return {name: Timing(Samples(client[name]), Samples(app[name])) for name in cases}


def run() -> None:
    heading("1. Revocation check on GET /api/{user}/tasks/{id}")
    with temporary_database() as clean_url, temporary_database() as revoked_url:
        clean = bench_settings(clean_url)
        with_revocations = bench_settings(revoked_url)
        plain_token = shared_secret_token()
        own_token, _ = mint_token(clean, USER)
        revoked_token, _ = mint_token(with_revocations, USER)
        revoked_jti = jwt.decode(revoked_token, options={"verify_signature": False})["jti"]
        seed_revocations(with_revocations, REVOKED_COUNT, revoked_jti)

        with running_app(clean) as clean_app, running_app(with_revocations) as revoked_app:
            clean_path = create_task(clean_app, plain_token)
            revoked_path = create_task(revoked_app, plain_token)
            cases = {
                PLAIN: Case(clean_app, clean_path, plain_token),
                OWN: Case(clean_app, clean_path, own_token),
                PLAIN_BESIDE_REVOKED: Case(revoked_app, revoked_path, plain_token),
                OWN_REVOKED: Case(revoked_app, revoked_path, own_token),
            }
            # The first request with a jti loads app (c)'s cache: a seeded revocation then applies.
            cases[OWN_REVOKED].request()()
            refused = expect(revoked_app.client.get(revoked_path, headers=bearer(revoked_token)), 401)
            timings = measure(cases)
            print_timings(timings, clean.revocation_refresh_seconds, refused.json()["detail"])
            counted = {name: cases[name] for name in (PLAIN, OWN, OWN_REVOKED)}
            print_statement_counts(counted, clean.revocation_refresh_seconds)
            own_jti = jwt.decode(own_token, options={"verify_signature": False})["jti"]
            print_check_costs(revoked_app, own_jti, revoked_jti, clean.revocation_refresh_seconds)


def ratio(top_us: float, bottom_us: float) -> str:
    return f"{top_us / bottom_us:.3f} ({top_us - bottom_us:+,.0f} us)"


def print_timings(timings: dict[str, Timing], refresh_seconds: float, refused_detail: str) -> None:
    print(
        "  Two apps, each on its own temporary SQLite file database: one with no revocation (a, b), "
        f"one with {REVOKED_COUNT:,} (a', c)."
    )
    print(
        f"  TestClient with lifespan; {ROUNDS} rotating rounds x {PER_ROUND} requests per case "
        f"after {WARMUP} warm-up requests each."
    )
    print(
        f"  Revocation cache refresh interval {refresh_seconds:g} s; a seeded revoked token "
        f"is refused in (c): 401 {refused_detail!r}."
    )
    print(
        "  client: the caller's view, test client included; in app: from the request's arrival "
        "to its response start."
    )
    print()
    rows = [
        (
            name,
            timing.client.count,
            f"{timing.client.per_second:,.0f}",
            f"{timing.client.mean_us:,.0f}",
            f"{timing.client.median_us:,.0f}",
            f"{timing.app.mean_us:,.0f}",
            f"{timing.app.median_us:,.0f}",
            f"{timing.app.p95_us:,.0f}",
        )
        for name, timing in timings.items()
    ]
    headers = (
        "case",
        "requests",
        "req/s",
        "client mean us",
        "client median us",
        "in-app mean us",
        "in-app median us",
        "in-app p95 us",
    )
    print(table(headers, rows))
    print()
    ratio_rows: list[list[str]] = []
    for numerator, denominator, label in RATIOS:
        top, bottom = timings[numerator], timings[denominator]
        cells = [label]
        for top_samples, bottom_samples in ((top.client, bottom.client), (top.app, bottom.app)):
            cells += [
                ratio(top_samples.mean_us, bottom_samples.mean_us),
                ratio(top_samples.median_us, bottom_samples.median_us),
            ]
        ratio_rows.append(cells)
    print(table(("ratio", "client mean", "client median", "in-app mean", "in-app median"), ratio_rows))
    print()
    print(
        "  Through HTTP, differences of a few percent are within run-to-run noise (test client, "
        "thread pool, GIL); the check itself is timed without HTTP below."
    )


def print_statement_counts(cases: dict[str, Case], refresh_seconds: float) -> None:
    print()
    print(
        "  SQL statements seen by a before_cursor_execute listener on the app's engine, "
        f"{COUNTED_REQUESTS} more requests per case:"
    )
    print()
    rows = []
    for name, case in cases.items():
        request = case.request()
        with recorded_statements(case.running.engine) as statements:
            start = time.perf_counter()
            for _ in range(COUNTED_REQUESTS):
                request()
            elapsed = time.perf_counter() - start
        reloads = sum("revoked_token" in statement for statement in statements)
        bound = math.floor(elapsed / refresh_seconds) + 1 if refresh_seconds else COUNTED_REQUESTS
        per_request = len(statements) / COUNTED_REQUESTS
        rows.append(
            (name, COUNTED_REQUESTS, len(statements), f"{per_request:.3f}", reloads, bound, f"{elapsed:.2f}")
        )
    headers = ("case", "requests", "statements", "per request", "cache reloads", "at most", "seconds")
    print(table(headers, rows))
    print()
    print(
        "  cache reloads: statements reading revoked_token; at most: floor(seconds / refresh interval) + 1. "
        "Every other statement is the route's own SELECT."
    )


def print_check_costs(running: RunningApp, jti: str, revoked_jti: str, refresh_seconds: float) -> None:
    """The check and the reload on their own, without HTTP, on app (c)'s revocations."""
    revocations: RevocationList = running.app.state.services.revocations
    stale = revoked = 0
    start = time.perf_counter_ns()
    for _ in range(CHECKS):
        stale += revocations.stale  # when True, the dependency reloads first (timed below)
        revoked += revocations.is_revoked(jti)
    check_us = (time.perf_counter_ns() - start) / CHECKS / 1e3
    if revoked:
        raise RuntimeError("the benchmark token is not meant to be revoked")

    always_stale = RevocationList(running.engine, 0)
    reloads = []
    for _ in range(RELOADS):
        start = time.perf_counter_ns()
        always_stale.refresh()
        reloads.append(time.perf_counter_ns() - start)
    reload_ms = Samples(reloads).median_us / 1e3
    if not always_stale.is_revoked(revoked_jti):
        raise RuntimeError("the reload missed a seeded revocation")

    print()
    print("  The same, without HTTP, on app (c)'s RevocationList:")
    print(f"    stale + is_revoked() per request: {check_us * 1e3:,.0f} ns (mean of {CHECKS:,})")
    print(
        f"    one cache reload of {REVOKED_COUNT:,} revocations: {reload_ms:,.2f} ms "
        f"(median of {RELOADS}), at most one per {refresh_seconds:g} s:"
    )
    print(f"    <= {reload_ms / refresh_seconds:,.2f} ms per second of traffic, whatever the request rate")
