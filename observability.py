"""Every request's id, access line and metrics, from one ASGI middleware around the whole app.

The request id is the client's `X-Request-ID` when it is well-formed (1 to 64 letters, digits,
`.`, `_`, `-`), else a new random one. It is put in `request.state.request_id` before anything
else runs (the error answers and the audit trail take it from there) and on every response, as
`X-Request-ID`, including those of the CORS and host middleware, which answer before any route.

The route template is what the router records in the scope (`scope["route"]`) once it has
matched, read after the answer: `/api/{user_id}/tasks/{task_id}`, never the path, so neither
the log nor the metrics carry ids or grow a series per path; no route matched: "unmatched".
The user id is the one `dependencies.current_principal` verified (`request.state.user_id`).

A request is logged and counted as the last of its answer is handed to the server (or when an
error ends it unanswered): its duration runs from its arrival to then, and a client that has
read the answer finds the request in /metrics.
"""

import re
import secrets
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from logs import AccessLog
from metrics import UNMATCHED, Metrics

REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,64}")
HEADER = b"x-request-id"
STATUS_UNANSWERED = 500  # an error that escaped before the answer started: uvicorn answers 500


def new_request_id() -> str:
    return secrets.token_hex(16)  # 32 hex digits, as random as a UUID4 and cheaper to make


class Observe:
    def __init__(self, app: ASGIApp, access: AccessLog, metrics: Metrics | None) -> None:
        self.app = app
        self.access = access
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        metrics = self.metrics
        if metrics is not None:
            metrics.started()
        request_id = None
        for name, value in scope["headers"]:  # the first X-Request-ID only
            if name == HEADER:
                if REQUEST_ID.fullmatch(value):
                    request_id = value.decode("ascii")
                break
        if request_id is None:
            request_id = new_request_id()
        header = (HEADER, request_id.encode("ascii"))
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = STATUS_UNANSWERED
        done = False

        def finish() -> None:
            nonlocal done
            done = True
            seconds = time.perf_counter() - start
            route = scope.get("route")
            template: str = getattr(route, "path", UNMATCHED) if route is not None else UNMATCHED
            method: str = scope["method"]
            if metrics is not None:
                metrics.finished(method, template, status, seconds)
            client = scope.get("client")
            user_id = state.get("user_id")
            self.access.write(
                method, template, status, seconds, request_id, user_id, client[0] if client else None
            )

        async def send_with_id(message: Message) -> None:
            nonlocal status
            kind = message["type"]
            if kind == "http.response.start":
                status = message["status"]
                headers = message.get("headers", ())
                # Starlette writes header names in lower case; an answer may have set its own.
                if not any(name == HEADER for name, _ in headers):
                    message["headers"] = [*headers, header]
            elif kind == "http.response.body" and not message.get("more_body", False):
                # Counted before the last of the answer leaves: a client that reads it and then
                # scrapes /metrics finds its request there.
                finish()
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if not done:  # no complete answer: an error escaped, or the client went away
                finish()
