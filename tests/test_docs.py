"""/docs and /redoc with no internet: every file they load is served by the app, and their
content policy lets the browser load nothing from anywhere else."""

import base64
import hashlib
import re
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest
from fastapi.testclient import TestClient

from settings import Settings
from testkit import bearer, sign

PAGES = ("/docs", "/redoc")
REDIRECT = "/docs/oauth2-redirect"
CSS_URL = re.compile(r"""url\(\s*['"]?([^'")\s]+)""")
IMPORT = re.compile(r"""@import\s+['"]([^'"]+)""")
ABSOLUTE = re.compile(r"(?:https?:)?//[^\s'\"]")
# What a reference must answer, by what the page loads it as: a content type and a least size
# (the real files are far larger: a stub or an error page is not).
EXPECTED = {
    "script": ("javascript", 100_000),
    "stylesheet": ("text/css", 10_000),
    "icon": ("image/", 100),
    "spec": ("application/json", 1_000),
}


class Page(HTMLParser):
    """What an HTML page makes the browser load: its references by kind, inline scripts, CSS."""

    def __init__(self) -> None:
        super().__init__()
        self.references: list[tuple[str, str]] = []
        self.inline_scripts: list[str] = []
        self.css: list[str] = []  # <style> elements and style= attributes
        self.inside: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        rel = values.get("rel", "").split()
        for name in ("src", "href", "spec-url", "srcset", "poster", "data"):
            if name not in values:
                continue
            if tag == "script":
                kind = "script"
            elif "stylesheet" in rel:
                kind = "stylesheet"
            elif "icon" in rel or tag == "img":
                kind = "icon"
            elif name == "spec-url":
                kind = "spec"
            else:
                kind = f"<{tag} {name}>"  # anything else: no expectation, so the test says what
            self.references.append((kind, values[name]))
        if "style" in values:
            self.css.append(values["style"])
        if tag == "style":
            self.inside = "style"
            self.css.append("")
        elif tag == "script" and "src" not in values:
            self.inside = "script"
            self.inline_scripts.append("")

    def handle_data(self, data: str) -> None:
        if self.inside == "script":
            self.inline_scripts[-1] += data
        elif self.inside == "style":
            self.css[-1] += data

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self.inside = None

    @property
    def css_urls(self) -> list[str]:
        return [url for css in self.css for url in CSS_URL.findall(css) + IMPORT.findall(css)]


def page(client: TestClient, path: str) -> Page:
    response = client.get(path)
    assert response.status_code == 200, path
    assert response.headers["content-type"].startswith("text/html")
    parsed = Page()
    parsed.feed(response.text)
    parsed.close()
    return parsed


def is_absolute(url: str) -> bool:
    return bool(urlsplit(url).scheme) or url.startswith("//")


def sha256_source(script: str) -> str:
    return f"'sha256-{base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()}'"


def directives(policy: str) -> dict[str, list[str]]:
    parsed = {}
    for directive in policy.split(";"):
        name, *sources = directive.split()
        parsed[name.lower()] = sources
    return parsed


# --- the pages load only the app's own files ------------------------------------------------------


@pytest.mark.parametrize("path", PAGES)
def test_the_docs_pages_name_no_other_site(client: TestClient, path: str) -> None:
    docs = page(client, path)
    urls = [url for _, url in docs.references] + docs.css_urls
    assert urls, "the page references nothing: the parser is not reading it"
    assert [url for url in urls if is_absolute(url)] == []
    for script in docs.inline_scripts:
        assert ABSOLUTE.findall(script) == [], "an inline script names another site"


@pytest.mark.parametrize("path", PAGES)
def test_every_file_the_docs_load_is_served_by_the_app(client: TestClient, path: str) -> None:
    docs = page(client, path)
    kinds = {kind for kind, _ in docs.references}
    assert {"script", "icon"} <= kinds
    assert "stylesheet" in kinds or path == "/redoc"  # ReDoc brings its styles in its script
    for kind, url in docs.references:
        assert kind in EXPECTED, f"{path} loads {url} as {kind}"
        content_type, least = EXPECTED[kind]
        response = client.get(urljoin(f"http://testserver{path}", url))
        assert response.status_code == 200, url
        assert content_type in response.headers["content-type"], url
        assert len(response.content) >= least, url


def test_swagger_ui_is_version_5(client: TestClient) -> None:
    (bundle,) = [url for kind, url in page(client, "/docs").references if kind == "script"]
    version = re.search(r'PACKAGE_VERSION:"(\d+)\.(\d+)\.(\d+)"', client.get(bundle).text)
    assert version is not None, "no version string in the Swagger UI bundle"
    assert version.group(1) == "5", version.group(0)


def test_swagger_ui_reads_the_document_and_returns_from_oauth2_here(client: TestClient) -> None:
    (script,) = page(client, "/docs").inline_scripts
    assert "url: '/openapi.json'" in script
    assert f"oauth2RedirectUrl: window.location.origin + '{REDIRECT}'" in script
    redirect = client.get(REDIRECT)
    assert redirect.status_code == 200
    assert redirect.headers["content-type"].startswith("text/html")
    assert "window.opener.swaggerUIRedirectOauth2" in redirect.text


def test_the_docs_follow_the_path_the_app_is_mounted_at(
    make_client: Callable[..., TestClient], settings: Settings
) -> None:
    """Behind a proxy that strips a prefix (uvicorn --root-path), the pages name it."""
    client = make_client(settings, root_path="/todo")
    docs = page(client, "/docs")
    assert all(url.startswith("/todo/") for _, url in docs.references)
    assert "url: '/todo/openapi.json'" in docs.inline_scripts[0]
    assert f"'/todo{REDIRECT}'" in docs.inline_scripts[0]
    assert all(url.startswith("/todo/") for _, url in page(client, "/redoc").references)


# --- the pages' content policy -------------------------------------------------------------------


@pytest.mark.parametrize("path", [*PAGES, REDIRECT])
def test_the_docs_policy_allows_no_other_origin(client: TestClient, path: str) -> None:
    response = client.get(path)
    policies = response.headers.get_list("content-security-policy")
    assert len(policies) == 1, "a second policy would be enforced alongside the first"
    policy = directives(policies[0])
    assert policy["default-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    allowed = {"'self'", "'none'"}
    extra = {"style-src": {"'unsafe-inline'"}, "img-src": {"data:"}, "worker-src": {"blob:"}}
    for name in ("script-src", "style-src", "font-src", "img-src", "connect-src", "worker-src"):
        sources = policy.get(name, policy["default-src"])
        remote = [
            source
            for source in sources
            if source not in allowed | extra.get(name, set()) and not source.startswith("'sha256-")
        ]
        assert remote == [], f"{path}: {name} allows {remote}"
    assert "'unsafe-inline'" not in policy["script-src"]
    assert "'unsafe-eval'" not in policies[0]


@pytest.mark.parametrize("path", [*PAGES, REDIRECT])
def test_the_docs_policy_runs_the_pages_own_inline_scripts_and_no_other(
    client: TestClient, path: str
) -> None:
    response = client.get(path)
    script_src = directives(response.headers["content-security-policy"])["script-src"]
    hashes = {source for source in script_src if source.startswith("'sha256-")}
    parsed = Page()
    parsed.feed(response.text)
    assert hashes == {sha256_source(script) for script in parsed.inline_scripts}


def test_production_docs_keep_their_policy_and_forget_the_token(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
) -> None:
    """The start-up script differs in production (no persistAuthorization): so does its hash."""
    development = make_client(make_settings()).get("/docs")
    production = make_client(make_settings(environment="production", allowed_hosts=["testserver"])).get(
        "/docs"
    )
    assert '"persistAuthorization": true' in development.text
    assert '"persistAuthorization": false' in production.text
    for response in (development, production):
        parsed = Page()
        parsed.feed(response.text)
        (script,) = parsed.inline_scripts
        assert sha256_source(script) in response.headers["content-security-policy"]


# --- DOCS_ENABLED --------------------------------------------------------------------------------


def test_docs_disabled_hide_the_pages_and_their_files_not_the_api(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings]
) -> None:
    shown = make_client(make_settings())
    files = {url for path in PAGES for kind, url in page(shown, path).references if kind != "spec"}
    assert len(files) >= 4  # Swagger UI's script and styles, ReDoc's script, the favicon
    hidden = make_client(make_settings(docs_enabled=False))
    for path in [*PAGES, REDIRECT, *sorted(files)]:
        assert hidden.get(path).status_code == 404, path
    alice = bearer(sign({"sub": "alice"}))
    created = hidden.post("/api/alice/tasks", json={"title": "t"}, headers=alice)
    assert created.status_code == 201
    assert hidden.get("/api/alice/tasks", headers=alice).json()[0]["title"] == "t"
    # The document stays: clients are generated from it.
    spec = hidden.get("/openapi.json")
    assert spec.status_code == 200
    assert "passwordLogin" in spec.json()["components"]["securitySchemes"]


def test_the_password_login_is_still_offered_to_swagger(client: TestClient) -> None:
    schemes = client.get("/openapi.json").json()["components"]["securitySchemes"]
    assert schemes["passwordLogin"]["flows"]["password"]["tokenUrl"] == "/auth/login"
    assert schemes["bearerToken"] == {"type": "http", "scheme": "bearer"}


def walk(node: object) -> Iterator[tuple[str, object]]:
    """Every (key, value) of a JSON document, at any depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def test_every_parameters_default_example_is_the_first(client: TestClient) -> None:
    """Swagger UI's "Try it out" fills a parameter with its first example ("not sent"), in the
    order of the object's keys, and a browser orders integer-like keys ("20") before all others:
    named so, `20` would be sent for limit, page_size and per_page at once, a 422."""
    document = client.get("/openapi.json").json()
    named = [
        (parameter["name"], list(parameter["examples"]))
        for operations in document["paths"].values()
        for operation in operations.values()
        for parameter in operation.get("parameters", [])
        if "examples" in parameter
    ]
    assert named, "no parameter has examples"
    for name, keys in named:
        assert not [key for key in keys if key.isdigit()], f"{name}: {keys}"


def test_every_pattern_is_one_a_browser_can_run(client: TestClient) -> None:
    """The document's patterns are ECMA-262 (what Swagger UI checks a value with): no inline
    flags such as Python's `(?i)`, no Python-only escapes, and each still compiles here."""
    patterns = [value for key, value in walk(client.get("/openapi.json").json()) if key == "pattern"]
    assert patterns, "no pattern in the document"
    for pattern in patterns:
        assert isinstance(pattern, str)
        assert not re.search(r"\(\?[aiLmsux]", pattern), pattern
        assert not re.search(r"\\[AZ]", pattern), pattern
        re.compile(pattern)
