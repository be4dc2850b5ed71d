"""4. Login timing: a wrong password and an unknown email should cost the same."""

from collections.abc import Callable

from fastapi.testclient import TestClient

from bench.support import (
    Samples,
    bench_settings,
    expect,
    heading,
    running_app,
    sample,
    table,
    temporary_database,
)

ROUNDS = 10
PER_ROUND = 3
EMAIL = "ada@example.com"
PASSWORD = "correct horse battery"


def login(client: TestClient, credentials: dict[str, str], status: int) -> Callable[[], object]:
    return lambda: expect(client.post("/auth/login", json=credentials), status)


def run() -> None:
    heading("4. Login: wrong password vs unknown email, production Argon2 parameters")
    with temporary_database() as url:
        # The default hashing cost, not the suite's cheap one: the point is what an attacker sees.
        settings = bench_settings(
            url,
            password_hash_time_cost=3,
            password_hash_memory_kib=65536,
            login_max_failures_per_email=10_000,
            login_max_failures_per_client=10_000,
        )
        with running_app(settings) as running:
            client = running.client
            body = {"email": EMAIL, "password": PASSWORD, "name": "Ada"}
            expect(client.post("/auth/register", json=body), 201)
            cases = {
                "right password": ({"email": EMAIL, "password": PASSWORD}, 200),
                "wrong password": ({"email": EMAIL, "password": "not the password"}, 401),
                "unknown email": ({"email": "nobody@example.com", "password": PASSWORD}, 401),
            }
            durations: dict[str, list[int]] = {name: [] for name in cases}
            for credentials, status in cases.values():  # warm-up
                expect(client.post("/auth/login", json=credentials), status)
            for _ in range(ROUNDS):  # interleaved, so drift in machine load hits every case alike
                for name, (credentials, status) in cases.items():
                    durations[name] += sample(login(client, credentials, status), PER_ROUND)
    samples = {name: Samples(values) for name, values in durations.items()}
    baseline = samples["wrong password"].median_us
    rows = [
        (name, s.count, f"{s.median_us / 1e3:.1f}", f"{s.mean_us / 1e3:.1f}", f"{s.median_us / baseline:.3f}")
        for name, s in samples.items()
    ]
    print(f"  {ROUNDS} interleaved rounds x {PER_ROUND} logins per case, through the test client.\n")
    print(table(["case", "logins", "median ms", "mean ms", "median / wrong password"], rows))
