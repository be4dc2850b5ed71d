"""Tokens from Better Auth's JWT plugin, verified with the keys its JWKS publishes."""

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from typing import Literal, TypeVar

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from fastapi.testclient import TestClient
from pydantic import ValidationError

from settings import Settings
from testkit import base_settings, bearer, run_together, sign
from testkit.issuer import ALGORITHMS, Issuer, SigningKey, generate_key
from tokens import MAX_JWKS_BYTES

USER = uuid.uuid4().hex  # Better Auth user ids are 32-character strings
TASKS = f"/api/{USER}/tasks"
UNKNOWN_KEY = "Token signing key is unknown"
KEYS_UNAVAILABLE = "Token signing keys are unavailable: the issuer cannot be reached"
T = TypeVar("T")


@pytest.fixture(scope="session")
def signing_keys() -> dict[str, SigningKey]:
    return {alg: SigningKey(alg, generate_key(alg)) for alg in ALGORITHMS}


@pytest.fixture
def issuer(signing_keys: dict[str, SigningKey]) -> Iterator[Issuer]:
    issuer = Issuer(signing_keys)
    yield issuer
    issuer.close()


@pytest.fixture
def jwks_settings(make_settings: Callable[..., Settings], issuer: Issuer) -> Callable[..., Settings]:
    return lambda **overrides: make_settings(better_auth_url=issuer.url, **overrides)


@pytest.fixture
def client(make_client: Callable[..., TestClient], jwks_settings: Callable[..., Settings]) -> TestClient:
    return make_client(jwks_settings())


def assert_401(response, detail: str | None = None) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    if detail is not None:
        assert response.json()["detail"] == detail


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_every_better_auth_algorithm_works(client: TestClient, issuer: Issuer, alg: str) -> None:
    headers = bearer(issuer.token(alg, sub=USER))
    created = client.post(TASKS, json={"title": f"signed with {alg}"}, headers=headers)
    assert created.status_code == 201
    assert created.json()["user_id"] == USER
    assert [t["title"] for t in client.get(TASKS, headers=headers).json()] == [f"signed with {alg}"]


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_keys_without_alg_are_matched_by_type(
    client: TestClient, issuer: Issuer, signing_keys: dict[str, SigningKey], alg: str
) -> None:
    issuer.publish(signing_keys[alg], with_alg=False)
    assert client.get(TASKS, headers=bearer(issuer.token(alg, sub=USER))).status_code == 200


def test_keys_are_cached(client: TestClient, issuer: Issuer) -> None:
    for _ in range(5):
        assert client.get(TASKS, headers=bearer(issuer.token(sub=USER))).status_code == 200
    assert issuer.requests == 1


def test_hs256_and_jwks_work_side_by_side(client: TestClient, issuer: Issuer) -> None:
    assert client.get(TASKS, headers=bearer(issuer.token("ES256", sub=USER))).status_code == 200
    assert client.get(TASKS, headers=bearer(sign({"sub": USER}))).status_code == 200


def test_rotated_key_works_on_its_first_request(
    client: TestClient, issuer: Issuer, signing_keys: dict[str, SigningKey]
) -> None:
    old = signing_keys["EdDSA"]
    issuer.publish(old)
    assert client.get(TASKS, headers=bearer(issuer.token(key=old, sub=USER))).status_code == 200
    new = SigningKey("EdDSA", generate_key("EdDSA"))
    issuer.publish(new, old)
    assert client.get(TASKS, headers=bearer(issuer.token(key=new, sub=USER))).status_code == 200
    assert client.get(TASKS, headers=bearer(issuer.token(key=old, sub=USER))).status_code == 200
    assert issuer.requests == 2


def test_unknown_kid_is_401(client: TestClient, issuer: Issuer) -> None:
    stranger = SigningKey("EdDSA", generate_key("EdDSA"))
    assert_401(
        client.get(TASKS, headers=bearer(issuer.token(key=stranger, sub=USER))),
        "Token signing key is unknown",
    )


def test_a_flood_of_unknown_kids_fetches_at_most_once(client: TestClient, issuer: Issuer) -> None:
    assert client.get(TASKS, headers=bearer(issuer.token(sub=USER))).status_code == 200
    for _ in range(20):
        token = issuer.token(sub=USER, headers={"kid": uuid.uuid4().hex})
        assert_401(client.get(TASKS, headers=bearer(token)), UNKNOWN_KEY)
    assert issuer.requests == 2


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_a_token_without_kid_uses_the_one_published_key_that_fits(
    client: TestClient, issuer: Issuer, alg: str
) -> None:
    token = issuer.token(alg, sub=USER, with_kid=False)
    assert "kid" not in jwt.get_unverified_header(token)
    assert client.get(TASKS, headers=bearer(token)).status_code == 200


def test_a_token_without_kid_is_401_when_two_published_keys_fit(
    client: TestClient, issuer: Issuer, signing_keys: dict[str, SigningKey]
) -> None:
    first, second = signing_keys["EdDSA"], SigningKey("EdDSA", generate_key("EdDSA"))
    issuer.publish(first, second, signing_keys["ES256"])
    for key in (first, second):  # which one signed cannot be told without trying both
        token = issuer.token(key=key, sub=USER, with_kid=False)
        assert_401(client.get(TASKS, headers=bearer(token)), UNKNOWN_KEY)
    for key in (first, second):  # with their kids, both keys work
        assert client.get(TASKS, headers=bearer(issuer.token(key=key, sub=USER))).status_code == 200


def test_a_token_without_kid_is_401_when_no_published_key_fits(
    client: TestClient, issuer: Issuer, signing_keys: dict[str, SigningKey]
) -> None:
    issuer.publish(signing_keys["ES256"], signing_keys["RS256"])
    token = issuer.token("EdDSA", sub=USER, with_kid=False)
    assert_401(client.get(TASKS, headers=bearer(token)), UNKNOWN_KEY)


def test_a_token_without_kid_is_401_when_the_key_is_published_for_another_algorithm(
    client: TestClient, issuer: Issuer, signing_keys: dict[str, SigningKey]
) -> None:
    """The RSA key would verify the signature, but its JWK names PS256, not the token's RS256."""
    rsa = signing_keys["PS256"]
    issuer.publish(rsa)
    as_rs256 = SigningKey("RS256", rsa.private_key, kid=rsa.kid)
    assert (
        client.get(TASKS, headers=bearer(issuer.token(key=rsa, sub=USER, with_kid=False))).status_code == 200
    )
    token = issuer.token(key=as_rs256, sub=USER, with_kid=False)
    assert_401(client.get(TASKS, headers=bearer(token)), UNKNOWN_KEY)


def test_kid_of_a_key_for_another_algorithm_is_401(
    client: TestClient, issuer: Issuer, signing_keys: dict[str, SigningKey]
) -> None:
    # An EdDSA signature presented under the ES256 key's id.
    token = issuer.token("EdDSA", sub=USER, headers={"kid": signing_keys["ES256"].kid})
    assert_401(client.get(TASKS, headers=bearer(token)), UNKNOWN_KEY)


def test_cached_keys_survive_an_issuer_outage(
    make_client: Callable[..., TestClient], jwks_settings: Callable[..., Settings], issuer: Issuer
) -> None:
    client = make_client(jwks_settings(jwks_cache_seconds=0))  # every request wants fresh keys
    assert client.get(TASKS, headers=bearer(issuer.token(sub=USER))).status_code == 200
    issuer.down = True
    for _ in range(3):
        assert client.get(TASKS, headers=bearer(issuer.token(sub=USER))).status_code == 200
    assert issuer.requests == 2  # one failed refresh, then a cooldown instead of a fetch per request


def test_issuer_down_with_no_cached_keys_is_503(client: TestClient, issuer: Issuer) -> None:
    issuer.down = True
    response = client.get(TASKS, headers=bearer(issuer.token(sub=USER)))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.json() == {"detail": KEYS_UNAVAILABLE}


def test_a_jwks_over_the_size_cap_is_an_unavailable_issuer(client: TestClient, issuer: Issuer) -> None:
    issuer.document_bytes = MAX_JWKS_BYTES + 1
    response = client.get(TASKS, headers=bearer(issuer.token(sub=USER)))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.json() == {"detail": KEYS_UNAVAILABLE}
    assert issuer.requests == 1


def test_a_jwks_of_exactly_the_size_cap_is_used(client: TestClient, issuer: Issuer) -> None:
    issuer.document_bytes = MAX_JWKS_BYTES
    assert client.get(TASKS, headers=bearer(issuer.token(sub=USER))).status_code == 200


def test_an_oversized_jwks_leaves_the_cached_keys_working(
    make_client: Callable[..., TestClient], jwks_settings: Callable[..., Settings], issuer: Issuer
) -> None:
    client = make_client(jwks_settings(jwks_cache_seconds=0))  # every request wants fresh keys
    assert client.get(TASKS, headers=bearer(issuer.token(sub=USER))).status_code == 200
    issuer.document_bytes = MAX_JWKS_BYTES + 1
    assert client.get(TASKS, headers=bearer(issuer.token(sub=USER))).status_code == 200
    assert issuer.requests == 2  # the oversized document was fetched, and not used


def test_issuer_unreachable_is_503_then_recovers(
    make_client: Callable[..., TestClient], jwks_settings: Callable[..., Settings], issuer: Issuer
) -> None:
    client = make_client(jwks_settings(jwks_refetch_cooldown_seconds=0))
    issuer.down = True
    assert client.get(TASKS, headers=bearer(issuer.token(sub=USER))).status_code == 503
    issuer.down = False
    assert client.get(TASKS, headers=bearer(issuer.token(sub=USER))).status_code == 200


def test_issuer_refusing_connections_is_503(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings], issuer: Issuer
) -> None:
    issuer.close()
    client = make_client(make_settings(better_auth_url=issuer.url, jwks_timeout_seconds=1))
    response = client.get(TASKS, headers=bearer(issuer.token(sub=USER)))
    assert response.status_code == 503
    assert "Retry-After" in response.headers


def test_hs256_signed_with_the_public_key_is_401(
    client: TestClient, issuer: Issuer, signing_keys: dict[str, SigningKey]
) -> None:
    """Algorithm confusion: the public key used as an HMAC secret must not verify."""
    assert client.get(TASKS, headers=bearer(issuer.token("RS256", sub=USER))).status_code == 200
    key = signing_keys["RS256"]
    pem = key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    now = int(time.time())
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key.kid}).encode())
    payload = b64(json.dumps({"sub": USER, "iat": now, "exp": now + 900, "iss": issuer.url}).encode())
    for secret in (pem, json.dumps(key.jwk()).encode()):
        signature = b64(hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest())
        assert_401(
            client.get(TASKS, headers=bearer(f"{header}.{payload}.{signature}")), "Token signature is invalid"
        )


def test_alg_none_with_a_kid_is_401(client: TestClient, issuer: Issuer, signing_keys) -> None:
    header = b64(json.dumps({"alg": "none", "kid": signing_keys["EdDSA"].kid}).encode())
    payload = b64(json.dumps({"sub": USER, "exp": int(time.time()) + 900}).encode())
    assert_401(client.get(TASKS, headers=bearer(f"{header}.{payload}.")), "Token algorithm is not accepted")


def test_tampered_payload_is_401(client: TestClient, issuer: Issuer) -> None:
    head, _, signature = issuer.token(sub="bob").split(".")
    now = int(time.time())
    claims = {"sub": USER, "iat": now, "exp": now + 900, "iss": issuer.url, "aud": issuer.url}
    forged = f"{head}.{b64(json.dumps(claims).encode())}.{signature}"
    assert_401(client.get(TASKS, headers=bearer(forged)), "Token signature is invalid")


def test_tampered_signature_is_401(client: TestClient, issuer: Issuer) -> None:
    head, payload, signature = issuer.token("ES256", sub=USER).split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    assert_401(client.get(TASKS, headers=bearer(f"{head}.{payload}.{flipped}")), "Token signature is invalid")


def test_expired_is_401(client: TestClient, issuer: Issuer) -> None:
    token = issuer.token(sub=USER, lifetime=-120, iat=int(time.time()) - 1000)
    assert_401(client.get(TASKS, headers=bearer(token)), "Token has expired")


def test_missing_exp_is_401(client: TestClient, issuer: Issuer) -> None:
    assert_401(
        client.get(TASKS, headers=bearer(issuer.token(sub=USER, exp=None))), "Token has no 'exp' claim"
    )


def test_wrong_issuer_is_401(client: TestClient, issuer: Issuer) -> None:
    token = issuer.token(sub=USER, iss="https://evil.example")
    assert_401(client.get(TASKS, headers=bearer(token)), "Token issuer is not accepted")


def test_localhost_is_not_127_0_0_1(client: TestClient, issuer: Issuer) -> None:
    other_spelling = issuer.url.replace("127.0.0.1", "localhost")
    token = issuer.token(sub=USER, iss=other_spelling, aud=other_spelling)
    assert_401(client.get(TASKS, headers=bearer(token)), "Token issuer is not accepted")


@pytest.mark.parametrize("configured_slash", [False, True])
def test_a_trailing_slash_on_the_base_url_is_tolerated(
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    issuer: Issuer,
    configured_slash,
) -> None:
    client = make_client(make_settings(better_auth_url=issuer.url + ("/" if configured_slash else "")))
    for spelling in (issuer.url, issuer.url + "/"):
        token = issuer.token(sub=USER, iss=spelling, aud=spelling)
        assert client.get(TASKS, headers=bearer(token)).status_code == 200


def test_wrong_audience_is_401(client: TestClient, issuer: Issuer) -> None:
    token = issuer.token(sub=USER, aud="https://another-app.example")
    assert_401(client.get(TASKS, headers=bearer(token)), "Token audience is not accepted")


def test_session_cache_token_is_401(client: TestClient, issuer: Issuer) -> None:
    token = issuer.token(
        sub=USER, aud="better-auth:session-cache", headers={"typ": "better-auth.session-cache+jwt"}
    )
    assert_401(client.get(TASKS, headers=bearer(token)), "Token type is not an access token")


def test_oversized_token_is_401(client: TestClient, issuer: Issuer) -> None:
    token = issuer.token(sub=USER, image="data:image/png;base64," + "A" * 9000)
    assert_401(client.get(TASKS, headers=bearer(token)), "Token is too large")


def test_subject_falls_back_to_the_id_claim(client: TestClient, issuer: Issuer) -> None:
    token = issuer.token(sub=None, id=USER)
    assert client.get(TASKS, headers=bearer(token)).status_code == 200


def test_no_string_subject_is_401(client: TestClient, issuer: Issuer) -> None:
    token = issuer.token(sub=None, id=12345)
    assert_401(client.get(TASKS, headers=bearer(token)), "Token has no usable subject")


def test_path_user_must_be_the_subject(client: TestClient, issuer: Issuer) -> None:
    response = client.get("/api/someone-else/tasks", headers=bearer(issuer.token(sub=USER)))
    assert response.status_code == 403
    assert response.json() == {"detail": "You may only reach your own tasks"}


def test_explicit_jwks_url_issuer_and_audience(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings], issuer: Issuer
) -> None:
    client = make_client(
        make_settings(
            jwt_jwks_url=f"{issuer.url}/api/auth/jwks",
            jwt_issuer="https://auth.example",
            jwt_audience="todo-api",
        )
    )
    good = issuer.token(sub=USER, iss="https://auth.example", aud="todo-api")
    assert client.get(TASKS, headers=bearer(good)).status_code == 200
    default_shape = issuer.token(sub=USER)
    assert_401(client.get(TASKS, headers=bearer(default_shape)), "Token issuer is not accepted")


def test_asymmetric_tokens_without_jwks_configured_are_401(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings], issuer: Issuer
) -> None:
    client = make_client(make_settings())
    assert_401(client.get(TASKS, headers=bearer(issuer.token(sub=USER))), "Token algorithm is not accepted")
    assert issuer.requests == 0


# --- a slow, redirecting or plain-http issuer -------------------------------------------------

TIMEOUT = 1.0  # JWKS_TIMEOUT_SECONDS in the slow-issuer tests
MARGIN = 0.75  # what a loaded test machine may add to it
SLOW = (12, 0.25)  # 12 pieces a quarter second apart: 2.75 s in all, each read well within TIMEOUT


def timed(call: Callable[[], T]) -> tuple[T, float]:
    start = time.monotonic()
    result = call()
    return result, time.monotonic() - start


def test_a_trickling_issuer_is_cut_off_at_the_timeout_in_total(
    make_client: Callable[..., TestClient], jwks_settings: Callable[..., Settings], issuer: Issuer
) -> None:
    """JWKS_TIMEOUT_SECONDS bounds the whole fetch, not each read: an issuer that sends a byte
    now and then would otherwise hold the request for as long as it likes."""
    client = make_client(jwks_settings(jwks_timeout_seconds=TIMEOUT))
    issuer.trickle = SLOW
    response, elapsed = timed(lambda: client.get(TASKS, headers=bearer(issuer.token(sub=USER))))
    assert response.status_code == 503
    assert response.json() == {"detail": KEYS_UNAVAILABLE}
    assert elapsed < TIMEOUT + MARGIN
    assert issuer.requests == 1


def test_a_flood_of_unknown_kids_against_a_slow_issuer_fetches_once_and_holds_no_thread(
    make_client: Callable[..., TestClient], jwks_settings: Callable[..., Settings], issuer: Issuer
) -> None:
    """Fifty made-up kids while the issuer is slow: one fetch, all refused by the deadline, and
    shared-secret requests (whose database work needs a worker thread) served meanwhile."""
    # Four worker threads: far fewer than the flood, as in production, where they match the pool.
    # A longer deadline than the other slow-issuer tests, and a far longer trickle (9.75 s): fifty
    # client threads starting at once, each with an event loop of its own (TestClient), can add
    # seconds on two cores that are the test's, not the service's (seen on a clean clone). The
    # bound below allows them, and a fetch without its deadline would still overshoot it.
    timeout, slow, overhead = 2.0, (40, 0.25), 5.0
    settings = jwks_settings(jwks_timeout_seconds=timeout, db_pool_size=4, db_max_overflow=0)
    client = make_client(settings)
    assert client.get(TASKS, headers=bearer(issuer.token(sub=USER))).status_code == 200
    issuer.trickle = slow
    flood = [issuer.token(sub=USER, headers={"kid": uuid.uuid4().hex}) for _ in range(50)]
    answers: list[tuple[int, float]] = []

    def flood_them() -> None:
        def one(n: int) -> tuple[int, float]:
            response, elapsed = timed(lambda: client.get(TASKS, headers=bearer(flood[n])))
            return response.status_code, elapsed

        answers.extend(run_together(one, len(flood)))

    flooding = threading.Thread(target=flood_them)
    flooding.start()
    assert issuer.trickling.wait(5), "the flood did not make the issuer fetch"
    hs256 = bearer(sign({"sub": USER}))
    for _ in range(5):
        response, elapsed = timed(lambda: client.get(TASKS, headers=hs256))
        assert response.status_code == 200
        assert elapsed < 1.0
    assert flooding.is_alive(), "the shared-secret requests were to run while the fetch was slow"
    flooding.join()
    assert [status for status, _ in answers] == [401] * len(flood)  # the first fetch's keys are kept
    assert max(elapsed for _, elapsed in answers) < timeout + overhead
    assert issuer.requests == 2


def test_a_kid_refused_just_now_is_refused_at_once(
    make_client: Callable[..., TestClient], jwks_settings: Callable[..., Settings], issuer: Issuer
) -> None:
    """After an unknown kid made the service refetch, unknown kids (that one or others) are
    refused for the cooldown, at once and without a fetch."""
    client = make_client(jwks_settings(jwks_timeout_seconds=TIMEOUT, jwks_refetch_cooldown_seconds=60))
    assert client.get(TASKS, headers=bearer(issuer.token(sub=USER))).status_code == 200
    refused = issuer.token(sub=USER, headers={"kid": uuid.uuid4().hex})
    assert_401(client.get(TASKS, headers=bearer(refused)), UNKNOWN_KEY)
    assert issuer.requests == 2
    issuer.trickle = SLOW  # a fetch now would take the whole timeout
    for token in (refused, issuer.token(sub=USER, headers={"kid": uuid.uuid4().hex})):
        response, elapsed = timed(partial(client.get, TASKS, headers=bearer(token)))
        assert_401(response, UNKNOWN_KEY)
        assert elapsed < 0.5
    assert issuer.requests == 2


def test_a_kid_refused_just_now_does_not_wait_for_a_refresh_under_way(
    make_client: Callable[..., TestClient], jwks_settings: Callable[..., Settings], issuer: Issuer
) -> None:
    """Within that cooldown, a refresh of stale keys under way (slowly) is not waited for either."""
    client = make_client(
        jwks_settings(jwks_timeout_seconds=TIMEOUT, jwks_cache_seconds=2, jwks_refetch_cooldown_seconds=60)
    )
    assert client.get(TASKS, headers=bearer(issuer.token(sub=USER))).status_code == 200
    refused = issuer.token(sub=USER, headers={"kid": uuid.uuid4().hex})
    assert_401(client.get(TASKS, headers=bearer(refused)), UNKNOWN_KEY)
    time.sleep(2)  # the keys are now stale: the next JWKS token refreshes them, slowly
    issuer.trickle = SLOW
    refreshing = threading.Thread(target=lambda: client.get(TASKS, headers=bearer(issuer.token(sub=USER))))
    refreshing.start()
    assert issuer.trickling.wait(5)
    response, elapsed = timed(lambda: client.get(TASKS, headers=bearer(refused)))
    assert_401(response, UNKNOWN_KEY)
    assert elapsed < 0.5
    refreshing.join()
    assert issuer.requests == 3


def test_requests_with_a_new_kid_share_the_one_refetch(
    make_client: Callable[..., TestClient],
    jwks_settings: Callable[..., Settings],
    issuer: Issuer,
    signing_keys: dict[str, SigningKey],
) -> None:
    """A rotated key's first requests often come together (a page loading): the ones that
    arrive while its refetch is under way wait for it and are served, not refused."""
    client = make_client(jwks_settings())
    old = signing_keys["EdDSA"]
    issuer.publish(old)
    assert client.get(TASKS, headers=bearer(issuer.token(key=old, sub=USER))).status_code == 200
    new = SigningKey("EdDSA", generate_key("EdDSA"))
    issuer.publish(new, old)
    issuer.trickle = (4, 0.1)
    token = issuer.token(key=new, sub=USER)
    statuses = run_together(lambda _: client.get(TASKS, headers=bearer(token)).status_code, 10)
    assert statuses == [200] * 10
    assert issuer.requests == 2


def test_a_redirect_from_the_jwks_url_is_not_followed(
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    issuer: Issuer,
    signing_keys: dict[str, SigningKey],
) -> None:
    """The issuer's address is the one configured: a redirect elsewhere is a failed fetch, even
    when the other end would have served the right keys."""
    target = Issuer(signing_keys)
    try:
        issuer.redirect_to = f"{target.url}/api/auth/jwks"
        client = make_client(make_settings(better_auth_url=issuer.url))
        response = client.get(TASKS, headers=bearer(issuer.token(sub=USER)))
        assert response.status_code == 503
        assert response.json() == {"detail": KEYS_UNAVAILABLE}
        assert issuer.requests == 1
        assert target.requests == 0
    finally:
        target.close()


@pytest.fixture
def tls_issuer(signing_keys: dict[str, SigningKey]) -> Iterator[Issuer]:
    issuer = Issuer(signing_keys, tls=True)
    yield issuer
    issuer.close()


def test_an_https_issuer_is_fetched_with_its_certificate_checked(
    make_client: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
    tls_issuer: Issuer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert tls_issuer.url.startswith("https://") and tls_issuer.ca_file is not None
    token = tls_issuer.token(sub=USER)
    untrusting = make_client(make_settings(better_auth_url=tls_issuer.url))
    assert untrusting.get(TASKS, headers=bearer(token)).status_code == 503  # unknown CA: refused
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_issuer.ca_file))
    trusting = make_client(make_settings(better_auth_url=tls_issuer.url))
    assert trusting.get(TASKS, headers=bearer(token)).status_code == 200


PRODUCTION = {"environment": "production", "allowed_hosts": "api.example.com"}


@pytest.mark.parametrize(
    "urls",
    [
        {"better_auth_url": "http://auth.example.com"},
        {"jwt_jwks_url": "http://auth.example.com/api/auth/jwks"},
        {"better_auth_url": "https://auth.example.com", "jwt_jwks_url": "http://10.0.0.7:3000/jwks"},
        {"better_auth_url": "http://localhost.example.com"},
    ],
    ids=["base-url", "jwks-url", "jwks-url-over-an-https-base", "localhost-lookalike"],
)
def test_production_refuses_a_plain_http_jwks_url(urls: dict[str, str]) -> None:
    name = "JWT_JWKS_URL" if "jwt_jwks_url" in urls else "BETTER_AUTH_URL"
    with pytest.raises(ValidationError, match=f"ENVIRONMENT=production refuses {name}=http://"):
        base_settings("sqlite://", **PRODUCTION, **urls)


@pytest.mark.parametrize(
    "urls",
    [
        {"better_auth_url": "https://auth.example.com"},
        {"jwt_jwks_url": "https://auth.example.com/api/auth/jwks"},
        {"better_auth_url": "http://localhost:3000"},
        {"better_auth_url": "http://LOCALHOST:3000"},
        {"better_auth_url": "http://127.0.0.1:3000"},
        {"jwt_jwks_url": "http://[::1]:3000/api/auth/jwks"},
        {"better_auth_url": "http://auth.example.com", "jwt_jwks_url": "https://auth.example.com/jwks"},
        {"better_auth_url": "http://auth.example.com", "jwt_algorithms": "HS256"},  # never fetched
    ],
)
def test_production_accepts_https_and_local_http_jwks_urls(urls: dict[str, str]) -> None:
    assert base_settings("sqlite://", **PRODUCTION, **urls).environment == "production"


def test_plain_http_jwks_urls_are_fine_outside_production() -> None:
    settings = base_settings("sqlite://", better_auth_url="http://auth.example.com")
    assert settings.jwks_url == "http://auth.example.com/api/auth/jwks"


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
def test_the_document_is_read_however_its_end_is_told(
    client: TestClient, issuer: Issuer, framing: Literal["length", "chunked", "close"]
) -> None:
    issuer.framing = framing
    assert client.get(TASKS, headers=bearer(issuer.token(sub=USER))).status_code == 200


def test_a_jwks_without_a_usable_signing_key_is_an_unavailable_issuer(
    client: TestClient, issuer: Issuer
) -> None:
    issuer.published = [{"kty": "oct", "k": "c2VjcmV0", "kid": "shared"}, {"kty": "RSA", "kid": "broken"}]
    response = client.get(TASKS, headers=bearer(issuer.token(sub=USER)))
    assert response.status_code == 503
    assert response.json() == {"detail": KEYS_UNAVAILABLE}
