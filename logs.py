"""Logging: the service's own access log, one line per request, written in batches.

The line (`AccessLog.write`, called by observability.Observe once a request is answered) names
the route template rather than the path, the status, the duration, the request id and the
user id: never a query string, header, token, password or task text. `LOG_FORMAT=json`
writes it as one JSON object a line, `text` (the default) as a readable line.

While the app runs (`access_log`, in its lifespan) these lines take the place of uvicorn's own
access lines, whichever way uvicorn was started: the stream handlers of "uvicorn.access"
(stdout by default; none with `--no-access-log`), its level and propagation are lent to the
"todo.access" logger, and uvicorn's logger is left without them, so that uvicorn neither
formats nor writes a line of its own. Set up "todo.access" in a logging config to send the
lines elsewhere (uvicorn's are then dropped).

Under load, a write and flush per line was a system call on the event loop each time (about
8% of a list request's time in a profile): the stream handlers are therefore wrapped in a
BatchedHandler, which keeps formatted lines in memory and writes them together at most
FLUSH_SECONDS later, or as soon as BATCH lines are waiting. Other logs are not touched.
"""

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Literal

import orjson

ACCESS_LOGGER = "todo.access"
UVICORN_ACCESS_LOGGER = "uvicorn.access"
FLUSH_SECONDS = 0.5
BATCH = 256
# uvicorn's own lines start with the level padded like this ("INFO:     ...").
TEXT_FORMAT = "%(levelname)s:     %(message)s"
# A value written as it is in a text line; anything else (spaces, quotes, control characters,
# non-ASCII) is written as a JSON string, so that no value can fake a field or a line.
PLAIN = re.compile(r"[!#-~]{1,256}")

LogFormat = Literal["text", "json"]


class BatchedHandler(logging.Handler):
    """Formats records with the wrapped stream handler's formatter (or the one given) and
    writes them in batches."""

    def __init__(
        self, target: logging.StreamHandler, batch: int = BATCH, formatter: logging.Formatter | None = None
    ) -> None:
        super().__init__(target.level)
        self.target = target
        self.batch = batch
        self.setFormatter(formatter or target.formatter)
        self._lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._lines.append(self.format(record))
        except Exception:
            self.handleError(record)
            return
        if len(self._lines) >= self.batch:
            self.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if not self._lines:
                return
            text = "\n".join(self._lines) + "\n"
            self._lines.clear()
            try:
                self.target.stream.write(text)
                self.target.flush()
            except Exception:  # a closed or full stream must not fail the request
                self._lines.clear()


def plain(value: str) -> str:
    return value if PLAIN.fullmatch(value) else orjson.dumps(value).decode()


class AccessLog:
    """Writes the access line of one request to the "todo.access" logger, at INFO."""

    def __init__(self, log_format: LogFormat) -> None:
        self.logger = logging.getLogger(ACCESS_LOGGER)
        self.json = log_format == "json"

    def write(
        self,
        method: str,
        route: str,
        status: int,
        seconds: float,
        request_id: str,
        user_id: str | None,
        client: str | None,
    ) -> None:
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        duration_ms = round(seconds * 1000, 2)
        if self.json:
            line = orjson.dumps(
                {
                    "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                    "method": method,
                    "route": route,
                    "status": status,
                    "duration_ms": duration_ms,
                    "request_id": request_id,
                    "user_id": user_id,
                    "client": client,
                }
            ).decode()
        else:
            user = "-" if user_id is None else plain(user_id)
            line = (
                f"{plain(method)} {plain(route)} {status} {duration_ms:.2f}ms request_id={request_id} "
                f"user_id={user} client={'-' if client is None else plain(client)}"
            )
        # Without logger.info's look for the caller's file and line: they would name this one.
        logger.handle(logger.makeRecord(logger.name, logging.INFO, "", 0, line, (), None))


def formatter_for(log_format: LogFormat) -> logging.Formatter:
    return logging.Formatter("%(message)s" if log_format == "json" else TEXT_FORMAT)


@contextlib.asynccontextmanager
async def access_log(log_format: LogFormat) -> AsyncIterator[None]:
    """While the app runs, the service's access lines replace uvicorn's, written in batches;
    all are out on exit, and both loggers are put back as they were."""
    ours = logging.getLogger(ACCESS_LOGGER)
    uvicorn = logging.getLogger(UVICORN_ACCESS_LOGGER)
    saved_ours = (list(ours.handlers), ours.propagate, ours.level)
    saved_uvicorn = (list(uvicorn.handlers), uvicorn.propagate)
    formatter = None
    if ours.handlers:  # set up in a logging config: uvicorn's lines would only repeat these
        uvicorn.handlers = []
    else:
        # Where uvicorn's access lines would go, these go: its stream handlers (with a formatter
        # of their own: uvicorn's expects its own record arguments), its level and whether it
        # propagates (not, under uvicorn; `--no-access-log` leaves no handler at all).
        formatter = formatter_for(log_format)
        streams: list[logging.Handler] = [h for h in uvicorn.handlers if isinstance(h, logging.StreamHandler)]
        ours.handlers, ours.propagate = streams, uvicorn.propagate
        if uvicorn.level != logging.NOTSET:  # `--log-level warning` leaves no access line either
            ours.setLevel(uvicorn.level)
        uvicorn.handlers = [handler for handler in uvicorn.handlers if handler not in streams]
    # With no handler left and no propagation, uvicorn's protocol skips its access line entirely.
    uvicorn.propagate = False
    batched = [
        BatchedHandler(handler, formatter=formatter)
        if isinstance(handler, logging.StreamHandler)
        else handler
        for handler in ours.handlers
    ]
    ours.handlers = batched

    async def flush_now_and_then() -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            for handler in batched:
                handler.flush()

    flusher = asyncio.create_task(flush_now_and_then())
    try:
        yield
    finally:
        flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher
        for handler in batched:
            handler.flush()
        ours.handlers, ours.propagate, ours.level = saved_ours
        uvicorn.handlers, uvicorn.propagate = saved_uvicorn
