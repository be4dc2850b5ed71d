"""Bearer tokens signed with the shared secret (HS256): what is accepted and what is refused."""

import base64
import json
import time
from collections.abc import Callable

import jwt
import pytest
from fastapi.testclient import TestClient

from settings import Settings
from testkit import TEST_SECRET, bearer, sign
from tokens import OWN_TOKEN_AUDIENCE, mint_token

TASKS = "/api/alice/tasks"


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def assert_401(response, detail: str | None = None) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    if detail is not None:
        assert response.json()["detail"] == detail


ROUTES = [
    ("GET", TASKS),
    ("POST", TASKS),
    ("GET", f"{TASKS}/1"),
    ("PUT", f"{TASKS}/1"),
    ("PATCH", f"{TASKS}/1"),
    ("PATCH", f"{TASKS}/1/complete"),
    ("PATCH", f"{TASKS}/1/toggle"),
    ("DELETE", f"{TASKS}/1"),
]


@pytest.mark.parametrize(("method", "url"), ROUTES)
def test_every_task_route_needs_a_token(client: TestClient, method: str, url: str) -> None:
    response = client.request(method, url, json={"title": "x"})
    assert_401(response)
    assert "Bearer" in response.json()["detail"]


def test_valid_token_is_accepted(client: TestClient) -> None:
    assert client.get(TASKS, headers=bearer(sign({"sub": "alice"}))).status_code == 200


def test_scheme_is_case_insensitive(client: TestClient) -> None:
    token = sign({"sub": "alice"})
    assert client.get(TASKS, headers={"Authorization": f"bearer {token}"}).status_code == 200


@pytest.mark.parametrize(
    ("authorization", "detail"),
    [
        ("Basic YWxpY2U6c2VjcmV0", "Authorization scheme must be Bearer"),
        ("Token abc", "Authorization scheme must be Bearer"),
        ("Bearer", "Bearer token is empty"),
        ("Bearer ", "Bearer token is empty"),
        ("Bearer not-a-jwt", "Token is malformed"),
        ("Bearer a.b.c", "Token is malformed"),
        ("Bearer \u00e9\u00e9.\u00e9.x", "Token is malformed"),
    ],
)
def test_garbage_is_401(client: TestClient, authorization: str, detail: str) -> None:
    headers = {b"Authorization": authorization.encode("utf-8")}
    assert_401(client.get(TASKS, headers=headers), detail)


def test_expired_token_is_401(client: TestClient) -> None:
    token = sign({"sub": "alice", "iat": int(time.time()) - 7200}, lifetime=-3600)
    assert_401(client.get(TASKS, headers=bearer(token)), "Token has expired")


def test_expiry_has_a_small_leeway(make_settings: Callable[..., Settings], make_client) -> None:
    client = make_client(make_settings(jwt_leeway_seconds=30))
    just_expired = sign({"sub": "alice"}, lifetime=-5)
    assert client.get(TASKS, headers=bearer(just_expired)).status_code == 200
    long_expired = sign({"sub": "alice"}, lifetime=-60)
    assert_401(client.get(TASKS, headers=bearer(long_expired)), "Token has expired")


def test_token_without_exp_is_401(client: TestClient) -> None:
    token = jwt.encode({"sub": "alice", "iat": int(time.time())}, TEST_SECRET, algorithm="HS256")
    assert_401(client.get(TASKS, headers=bearer(token)), "Token has no 'exp' claim")


def test_token_not_yet_valid_is_401(client: TestClient) -> None:
    token = sign({"sub": "alice", "nbf": int(time.time()) + 3600}, lifetime=7200)
    assert_401(client.get(TASKS, headers=bearer(token)), "Token is not valid yet")


def test_token_issued_in_the_future_is_401(client: TestClient) -> None:
    token = sign({"sub": "alice", "iat": int(time.time()) + 3600}, lifetime=7200)
    assert_401(client.get(TASKS, headers=bearer(token)), "Token is not valid yet")


def test_wrong_secret_is_401(client: TestClient) -> None:
    token = sign({"sub": "alice"}, secret="another-secret-" + "y" * 40)
    assert_401(client.get(TASKS, headers=bearer(token)), "Token signature is invalid")


def test_tampered_payload_is_401(client: TestClient) -> None:
    header, _, signature = sign({"sub": "bob"}).split(".")
    forged = f"{header}.{b64({'sub': 'alice', 'exp': int(time.time()) + 900})}.{signature}"
    assert_401(client.get(TASKS, headers=bearer(forged)), "Token signature is invalid")


def test_tampered_signature_is_401(client: TestClient) -> None:
    token = sign({"sub": "alice"})
    head, payload, signature = token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    assert_401(client.get(TASKS, headers=bearer(f"{head}.{payload}.{flipped}")), "Token signature is invalid")


@pytest.mark.parametrize("alg", [["HS256"], {"name": "HS256"}, None, 256])
def test_alg_that_is_not_a_name_is_401(client: TestClient, alg: object) -> None:
    token = f"{b64({'alg': alg, 'typ': 'JWT'})}.{b64({'sub': 'alice', 'exp': int(time.time()) + 900})}.sig"
    assert_401(client.get(TASKS, headers=bearer(token)), "Token algorithm is not accepted")


def test_alg_none_is_401(client: TestClient) -> None:
    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64({'sub': 'alice', 'exp': int(time.time()) + 900})}."
    assert_401(client.get(TASKS, headers=bearer(unsigned)), "Token algorithm is not accepted")


@pytest.mark.parametrize("alg", ["HS384", "HS512"])
def test_unconfigured_algorithms_are_401(client: TestClient, alg: str) -> None:
    token = jwt.encode({"sub": "alice", "exp": int(time.time()) + 900}, TEST_SECRET, algorithm=alg)
    assert_401(client.get(TASKS, headers=bearer(token)), "Token algorithm is not accepted")


def test_hs256_can_be_switched_off(make_settings: Callable[..., Settings], make_client) -> None:
    client = make_client(make_settings(jwt_algorithms="EdDSA,ES256"))
    assert_401(client.get(TASKS, headers=bearer(sign({"sub": "alice"}))), "Token algorithm is not accepted")


def test_oversized_token_is_401(client: TestClient) -> None:
    token = sign({"sub": "alice", "padding": "x" * 9000})
    assert_401(client.get(TASKS, headers=bearer(token)), "Token is too large")


@pytest.mark.parametrize(
    "claims",
    [
        {},
        {"sub": ""},
        {"sub": 42},
        {"sub": None},
        {"sub": ["alice"]},
        {"sub": " alice"},
        {"sub": "x" * 256},
        {"sub": "a\u0000b"},
        {"sub": "a\ud800b"},
    ],
    ids=["none", "empty", "number", "null", "list", "padded", "too-long", "nul", "surrogate"],
)
def test_token_without_a_usable_subject_is_401(client: TestClient, claims: dict) -> None:
    assert_401(client.get(TASKS, headers=bearer(sign(claims))), "Token has no usable subject")


@pytest.mark.parametrize("claim", ["id", "user_id", "userId"])
def test_subject_falls_back_to_id_claims(client: TestClient, claim: str) -> None:
    response = client.post(TASKS, json={"title": "x"}, headers=bearer(sign({claim: "alice"})))
    assert response.status_code == 201
    assert response.json()["user_id"] == "alice"


def test_sub_wins_over_the_fallbacks(client: TestClient) -> None:
    token = sign({"sub": "alice", "id": "bob"})
    assert client.get(TASKS, headers=bearer(token)).status_code == 200
    assert client.get("/api/bob/tasks", headers=bearer(token)).status_code == 403


def test_subject_claims_are_a_setting(make_settings: Callable[..., Settings], make_client) -> None:
    client = make_client(make_settings(jwt_subject_claims="uid"))
    assert client.get(TASKS, headers=bearer(sign({"uid": "alice"}))).status_code == 200
    assert_401(client.get(TASKS, headers=bearer(sign({"sub": "alice"}))), "Token has no usable subject")


@pytest.mark.parametrize("typ", ["JWT", "jwt", "at+jwt"])
def test_access_token_types_are_accepted(client: TestClient, typ: str) -> None:
    assert client.get(TASKS, headers=bearer(sign({"sub": "alice"}, typ=typ))).status_code == 200


def test_session_cache_token_is_refused(client: TestClient) -> None:
    token = sign({"sub": "alice"}, typ="better-auth.session-cache+jwt")
    assert_401(client.get(TASKS, headers=bearer(token)), "Token type is not an access token")
    by_audience = sign({"sub": "alice", "aud": "better-auth:session-cache"})
    assert_401(client.get(TASKS, headers=bearer(by_audience)), "Token type is not an access token")


def test_configured_issuer_and_audience_apply_to_hs256(
    make_settings: Callable[..., Settings], make_client
) -> None:
    client = make_client(make_settings(jwt_issuer="https://app.example", jwt_audience="todo-api"))
    good = sign({"sub": "alice", "iss": "https://app.example", "aud": "todo-api"})
    assert client.get(TASKS, headers=bearer(good)).status_code == 200
    wrong_iss = sign({"sub": "alice", "iss": "https://evil.example", "aud": "todo-api"})
    assert_401(client.get(TASKS, headers=bearer(wrong_iss)), "Token issuer is not accepted")
    wrong_aud = sign({"sub": "alice", "iss": "https://app.example", "aud": "other"})
    assert_401(client.get(TASKS, headers=bearer(wrong_aud)), "Token audience is not accepted")
    missing = sign({"sub": "alice"})
    assert_401(client.get(TASKS, headers=bearer(missing)), "Token has no 'iss' claim")


@pytest.mark.parametrize("jti", ["x" * 65, "", "a\u0000b", " padded"])
def test_unusable_jti_is_401(client: TestClient, jti: str) -> None:
    assert_401(
        client.get(TASKS, headers=bearer(sign({"sub": "alice", "jti": jti}))), "Token has an unusable jti"
    )


def test_a_jti_that_is_not_a_string_is_401(client: TestClient) -> None:
    assert_401(client.get(TASKS, headers=bearer(sign({"sub": "alice", "jti": 42}))))


def test_a_jti_that_is_not_a_string_is_reported_as_unusable(client: TestClient) -> None:
    response = client.get(TASKS, headers=bearer(sign({"sub": "alice", "jti": 42})))
    assert_401(response, "Token has an unusable jti")


@pytest.mark.parametrize("user_id", ["日本語", "a?b", "100%", "x y", "ünï", "a#b"])
def test_any_subject_works_in_paths_and_headers(client: TestClient, user_id: str) -> None:
    from urllib.parse import quote

    headers = bearer(sign({"sub": user_id}))
    base = f"/api/{quote(user_id, safe='')}/tasks"
    created = client.post(base, json={"title": "first"}, headers=headers)
    assert created.status_code == 201
    assert created.json()["user_id"] == user_id
    assert client.get(created.headers["Location"], headers=headers).json() == created.json()
    client.post(base, json={"title": "second"}, headers=headers)
    page = client.get(f"{base}?limit=1", headers=headers)
    assert page.status_code == 200
    second_page = client.get(page.links["next"]["url"], headers=headers)
    assert [t["title"] for t in second_page.json()] == ["first"]


def test_refused_token_stores_nothing(client: TestClient, alice: dict) -> None:
    forged = sign({"sub": "alice"}, secret="z" * 40)
    assert client.post(TASKS, json={"title": "x"}, headers=bearer(forged)).status_code == 401
    assert client.get(TASKS, headers=alice).json() == []


# --- the service's own tokens and the frontend's, told apart by `aud` ------------------------

FRONTEND_AUDIENCE = "https://app.example"


@pytest.mark.parametrize("jwt_audience", [None, FRONTEND_AUDIENCE])
def test_own_tokens_carry_their_own_audience(
    make_settings: Callable[..., Settings], jwt_audience: str | None
) -> None:
    token, _ = mint_token(make_settings(jwt_audience=jwt_audience), "alice")
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["aud"] == OWN_TOKEN_AUDIENCE != FRONTEND_AUDIENCE


def test_jwt_audience_binds_the_frontends_hs256_tokens_and_own_tokens_still_work(
    make_settings: Callable[..., Settings], make_client
) -> None:
    settings = make_settings(jwt_audience=FRONTEND_AUDIENCE)
    client = make_client(settings)
    own, _ = mint_token(settings, "alice")
    assert client.get(TASKS, headers=bearer(own)).status_code == 200
    frontend = sign({"sub": "alice", "aud": FRONTEND_AUDIENCE})
    assert client.get(TASKS, headers=bearer(frontend)).status_code == 200
    wrong = sign({"sub": "alice", "aud": "https://another-app.example"})
    assert_401(client.get(TASKS, headers=bearer(wrong)), "Token audience is not accepted")
    without = sign({"sub": "alice"})
    assert_401(client.get(TASKS, headers=bearer(without)), "Token has no 'aud' claim")


def test_without_jwt_audience_hs256_tokens_need_no_audience(
    make_settings: Callable[..., Settings], make_client
) -> None:
    """Better Auth's shared-secret route sets no `aud`: its tokens work as long as JWT_AUDIENCE
    is unset, and so do the service's own, which carry one."""
    settings = make_settings()
    client = make_client(settings)
    assert client.get(TASKS, headers=bearer(sign({"sub": "alice"}))).status_code == 200
    assert client.get(TASKS, headers=bearer(mint_token(settings, "alice")[0])).status_code == 200
