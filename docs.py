"""The documentation pages, /docs (Swagger UI) and /redoc (ReDoc), working with no internet.

FastAPI's own pages load their scripts, styles, fonts and favicon from CDNs, and are blank
without them. These are FastAPI's same page templates pointed at files installed with the
fastapi-offline package (Swagger UI 5, ReDoc 2, a favicon), served under /docs/assets/. Each page
carries its own Content-Security-Policy: this origin only, and its inline scripts by their hash.
"""

import base64
import hashlib
import re

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
ASSETS_URL = "/docs/assets"
# The package, and its directory holding swagger-ui-bundle.js, swagger-ui.css,
# redoc.standalone.js and favicon.png: the files the pages below name.
ASSETS_PACKAGE = ("fastapi_offline", "static")

# The inline scripts of FastAPI's templates (Swagger UI's start-up, the OAuth2 redirect): a
# <script> with no attributes. Those with a src= are loaded from this origin.
INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def content_policy(html: str) -> str:
    """The policy of one docs page: everything from this origin, nothing from elsewhere.

    Inline scripts run only if they are the page's own (by SHA-256 hash, not 'unsafe-inline', so
    that an injected one does not). Inline styles are allowed: ReDoc's styled components and
    Swagger UI's React write them at run time. ReDoc's search runs in a worker made from a blob:;
    Swagger UI's icons are data: images. Requests ("Try it out", the password login) go to the
    API itself. ReDoc's footer asks for Redocly's logo from its CDN: refused, and it hides it.
    """
    hashes = "".join(
        f" 'sha256-{base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()}'"
        for script in INLINE_SCRIPT.findall(html)
    )
    return (
        f"default-src 'none'; script-src 'self'{hashes}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; font-src 'self'; connect-src 'self'; worker-src 'self' blob:; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


def with_policy(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = content_policy(bytes(page.body).decode())
    return page


def add_docs(app: FastAPI) -> None:
    """Serve /docs, its OAuth2 redirect page, /redoc and their files.

    The app must be built with docs_url=None and redoc_url=None, so that FastAPI does not add
    its CDN pages; its swagger_ui_parameters, swagger_ui_init_oauth and
    swagger_ui_oauth2_redirect_url are honoured as FastAPI would.
    """
    openapi_url = app.openapi_url
    redirect_url = app.swagger_ui_oauth2_redirect_url
    assert openapi_url is not None, "the docs pages read the OpenAPI document"
    app.mount(ASSETS_URL, StaticFiles(packages=[ASSETS_PACKAGE]), name="docs-assets")

    def root(request: Request) -> str:
        """The path the app is mounted at, behind a proxy that strips it (uvicorn --root-path)."""
        return str(request.scope.get("root_path", "")).rstrip("/")

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        prefix = root(request)
        page = get_swagger_ui_html(
            openapi_url=prefix + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{prefix}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{prefix}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{prefix}{ASSETS_URL}/favicon.png",
            oauth2_redirect_url=prefix + redirect_url if redirect_url else None,
            init_oauth=app.swagger_ui_init_oauth,
            swagger_ui_parameters=app.swagger_ui_parameters,
        )
        return with_policy(page)

    if redirect_url:

        @app.get(redirect_url, include_in_schema=False)
        async def swagger_ui_redirect() -> HTMLResponse:
            return with_policy(get_swagger_ui_oauth2_redirect_html())

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        prefix = root(request)
        page = get_redoc_html(
            openapi_url=prefix + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{prefix}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{prefix}{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )
        return with_policy(page)
