"""The service's own accounts: register, log in, me, log out, throttling, and Swagger's ways in."""

import re
import threading
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from db import make_engine
from settings import Settings
from testkit import bearer, services_of, sign
from tokens import OWN_TOKEN_AUDIENCE

PASSWORD = "correct horse battery"


def register(client: TestClient, email: str = "ada@example.com", password: str = PASSWORD) -> dict:
    response = client.post("/auth/register", json={"email": email, "password": password, "name": "Ada"})
    assert response.status_code == 201, response.text
    return response.json()


def login(client: TestClient, email: str = "ada@example.com", password: str = PASSWORD) -> dict:
    response = client.post("/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return response.json()


def error_locs(response: Any) -> list[list[str | int]]:
    """The `loc` of each validation error in a 422, in order."""
    assert response.status_code == 422, response.text
    return [error["loc"] for error in response.json()["detail"]]


def stored_hash(settings: Settings, email: str) -> str:
    engine = make_engine(settings)
    with engine.connect() as connection:
        value = connection.execute(text("SELECT password_hash FROM users WHERE email = :e"), {"e": email})
        result = value.scalar_one()
    engine.dispose()
    return result


# --- register ---------------------------------------------------------------------------------


def test_register_returns_the_public_user(client: TestClient) -> None:
    user = register(client, email="  Ada@Example.COM ")
    assert user["email"] == "ada@example.com"
    assert user["name"] == "Ada"
    assert len(user["id"]) == 32
    assert set(user) == {"id", "email", "name", "created_at"}


def test_a_missing_field_does_not_echo_the_password(client: TestClient) -> None:
    """A missing field's error carries the whole body as its `input`: the password must not be in it."""
    password = "hunter2-but-longer"
    response = client.post("/auth/register", json={"email": "ada@example.com", "password": password})
    assert error_locs(response) == [["body", "name"]]
    assert response.json()["detail"][0]["type"] == "missing"
    assert password not in response.text


def test_password_is_stored_as_an_argon2_hash(client: TestClient, settings: Settings) -> None:
    register(client)
    hashed = stored_hash(settings, "ada@example.com")
    assert hashed.startswith("$argon2id$")
    assert PASSWORD not in hashed


def test_emails_are_unique_ignoring_case(client: TestClient) -> None:
    register(client, email="ada@example.com")
    response = client.post(
        "/auth/register", json={"email": "ADA@example.com", "password": PASSWORD, "name": "Other"}
    )
    assert response.status_code == 409
    assert "already" in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "ada@example.com", "password": "short77", "name": "Ada"}, "password"),
        ({"email": "ada@example.com", "password": "x" * 129, "name": "Ada"}, "password"),
        ({"email": "not-an-email", "password": PASSWORD, "name": "Ada"}, "email"),
        ({"email": "ada@localhost", "password": PASSWORD, "name": "Ada"}, "email"),
        ({"email": "ada@example.com", "password": PASSWORD, "name": ""}, "name"),
        ({"email": "ada@example.com", "password": PASSWORD}, "name"),
        ({"email": "ada@example.com", "password": PASSWORD, "name": "Ada", "role": "admin"}, "role"),
        ({"email": "ada@example.com", "password": "nul\u0000password", "name": "Ada"}, "password"),
        ({"email": "ada\u0000@example.com", "password": PASSWORD, "name": "Ada"}, "email"),
    ],
    ids=["short", "long", "no-at", "no-dot", "blank-name", "no-name", "extra-field", "nul", "nul-email"],
)
def test_invalid_registration_is_422(client: TestClient, body: dict, field: str) -> None:
    assert error_locs(client.post("/auth/register", json=body)) == [["body", field]]
    assert (
        client.post("/auth/login", json={"email": "ada@example.com", "password": PASSWORD}).status_code == 401
    )


@pytest.mark.parametrize("length", [8, 128])
def test_password_length_limits_are_inclusive(client: TestClient, length: int) -> None:
    register(client, password="p" * length)
    assert login(client, password="p" * length)["user"]["email"] == "ada@example.com"


# --- login ------------------------------------------------------------------------------------


def test_login_by_json_returns_a_working_token(client: TestClient, settings: Settings) -> None:
    user = register(client)
    result = login(client, email="ADA@example.com")
    assert result["token_type"] == "bearer"
    assert result["expires_in"] == settings.access_token_minutes * 60
    assert result["user"] == user
    headers = bearer(result["access_token"])
    created = client.post(f"/api/{user['id']}/tasks", json={"title": "mine"}, headers=headers)
    assert created.status_code == 201
    assert client.get(f"/api/{user['id']}/tasks", headers=headers).json()[0]["title"] == "mine"


def test_login_by_oauth2_form(client: TestClient) -> None:
    user = register(client)
    form = {"grant_type": "password", "username": "ada@example.com", "password": PASSWORD}
    response = client.post("/auth/login", data=form)
    assert response.status_code == 200
    assert client.get("/auth/me", headers=bearer(response.json()["access_token"])).json() == user


def test_own_tokens_carry_jti_issuer_and_audience(
    make_settings: Callable[..., Settings], make_client: Callable[..., TestClient]
) -> None:
    import jwt

    settings = make_settings(jwt_issuer="https://todo.example", jwt_audience="todo", access_token_minutes=5)
    client = make_client(settings)
    register(client)
    result = login(client)
    claims = jwt.decode(
        result["access_token"],
        settings.secret,
        algorithms=["HS256"],
        audience=OWN_TOKEN_AUDIENCE,  # their own, not JWT_AUDIENCE (the frontend's tokens')
        issuer="https://todo.example",
    )
    assert claims["aud"] == OWN_TOKEN_AUDIENCE
    assert claims["sub"] == result["user"]["id"]
    assert claims["jti"]
    assert claims["exp"] - claims["iat"] == 300 == result["expires_in"]
    assert client.get("/auth/me", headers=bearer(result["access_token"])).status_code == 200


@pytest.mark.parametrize(
    ("email", "password"),
    [("ada@example.com", "wrong password"), ("nobody@example.com", PASSWORD), ("nobody", PASSWORD)],
    ids=["wrong-password", "unknown-email", "not-an-email"],
)
def test_bad_credentials_give_the_same_401(client: TestClient, email: str, password: str) -> None:
    register(client)
    response = client.post("/auth/login", json={"email": email, "password": password})
    assert response.status_code == 401
    assert response.json() == {"detail": "Incorrect email or password"}
    assert response.headers["WWW-Authenticate"] == "Bearer"


NOT_A_LOGIN = "Send JSON {email, password} or an OAuth2 password form (username, password)"


@pytest.mark.parametrize(
    ("content", "content_type"),
    [(b"{", "application/json"), (b"", "application/json")],
    ids=["truncated", "empty"],
)
def test_unreadable_login_is_422_with_what_to_send(
    client: TestClient, content: bytes, content_type: str
) -> None:
    response = client.post("/auth/login", content=content, headers={"Content-Type": content_type})
    assert error_locs(response) == [["body"]]
    assert response.json()["message"] == NOT_A_LOGIN


@pytest.mark.parametrize(
    ("content", "content_type", "locs"),
    [
        (b'{"email": "a@b.io"}', "application/json", [["body", "password"]]),
        (b"[]", "application/json", [["body"]]),
        (b"username=a%40b.io", "application/x-www-form-urlencoded", [["body", "password"]]),
        (b'{"email": "a\\u0000@b.io", "password": "x"}', "application/json", [["body", "email"]]),
    ],
    ids=["no-password", "not-an-object", "form-without-password", "nul-email"],
)
def test_malformed_login_is_422(client: TestClient, content: bytes, content_type: str, locs: list) -> None:
    response = client.post("/auth/login", content=content, headers={"Content-Type": content_type})
    assert error_locs(response) == locs


def test_login_validation_errors_are_located_in_the_body(client: TestClient) -> None:
    response = client.post("/auth/login", json={"email": "a@b.io"})
    assert error_locs(response) == [["body", "password"]]


def test_login_rehashes_when_parameters_change(
    make_settings: Callable[..., Settings], make_client: Callable[..., TestClient]
) -> None:
    old = make_settings(password_hash_memory_kib=1024)
    register(make_client(old))
    assert "m=1024," in stored_hash(old, "ada@example.com")
    new = make_settings(password_hash_memory_kib=2048)
    login(make_client(new))
    assert "m=2048," in stored_hash(new, "ada@example.com")
    login(make_client(new))


# --- throttling -------------------------------------------------------------------------------


def test_repeated_failures_for_one_email_are_throttled(
    make_settings: Callable[..., Settings], make_client: Callable[..., TestClient]
) -> None:
    client = make_client(make_settings(login_max_failures_per_email=3, login_max_failures_per_client=100))
    register(client)
    register(client, email="other@example.com")
    wrong = {"email": "ada@example.com", "password": "wrong password"}
    assert [client.post("/auth/login", json=wrong).status_code for _ in range(3)] == [401, 401, 401]
    blocked = client.post("/auth/login", json={"email": "ada@example.com", "password": PASSWORD})
    assert blocked.status_code == 429
    assert 0 < int(blocked.headers["Retry-After"]) <= 900
    assert login(client, email="other@example.com")["user"]["email"] == "other@example.com"


def test_parallel_guesses_cannot_overrun_the_limit(
    make_settings: Callable[..., Settings], make_client: Callable[..., TestClient]
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    client = make_client(make_settings(login_max_failures_per_email=5, login_max_failures_per_client=100))
    register(client)
    wrong = {"email": "ada@example.com", "password": "wrong password"}
    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(lambda _: client.post("/auth/login", json=wrong).status_code, range(30)))
    assert statuses.count(401) == 5
    assert statuses.count(429) == 25


def test_repeated_failures_from_one_client_are_throttled(
    make_settings: Callable[..., Settings], make_client: Callable[..., TestClient]
) -> None:
    client = make_client(make_settings(login_max_failures_per_email=100, login_max_failures_per_client=3))
    register(client)
    for i in range(3):
        guess = client.post("/auth/login", json={"email": f"guess{i}@example.com", "password": "x"})
        assert guess.status_code == 401
    response = client.post("/auth/login", json={"email": "ada@example.com", "password": PASSWORD})
    assert response.status_code == 429
    assert 0 < int(response.headers["Retry-After"]) <= 900


def test_a_successful_login_clears_the_email_failures(
    make_settings: Callable[..., Settings], make_client: Callable[..., TestClient]
) -> None:
    client = make_client(make_settings(login_max_failures_per_email=3, login_max_failures_per_client=100))
    register(client)
    wrong = {"email": "ada@example.com", "password": "wrong password"}
    for _ in range(2):
        client.post("/auth/login", json=wrong)
    login(client)
    for _ in range(2):
        assert client.post("/auth/login", json=wrong).status_code == 401
    login(client)


def test_an_attacker_elsewhere_cannot_lock_the_owner_out(
    make_settings: Callable[..., Settings], make_client: Callable[..., TestClient]
) -> None:
    app = make_client(make_settings(login_max_failures_per_email=3)).app
    owner = TestClient(app, client=("198.51.100.7", 40000))
    attacker = TestClient(app, client=("203.0.113.9", 40000))
    register(owner)
    wrong = {"email": "ada@example.com", "password": "wrong password"}
    statuses = [attacker.post("/auth/login", json=wrong).status_code for _ in range(6)]
    assert statuses == [401, 401, 401, 429, 429, 429]
    # The attacker's failures count against the attacker's address and this email together:
    # the owner, from their own address, still logs in with the right password.
    assert login(owner)["user"]["email"] == "ada@example.com"
    assert attacker.post("/auth/login", json={**wrong, "password": PASSWORD}).status_code == 429


def test_failures_for_one_email_from_many_addresses_meet_a_backstop(
    make_settings: Callable[..., Settings], make_client: Callable[..., TestClient]
) -> None:
    app = make_client(make_settings(login_max_failures_per_email=3, login_max_failures_per_email_total=4)).app
    register(TestClient(app))
    wrong = {"email": "ada@example.com", "password": "wrong password"}
    statuses = [
        TestClient(app, client=(f"203.0.113.{i}", 40000)).post("/auth/login", json=wrong).status_code
        for i in range(6)
    ]
    assert statuses == [401, 401, 401, 401, 429, 429]
    other = register(TestClient(app), email="other@example.com")
    assert login(TestClient(app, client=("203.0.113.99", 40000)), email="other@example.com")["user"] == other


def test_password_hashing_is_bounded_and_answers_503_when_busy(
    make_settings: Callable[..., Settings], make_client: Callable[..., TestClient]
) -> None:
    client = make_client(make_settings(password_hash_concurrency=1, password_hash_wait_seconds=0.2))
    register(client)
    hasher = services_of(client).hasher
    assert hasher is not None
    taken = threading.Event()

    async def hold_the_only_slot() -> None:
        async with hasher.slot():
            taken.set()
            await anyio.sleep(1)

    assert client.portal is not None
    held = client.portal.start_task_soon(hold_the_only_slot)
    assert taken.wait(5)
    busy = client.post("/auth/login", json={"email": "ada@example.com", "password": PASSWORD})
    assert busy.status_code == 503
    assert busy.headers["Retry-After"] == "1"
    body = {"email": "bo@example.com", "password": PASSWORD, "name": "Bo"}
    refused = client.post("/auth/register", json=body)
    assert refused.status_code == 503
    held.result()
    assert login(client)["user"]["email"] == "ada@example.com"  # the slot is free again


# --- me and logout ----------------------------------------------------------------------------


def test_me_needs_a_token(client: TestClient) -> None:
    assert client.get("/auth/me").status_code == 401


def test_me_for_a_subject_without_an_account_is_404(client: TestClient) -> None:
    assert client.get("/auth/me", headers=bearer(sign({"sub": "better-auth-user"}))).status_code == 404


def test_logout_revokes_the_token(client: TestClient) -> None:
    user = register(client)
    token = login(client)["access_token"]
    other_token = login(client)["access_token"]
    tasks = f"/api/{user['id']}/tasks"
    assert client.get(tasks, headers=bearer(token)).status_code == 200
    assert client.post("/auth/logout", headers=bearer(token)).status_code == 204
    for response in (client.get(tasks, headers=bearer(token)), client.get("/auth/me", headers=bearer(token))):
        assert response.status_code == 401
        assert response.json()["detail"] == "Token has been revoked"
    assert client.post("/auth/logout", headers=bearer(token)).status_code == 401
    assert client.get(tasks, headers=bearer(other_token)).status_code == 200


def test_revocation_survives_a_restart(
    make_settings: Callable[..., Settings], make_client: Callable[..., TestClient]
) -> None:
    settings = make_settings()
    first = make_client(settings)
    user = register(first)
    token = login(first)["access_token"]
    assert first.get(f"/api/{user['id']}/tasks", headers=bearer(token)).status_code == 200
    assert first.post("/auth/logout", headers=bearer(token)).status_code == 204
    first.__exit__(None, None, None)
    restarted = make_client(settings)
    response = restarted.get(f"/api/{user['id']}/tasks", headers=bearer(token))
    assert response.status_code == 401
    assert response.json()["detail"] == "Token has been revoked"


def test_a_logout_reaches_another_instance_at_its_next_revocation_reload(
    make_settings: Callable[..., Settings], make_client: Callable[..., TestClient]
) -> None:
    """Instance B learns of A's logout from the database. With a refresh interval of 0, B
    reloads the revocations on every request, so its very next request refuses the token."""
    instance_a = make_client(make_settings())
    instance_b = make_client(make_settings(revocation_refresh_seconds=0))
    user = register(instance_a)
    token = login(instance_a)["access_token"]
    tasks = f"/api/{user['id']}/tasks"
    assert instance_b.get(tasks, headers=bearer(token)).status_code == 200
    assert instance_a.post("/auth/logout", headers=bearer(token)).status_code == 204
    response = instance_b.get(tasks, headers=bearer(token))
    assert response.status_code == 401
    assert response.json()["detail"] == "Token has been revoked"


def test_logout_clears_expired_revocations(client: TestClient, settings: Settings) -> None:
    engine = make_engine(settings)
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO revoked_token (jti, expires_at) VALUES ('old', :at)"),
            {"at": "2000-01-01 00:00:00"},
        )
    register(client)
    client.post("/auth/logout", headers=bearer(login(client)["access_token"]))
    with engine.connect() as connection:
        jtis = connection.execute(text("SELECT jti FROM revoked_token")).scalars().all()
    engine.dispose()
    assert len(jtis) == 1 and jtis[0] != "old"


def test_a_token_with_an_absurd_exp_can_still_be_logged_out(client: TestClient) -> None:
    token = sign({"sub": "alice", "jti": "far-future"}, lifetime=10**400)
    assert client.get("/api/alice/tasks", headers=bearer(token)).status_code == 200
    assert client.post("/auth/logout", headers=bearer(token)).status_code == 204
    response = client.get("/api/alice/tasks", headers=bearer(token))
    assert response.status_code == 401
    assert response.json()["detail"] == "Token has been revoked"


def test_tokens_without_jti_cannot_be_logged_out(client: TestClient) -> None:
    response = client.post("/auth/logout", headers=bearer(sign({"sub": "alice"})))
    assert response.status_code == 400
    assert "jti" in response.json()["detail"]


def test_accounts_can_be_switched_off(
    make_settings: Callable[..., Settings], make_client: Callable[..., TestClient]
) -> None:
    client = make_client(make_settings(accounts_enabled=False))
    assert (
        client.post("/auth/register", json={"email": "a@b.io", "password": PASSWORD, "name": "A"}).status_code
        == 404
    )
    assert "passwordLogin" not in client.get("/openapi.json").json()["components"]["securitySchemes"]


# --- Swagger's Authorize dialog -----------------------------------------------------------------


def test_docs_offer_both_ways_in(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearerToken"] == {"type": "http", "scheme": "bearer"}
    assert schemes["passwordLogin"]["type"] == "oauth2"
    create = spec["paths"]["/api/{user_id}/tasks"]["post"]
    assert {"bearerToken": []} in create["security"] and {"passwordLogin": []} in create["security"]
    for path, method in [("/auth/me", "get"), ("/auth/logout", "post")]:
        assert {"bearerToken": []} in spec["paths"][path][method]["security"], path
    assert "security" not in spec["paths"]["/auth/login"]["post"]


def test_from_nothing_to_a_task_through_the_documented_login(client: TestClient) -> None:
    """What a person does in /docs: register, Authorize with email and password, create a task."""
    spec = client.get("/openapi.json").json()
    assert "/auth/register" in spec["paths"]
    register(client)
    token_url = spec["components"]["securitySchemes"]["passwordLogin"]["flows"]["password"]["tokenUrl"]
    form = {"grant_type": "password", "username": "ada@example.com", "password": PASSWORD, "scope": ""}
    granted = client.post(token_url, data=form)
    assert granted.status_code == 200
    token = granted.json()
    assert token["token_type"] == "bearer"
    user_id = client.get("/auth/me", headers=bearer(token["access_token"])).json()["id"]
    created = client.post(
        f"/api/{user_id}/tasks", json={"title": "from /docs"}, headers=bearer(token["access_token"])
    )
    assert created.status_code == 201


def test_a_pasted_bearer_token_works_as_swagger_sends_it(client: TestClient) -> None:
    scheme = client.get("/openapi.json").json()["components"]["securitySchemes"]["bearerToken"]
    header = {"Authorization": f"{scheme['scheme'].capitalize()} {sign({'sub': 'alice'})}"}
    assert client.get("/api/alice/tasks", headers=header).status_code == 200


# --- what the OpenAPI document says (found by the schema fuzzer, e2e/test_fuzz.py) --------------

EMAIL_SAMPLES = [
    "ada@example.com",
    "  Ada@Example.COM ",
    "a@b.c",
    "a@b",
    "@b.c",
    "a b@c.de",
    "a@.b.",
    "a@b..c",
    "a@b@c.de",
    "a\x00@b.cd",
    "\u2028\u2005\x04@x.y\u2005",
    "ada@exa mple.com",
]


@pytest.mark.parametrize("email", EMAIL_SAMPLES)
def test_the_documented_email_pattern_is_the_rule_the_api_applies(client: TestClient, email: str) -> None:
    schema = client.get("/openapi.json").json()["components"]["schemas"]["UserRegister"]
    pattern = schema["properties"]["email"]["pattern"]
    body = {"email": email, "password": PASSWORD, "name": "Ada"}
    status = client.post("/auth/register", json=body).status_code
    assert status in (201, 422)
    assert (status == 201) == bool(re.search(pattern, email))


@pytest.mark.parametrize("name", ["Ada", " Ada ", "\u2028\u2005", "  ", "A\x00"])
def test_the_documented_name_pattern_is_the_rule_the_api_applies(client: TestClient, name: str) -> None:
    schema = client.get("/openapi.json").json()["components"]["schemas"]["UserRegister"]
    pattern = schema["properties"]["name"]["pattern"]
    body = {"email": "ada@example.com", "password": PASSWORD, "name": name}
    status = client.post("/auth/register", json=body).status_code
    assert (status == 201) == bool(re.search(pattern, name))


def test_a_blank_login_email_is_documented_as_invalid(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    body = document["paths"]["/auth/login"]["post"]["requestBody"]["content"]["application/json"]
    pattern = body["schema"]["properties"]["email"]["pattern"]
    assert not re.search(pattern, " \u2005 ")
    assert client.post("/auth/login", json={"email": " \u2005 ", "password": "x"}).status_code == 422
