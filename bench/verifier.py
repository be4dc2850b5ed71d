"""2. TokenVerifier alone: shared-secret HS256 against JWKS-verified EdDSA, ES256 and RS256."""

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from bench import BENCH_SECRET
from bench.support import USER, bench_settings, heading, table
from security import Principal, TokenVerifier

ALGORITHMS = ("EdDSA", "ES256", "RS256")
ROUNDS = 5
PER_ROUND = 1000
WARMUP = 200

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def generate_key(alg: str) -> PrivateKey:
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(alg: str, kid: str, key: PrivateKey) -> dict[str, Any]:
    jwk: dict[str, Any] = jwt.get_algorithm_by_name(alg).to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "alg": alg, "use": "sig"}


@dataclass
class JWKSServer:
    """A JWKS document served from 127.0.0.1 on an ephemeral port, counting its fetches."""

    server: ThreadingHTTPServer
    fetches: int = 0

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"


@contextmanager
def jwks_server(keys: list[dict[str, Any]]) -> Iterator[JWKSServer]:
    body = json.dumps({"keys": keys}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            served.fetches += 1
            if self.path != "/api/auth/jwks":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    served = JWKSServer(ThreadingHTTPServer(("127.0.0.1", 0), Handler))
    thread = threading.Thread(target=served.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        served.server.shutdown()
        served.server.server_close()
        thread.join()


def verify(verifier: TokenVerifier, token: str) -> Principal:
    """What the request dependency does before the revocation check, minus the worker-thread hop."""
    header = verifier.header(token)
    key = None if header["alg"] == "HS256" else verifier.cached_key(header) or verifier.resolve_key(header)
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
    keys = {alg: (f"bench-{alg.lower()}", generate_key(alg)) for alg in ALGORITHMS}
    with jwks_server([public_jwk(alg, kid, key) for alg, (kid, key) in keys.items()]) as server:
        base_url = server.base_url
        verifier = TokenVerifier(bench_settings("sqlite://", better_auth_url=base_url))
        now = int(time.time())
        claims = {"sub": USER, "iat": now, "exp": now + 3600}
        tokens = {"HS256": jwt.encode(claims, BENCH_SECRET, algorithm="HS256")}
        for alg, (kid, key) in keys.items():
            payload = {**claims, "iss": base_url, "aud": base_url}
            tokens[alg] = jwt.encode(payload, key, algorithm=alg, headers={"kid": kid})
        for alg, token in tokens.items():  # the first JWKS token fetches the keys, as in a request
            principal = verify(verifier, token)
            if principal.user_id != USER:
                raise RuntimeError(f"{alg}: verified as {principal.user_id!r}, expected {USER!r}")
        timings = best_round_us(verifier, tokens)
        fetches = server.fetches

    print(
        f"  One TokenVerifier; JWKS served from {base_url}/api/auth/jwks. Per call: header(), the cached "
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
