"""2. TokenVerifier alone: shared-secret HS256 against every JWKS algorithm Better Auth offers."""

import time

import anyio

from bench.support import USER, bench_settings, heading, table
from db import make_engine
from testkit import sign
from testkit.issuer import ALGORITHMS, Issuer, SigningKey, generate_key
from tokens import Principal, RevocationList, TokenVerifier

ROUNDS = 5
PER_ROUND = 1000
WARMUP = 200


def verify(verifier: TokenVerifier, token: str) -> Principal:
    """What the request dependency does before the revocation check, minus the worker-thread hop."""
    header = verifier.header(token)
    key = None
    if header["alg"] != "HS256":
        assert verifier.keys is not None
        kid, alg = header.get("kid"), header["alg"]
        # Only the first call per key fetches (on an event loop of its own); then it is cached.
        key = verifier.keys.cached_key(kid, alg) or anyio.run(verifier.keys.signing_key, kid, alg)
    return verifier.decode(token, header, key)


def best_round_us(verifier: TokenVerifier, tokens: dict[str, str]) -> dict[str, float]:
    """Microseconds per verification: the best of the rounds, algorithms taking turns."""
    for token in tokens.values():
        for _ in range(WARMUP):
            verify(verifier, token)
    best = {name: float("inf") for name in tokens}
    for _ in range(ROUNDS):
        for name, token in tokens.items():
            start = time.perf_counter_ns()
            for _ in range(PER_ROUND):
                verify(verifier, token)
            best[name] = min(best[name], (time.perf_counter_ns() - start) / PER_ROUND / 1e3)
    return best


def run() -> None:
    heading("2. TokenVerifier alone: header() + decode(), no HTTP")
    issuer = Issuer({alg: SigningKey(alg, generate_key(alg)) for alg in ALGORITHMS})
    try:
        settings = bench_settings("sqlite://", better_auth_url=issuer.url)
        verifier = TokenVerifier(settings, RevocationList(make_engine(settings), 2.0))
        tokens = {"HS256": sign({"sub": USER}, lifetime=3600)}
        tokens |= {alg: issuer.token(alg, sub=USER, lifetime=3600) for alg in ALGORITHMS}
        for alg, token in tokens.items():  # the first JWKS token fetches the keys, as in a request
            principal = verify(verifier, token)
            if principal.user_id != USER:
                raise RuntimeError(f"{alg}: verified as {principal.user_id!r}, expected {USER!r}")
        timings = best_round_us(verifier, tokens)
        fetches = issuer.requests
    finally:
        issuer.close()

    print(
        f"  One TokenVerifier; JWKS served from {issuer.url}/api/auth/jwks. Per call: header(), the cached "
        "JWKS key lookup (not HS256), decode()."
    )
    print(
        f"  Best of {ROUNDS} interleaved rounds x {PER_ROUND} verifications after {WARMUP} warm-up each; "
        f"JWKS fetched {fetches} time(s) in all."
    )
    print()
    base = timings["HS256"]
    rows = [(alg, f"{us:,.1f}", f"{1e6 / us:,.0f}", f"{us / base:.2f}") for alg, us in timings.items()]
    print(table(("algorithm", "us/verification", "verifications/s", "ratio to HS256"), rows))
