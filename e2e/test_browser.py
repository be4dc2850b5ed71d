"""The service in a real browser: Debian's Chromium, driven by Playwright, against `make run`.

Swagger UI at /docs (offline, under its content policy; the Authorize dialog both ways in; "Try
it out"), and CORS as a frontend at http://localhost:3000 meets it. Only the frontend's page is
made up (`route()` answers its URL, and is gone before the page calls the API); every API
request, preflights included, goes to the real server.
"""

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx2
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Locator,
    Page,
    Route,
    expect,
    sync_playwright,
)

from e2e.conftest import token_for
from testkit import bearer
from testkit.server import RunningServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
TIMEOUT_MS = 10_000

FRONTEND = "http://localhost:3000"  # CORS_ORIGINS' default
OTHER_PORT = "http://localhost:3001"  # not allowed
OTHER_HOST = "http://127.0.0.1:3000"  # not allowed either: another origin than localhost:3000

TASKS_PATH = "/api/{user_id}/tasks"


# --- The browser ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make chromium` installs Debian's Chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh context per test: no token kept by Swagger UI's persistAuthorization, no cache."""
    fresh = browser.new_context(viewport={"width": 1280, "height": 900})
    fresh.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    yield fresh
    fresh.close()


# Content-policy violations, as the page sees them (an init script is not subject to the policy).
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) =>
  window.__violations.push(`${e.violatedDirective} refused ${e.blockedURI}`));
"""


@dataclass
class Watch:
    """What a page did: every request, the failed ones, console errors and uncaught exceptions."""

    requests: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def non_local(self) -> list[str]:
        return [url for url in self.requests if urlsplit(url).hostname not in LOCAL_HOSTS]


def watch(page: Page) -> Watch:
    seen = Watch()

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            seen.errors.append(message.text)

    page.on("request", lambda request: seen.requests.append(request.url))
    page.on("requestfailed", lambda request: seen.failed.append(f"{request.url}: {request.failure}"))
    page.on("console", console)
    page.on("pageerror", lambda error: seen.errors.append(f"uncaught: {error}"))
    page.add_init_script(RECORD_VIOLATIONS)
    return seen


# --- Set-up over HTTP ----------------------------------------------------------------------


def new_user() -> str:
    return f"alice-{secrets.token_hex(4)}"


def create_task(server: RunningServer, user_id: str, title: str) -> dict[str, Any]:
    response = httpx2.post(
        f"{server.url}/api/{user_id}/tasks",
        json={"title": title},
        headers=bearer(token_for(server, user_id)),
    )
    assert response.status_code == 201, response.text
    task: dict[str, Any] = response.json()
    return task


def task_titles(server: RunningServer, user_id: str) -> list[str]:
    response = httpx2.get(f"{server.url}/api/{user_id}/tasks", headers=bearer(token_for(server, user_id)))
    assert response.status_code == 200, response.text
    return [task["title"] for task in response.json()]


def register(server: RunningServer) -> tuple[str, str, str]:
    """A new account: (email, password, its user id)."""
    email = f"ada-{secrets.token_hex(4)}@example.com"
    password = "correct horse battery"
    response = httpx2.post(
        f"{server.url}/auth/register", json={"email": email, "password": password, "name": "Ada"}
    )
    assert response.status_code == 201, response.text
    return email, password, str(response.json()["id"])


# --- Swagger UI ------------------------------------------------------------------------------


def open_docs(page: Page, server: RunningServer) -> None:
    page.goto(f"{server.url}/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Todo API")


def task_list_operation(page: Page) -> Locator:
    """GET /api/{user_id}/tasks in Swagger UI (its block, by method and path)."""
    return page.locator(f'.opblock-get:has(.opblock-summary-path[data-path="{TASKS_PATH}"])').first


def scheme(page: Page, name: str) -> Locator:
    """One security scheme's part of the open Authorize dialog."""
    return page.locator(".modal-ux .auth-container").filter(has=page.locator("h4", has_text=name))


def open_authorize(page: Page) -> None:
    page.locator(".swagger-ui .auth-wrapper button.authorize").click()
    expect(page.locator(".modal-ux")).to_be_visible()


def close_authorize(page: Page) -> None:
    page.locator(".modal-ux button.btn-done").first.click()
    expect(page.locator(".modal-ux")).to_have_count(0)


def authorize_with_token(page: Page, token: str) -> None:
    open_authorize(page)
    part = scheme(page, "bearerToken")
    part.locator("input").fill(token)
    part.locator("button.authorize").click()
    expect(part.locator("button", has_text="Logout")).to_be_visible()


def assert_authorized(page: Page) -> None:
    """The dialog closed: the Authorize button and the task list's lock show it is authorized."""
    expect(page.locator(".swagger-ui .auth-wrapper button.authorize")).to_have_class("btn authorize locked")
    expect(task_list_operation(page).locator("button.authorization__btn")).to_have_attribute(
        "aria-label", "authorization button locked"
    )


def test_docs_load_offline_under_their_policy(
    context: BrowserContext, server: RunningServer, artifacts: Path
) -> None:
    page = context.new_page()
    seen = watch(page)

    open_docs(page, server)
    expect(task_list_operation(page)).to_be_visible()
    expect(task_list_operation(page).locator(".opblock-summary-method")).to_have_text("GET")
    page.wait_for_load_state("networkidle")
    page.screenshot(path=artifacts / "docs.png", full_page=True)

    assert f"{server.url}/openapi.json" in seen.requests
    assert any("/docs/assets/swagger-ui-bundle.js" in url for url in seen.requests)
    assert seen.non_local() == [], f"/docs asked hosts other than this one: {seen.non_local()}"
    assert seen.failed == [], f"requests failed: {seen.failed}"
    assert seen.errors == [], f"console errors: {seen.errors}"
    assert page.evaluate("window.__violations") == [], "content-policy violations"


def test_authorize_with_a_pasted_bearer_token(context: BrowserContext, server: RunningServer) -> None:
    page = context.new_page()
    seen = watch(page)
    open_docs(page, server)
    expect(page.locator(".swagger-ui .auth-wrapper button.authorize")).to_have_class("btn authorize unlocked")

    authorize_with_token(page, token_for(server, new_user()))
    expect(scheme(page, "bearerToken")).to_contain_text("Authorized")
    close_authorize(page)

    assert_authorized(page)
    assert seen.errors == [], f"console errors: {seen.errors}"


def test_authorize_by_logging_in_with_email_and_password(
    context: BrowserContext, server: RunningServer, artifacts: Path
) -> None:
    email, password, user_id = register(server)
    page = context.new_page()
    seen = watch(page)
    open_docs(page, server)

    open_authorize(page)
    part = scheme(page, "passwordLogin")
    part.locator("#oauth_username").fill(email)
    part.locator("#oauth_password").fill(password)
    with page.expect_response(f"{server.url}/auth/login") as login:
        part.locator("button.authorize").click()
    assert login.value.status == 200, login.value.text()
    assert login.value.json()["user"]["id"] == user_id

    expect(part.locator("button", has_text="Logout")).to_be_visible()
    expect(part).to_contain_text("Authorized")
    expect(part).to_contain_text(email)  # the username, shown once logged in
    page.locator(".modal-ux .modal-dialog-ux").screenshot(path=artifacts / "docs-authorize.png")
    close_authorize(page)

    assert_authorized(page)
    assert seen.non_local() == [], seen.non_local()
    assert seen.errors == [], f"console errors: {seen.errors}"


@dataclass
class Tried:
    """One "Try it out" of the task list: the request the browser sent, the service's answer
    and what Swagger UI rendered of it."""

    url: str
    authorization: str | None
    status: int
    text: str
    rendered_status: Locator
    rendered_body: Locator

    def screenshot(self, page: Page, path: Path) -> None:
        """What Swagger UI shows of it: the curl command, the request URL, the code and body."""
        self.rendered_status.wait_for()
        page.locator(".responses-inner > div").first.screenshot(path=path)


def try_task_list(page: Page, token: str, user_id: str) -> Tried:
    """Authorized with `token`: "Try it out" on the task list, only `user_id` filled in (every
    other parameter as Swagger UI fills it), then Execute."""
    authorize_with_token(page, token)
    close_authorize(page)
    operation = task_list_operation(page)
    operation.locator(".opblock-summary").first.click()
    operation.locator("button.try-out__btn").click()
    operation.locator('tr[data-param-name="user_id"] input').fill(user_id)
    with page.expect_request(lambda request: f"/api/{user_id}/tasks" in request.url) as sent:
        operation.locator("button.execute").click()
    answer = sent.value.response()
    assert answer is not None, f"no answer to {sent.value.url}"
    return Tried(
        url=sent.value.url,
        authorization=sent.value.headers.get("authorization"),
        status=answer.status,
        text=answer.text(),
        rendered_status=operation.locator(".live-responses-table .response .response-col_status").first,
        rendered_body=operation.locator(".live-responses-table .response-col_description .microlight").first,
    )


def test_try_it_out_lists_the_users_tasks(
    context: BrowserContext, server: RunningServer, artifacts: Path
) -> None:
    """What a reader gets who fills in only `user_id` and presses Execute: the optional
    parameters' default example is "not sent", so no page size is sent three ways (422), and the
    parameters' patterns are ones the browser can run (no script error)."""
    user_id = new_user()
    title = f"Buy milk {secrets.token_hex(3)}"
    create_task(server, user_id, title)
    page = context.new_page()
    seen = watch(page)
    open_docs(page, server)

    token = token_for(server, user_id)
    tried = try_task_list(page, token, user_id)

    expect(tried.rendered_status).to_have_text("200")
    expect(tried.rendered_body).to_contain_text(title)
    tried.screenshot(page, artifacts / "docs-try-it-out.png")
    assert tried.status == 200, f"{tried.url} answered {tried.status}: {tried.text}"
    assert urlsplit(tried.url).netloc == urlsplit(server.url).netloc
    sent = {name for name, _ in parse_qsl(urlsplit(tried.url).query)}
    assert sent <= {"status"}, f"parameters nobody chose were sent: {tried.url}"
    assert tried.authorization == f"Bearer {token}", "not the pasted token"
    assert seen.non_local() == [], seen.non_local()
    assert seen.errors == [], f"console errors: {seen.errors}"


# --- CORS: a frontend's page calling the API -------------------------------------------------

# The frontend: its "Load" button calls the API and leaves the outcome in window.outcome (and
# the title), as an app would show it. A refused CORS check makes fetch reject with a TypeError.
FRONTEND_PAGE = """<!doctype html>
<html><head><title>ready</title><link rel="icon" href="data:,"></head><body>
<button id="load">Load</button>
<script>
const call = %s;
document.getElementById("load").addEventListener("click", async () => {
  try {
    const response = await fetch(call.url, call.init);
    const body = await response.json();
    window.outcome = {
      ok: true, status: response.status, body,
      total: response.headers.get("X-Total-Count"), location: response.headers.get("Location"),
    };
    document.title = `${response.status}`;
  } catch (error) {
    window.outcome = {ok: false, error: error.name, message: error.message};
    document.title = error.name;
  }
});
</script>
</body></html>
"""


@dataclass
class Visit:
    outcome: dict[str, Any]  # what the page's script could read
    seen: Watch
    api_requests: list[str]  # the requests the page made to the API (preflights aside)
    preflights: list[dict[str, Any]]  # the preflights' answers, as Chromium received them


def visit(
    context: BrowserContext, server: RunningServer, origin: str, path: str, init: dict[str, Any]
) -> Visit:
    """Open the frontend at `origin`, press its button: it calls `server.url + path` with `init`
    (fetch's options).

    `route()` answers the page's own URL once, and is removed before the page calls the API:
    while any route is set, Playwright answers every CORS preflight itself, allowing everything,
    and the service's CORS would not be tested at all.

    Chromium's Local Network Access lets a page reach 127.0.0.1 only from a local address, or
    with the user's permission. A page that `route()` answers has no address (it counts as
    public), so the permission is granted: what is left to pass or refuse is CORS.
    """
    context.grant_permissions(["local-network-access"], origin=origin)
    page_url = f"{origin}/"
    call = json.dumps({"url": server.url + path, "init": init})

    def fulfil(route: Route) -> None:
        route.fulfill(status=200, content_type="text/html; charset=utf-8", body=FRONTEND_PAGE % call)

    context.route(page_url, fulfil)
    page = context.new_page()
    seen = watch(page)
    preflights: list[dict[str, Any]] = []
    cdp = context.new_cdp_session(page)

    def received(event: dict[str, Any]) -> None:
        if event["type"] == "Preflight":
            preflights.append(event["response"])

    cdp.on("Network.responseReceived", received)
    cdp.send("Network.enable")
    page.goto(page_url)
    context.unroute(page_url)

    page.click("#load")
    page.wait_for_function("window.outcome !== undefined")
    outcome: dict[str, Any] = page.evaluate("window.outcome")
    api_requests = [url for url in seen.requests if url.startswith(server.url)]
    return Visit(outcome, seen, api_requests, preflights)


def preflight_answer(visit: Visit) -> tuple[int, dict[str, str]]:
    """The one preflight's status and headers, checked to come from the service (its answers
    carry X-Request-ID), not from a stand-in."""
    assert len(visit.preflights) == 1, f"expected one preflight: {visit.preflights}"
    answer = visit.preflights[0]
    headers = {name.lower(): value for name, value in answer["headers"].items()}
    assert "x-request-id" in headers, f"the preflight was not answered by the service: {answer}"
    return int(answer["status"]), headers


PREFLIGHT_REFUSED = "Response to preflight request doesn't pass access control check"


def test_cors_allowed_origin_reads_the_list_and_its_count(
    context: BrowserContext, server: RunningServer
) -> None:
    user_id = new_user()
    titles = [f"Task {n}" for n in range(3)]
    for title in titles:
        create_task(server, user_id, title)

    seen = visit(
        context, server, FRONTEND, f"/api/{user_id}/tasks", {"headers": bearer(token_for(server, user_id))}
    )

    assert seen.outcome["ok"], f"the fetch from {FRONTEND} failed: {seen.outcome} {seen.seen.errors}"
    assert seen.outcome["status"] == 200
    assert seen.outcome["total"] == str(len(titles)), "X-Total-Count not exposed, or wrong"
    assert sorted(task["title"] for task in seen.outcome["body"]) == sorted(titles)
    assert seen.api_requests == [f"{server.url}/api/{user_id}/tasks"]
    # Authorization makes it preflighted; the service allowed it.
    status, headers = preflight_answer(seen)
    assert (status, headers.get("access-control-allow-origin")) == (200, FRONTEND), headers
    assert seen.seen.errors == [], seen.seen.errors


@pytest.mark.parametrize("origin", [OTHER_PORT, OTHER_HOST])
def test_cors_other_origins_are_refused_by_the_browser(
    context: BrowserContext, server: RunningServer, origin: str
) -> None:
    user_id = new_user()
    create_task(server, user_id, "Not for that page")

    seen = visit(
        context, server, origin, f"/api/{user_id}/tasks", {"headers": bearer(token_for(server, user_id))}
    )

    assert not seen.outcome["ok"], f"{origin} could read the answer: {seen.outcome}"
    assert seen.outcome["error"] == "TypeError", seen.outcome
    status, headers = preflight_answer(seen)
    assert status == 400, headers
    assert "access-control-allow-origin" not in headers, headers
    refusal = f"from origin '{origin}' has been blocked by CORS policy: {PREFLIGHT_REFUSED}"
    assert any(refusal in error for error in seen.seen.errors), seen.seen.errors


def test_cors_allowed_origin_creates_a_task(context: BrowserContext, server: RunningServer) -> None:
    """A JSON POST is preflighted (its Content-Type and Authorization): allowed, it is written."""
    user_id = new_user()
    title = f"From the frontend {secrets.token_hex(3)}"
    init = {
        "method": "POST",
        "headers": {**bearer(token_for(server, user_id)), "Content-Type": "application/json"},
        "body": json.dumps({"title": title}),
    }

    seen = visit(context, server, FRONTEND, f"/api/{user_id}/tasks", init)

    assert seen.outcome["ok"], f"the POST from {FRONTEND} failed: {seen.outcome} {seen.seen.errors}"
    assert seen.outcome["status"] == 201, seen.outcome
    assert seen.outcome["body"]["title"] == title
    assert seen.outcome["location"], "Location is not exposed to the page"
    status, headers = preflight_answer(seen)
    assert (status, headers.get("access-control-allow-origin")) == (200, FRONTEND), headers
    assert "content-type" in headers.get("access-control-allow-headers", "").lower(), headers
    assert task_titles(server, user_id) == [title]


def test_cors_other_origin_cannot_create_a_task(context: BrowserContext, server: RunningServer) -> None:
    """Refused at the preflight, the POST itself is never sent: nothing is written."""
    user_id = new_user()
    init = {
        "method": "POST",
        "headers": {**bearer(token_for(server, user_id)), "Content-Type": "application/json"},
        "body": json.dumps({"title": "Sneaked in"}),
    }

    seen = visit(context, server, OTHER_PORT, f"/api/{user_id}/tasks", init)

    assert not seen.outcome["ok"], seen.outcome
    assert seen.outcome["error"] == "TypeError", seen.outcome
    assert preflight_answer(seen)[0] == 400
    assert any(PREFLIGHT_REFUSED in error for error in seen.seen.errors), seen.seen.errors
    assert task_titles(server, user_id) == []
