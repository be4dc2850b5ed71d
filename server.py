"""uvicorn's httptools protocol, bounded: request heads limited in size and count, slow clients cut off.

httptools keeps a header field in memory until it ends, however long, and uvicorn gives a
request that is still arriving all the time it wants: one 96 MB header held the event loop
(every other request waited) and its memory, and a client sending a byte now and then holds a
connection for ever. `make run` therefore serves with `--http server:BoundedHttpToolsProtocol`,
which adds, per connection:

- Of a request head (request line and header fields), at most HTTP_MAX_HEADER_BYTES reach the
  parser. Past that, or with a field's name or value over HTTP_MAX_HEADER_FIELD_BYTES, or more
  than HTTP_MAX_HEADERS fields, the answer is 431 with `Connection: close`: what the client is
  still sending is read and dropped for a moment (so that it reads the answer rather than a
  reset), then the connection is closed. Nothing over the limit is kept.
- A head must be complete within HTTP_HEADER_TIMEOUT_SECONDS of its first byte (or, for the
  first request, of the connection's opening), and a body must not go
  HTTP_BODY_TIMEOUT_SECONDS without a byte arriving; otherwise the connection is closed.

A head that arrives in one read, as nearly all do, arms no timer: a request costs a few
attribute updates and a check per header field. `data_received` is uvicorn's with the limits
around the parser; the other callbacks add to uvicorn's and then call them.
"""

import asyncio
import json
from dataclasses import dataclass
from functools import cache
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from settings import Settings

# After a 431, what the client still sends is read and dropped for this long, up to this much:
# a client that is still writing its head then reads the answer, not a connection reset.
LINGER_SECONDS = 1.0
LINGER_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_header_bytes: int
    max_header_field_bytes: int
    max_headers: int
    header_timeout: float
    body_timeout: float


@cache
def http_limits() -> HttpLimits:
    """The limits in the settings, read once per process (at its first connection, after the app
    has read and validated the same settings at start-up)."""
    settings = Settings()
    return HttpLimits(
        max_header_bytes=settings.http_max_header_bytes,
        max_header_field_bytes=settings.http_max_header_field_bytes,
        max_headers=settings.http_max_headers,
        header_timeout=settings.http_header_timeout_seconds,
        body_timeout=settings.http_body_timeout_seconds,
    )


class _Refused(Exception):
    """Raised in a parser callback: stops the parser on a request that is refused."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    # Slots, not more keys in the instance's dict: past 30 keys Python stops sharing them between
    # instances, and every attribute access in uvicorn's own code gets slower (a microsecond a request).
    __slots__ = (
        "_body_progress",
        "_body_read_at",
        "_body_timer",
        "_fields",
        "_head_bytes",
        "_head_timer",
        "_in_body",
        "_in_head",
        "_linger_timer",
        "_lingered",
        "_max_field_bytes",
        "_max_fields",
        "_max_head_bytes",
        "_refusal",
        "_stalled_bytes",
        "limits",
    )

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits = http_limits()
        self._max_head_bytes = limits.max_header_bytes
        self._max_field_bytes = limits.max_header_field_bytes
        self._max_fields = limits.max_headers
        # Waiting for or reading a head (from the end of the previous message), the bytes fed to
        # the parser towards it, and its fields (trailers included).
        self._in_head = True
        self._head_bytes = 0
        self._fields = 0
        # Between the end of a head and the end of its message; when a body byte last arrived;
        # whether the parser produced body data during the last read, and what was read without.
        self._in_body = False
        self._body_read_at = 0.0
        self._body_progress = False
        self._stalled_bytes = 0
        self._refusal: str | None = None
        self._lingered: int | None = None  # bytes dropped since a 431, or None before one
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # uvicorn arms its keep-alive timer only after a response: until the first request, a
        # connection that sends nothing would be kept for ever.
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes | memoryview) -> None:
        if self._lingered is not None:
            self._lingered += len(data)
            if self._lingered > LINGER_BYTES:
                self.transport.close()
            return
        self._unset_keepalive_if_required()
        if self._in_head:
            head_bytes = self._head_bytes + len(data)
            if head_bytes > self._max_head_bytes:
                self._feed_past_limit(data)
                return
            self._head_bytes = head_bytes
            self._feed(data)
            if self._in_head:
                # Not complete yet: it gets a deadline, from its first byte.
                if self._head_bytes and self._head_timer is None and self._reading():
                    self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)
                return
            progressed = True  # a head ended in this read
        else:
            self._feed(data)
            progressed = self._body_progress
        if self._in_body and self._reading():
            self._body_read_at = self.loop.time()
            if self._body_timer is None:
                self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_timed_out)
            if progressed:
                self._stalled_bytes = 0
            else:
                # A read of chunk framing or trailer fields only: trailers are bounded like a head.
                self._stalled_bytes += len(data)
                if self._stalled_bytes > self._max_head_bytes:
                    self._refuse("Chunk framing or trailer fields too large", answer=False)
            self._body_progress = False

    def _feed_past_limit(self, data: bytes | memoryview) -> None:
        """Feed what the head may still take; if it ends there, what follows (a body, the next
        request) is read on as usual, else the request is refused. A request pipelined behind
        another in the same read is counted from the next read: it may pass the limit by a read."""
        view = memoryview(data)
        room = self._max_head_bytes - self._head_bytes
        self._head_bytes = self._max_head_bytes
        self._feed(view[:room])
        if not self._reading():
            return
        if self._in_head:
            limit = self._max_head_bytes
            self._refuse(f"Request line and header fields too large: at most {limit} bytes")
        else:
            self.data_received(view[room:])

    def _reading(self) -> bool:
        return self._lingered is None and not self.transport.is_closing()

    def _feed(self, data: bytes | memoryview) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self._refusal is not None:
                self._refuse(self._refusal, answer=not self._in_body)
                return
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
        except httptools.HttpParserUpgrade:
            # The upgrade request has ended: a WebSocket is not bound by this, any other upgrade
            # is served as a plain request and the connection goes on as usual.
            self._in_body = False
            self._in_head = True
            self._fields = 0
            self._cancel_timers()
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    # Parser callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields += 1
        if self._fields > self._max_fields:
            self._refusal = f"Too many request header fields: at most {self._max_fields}"
            raise _Refused
        if len(name) > self._max_field_bytes or len(value) > self._max_field_bytes:
            self._refusal = (
                f"A request header field is too large: at most {self._max_field_bytes} bytes"
                " for its name or its value"
            )
            raise _Refused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._in_body = True
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body_progress = True
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_body = False
        self._in_head = True
        self._fields = 0
        self._stalled_bytes = 0
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    # Refusals and timeouts

    def _refuse(self, detail: str, *, answer: bool = True) -> None:
        """Answer 431 and close, or only close when an answer cannot go out in order."""
        self._cancel_timers()
        if self.transport.is_closing():
            return
        self.logger.warning("%sRefused a request: %s", self._peer(), detail)
        cycle = self.cycle
        if not answer or self.pipeline or (cycle is not None and not cycle.response_complete):
            self.transport.close()
            return
        body = json.dumps({"detail": detail}, separators=(",", ":")).encode()
        content = [STATUS_LINE[431]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: %d\r\n" % len(body),
                b"connection: close\r\n",
                b"\r\n",
                body,
            ]
        )
        self.transport.write(b"".join(content))
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self._lingered = 0
        self.flow.resume_reading()
        self._linger_timer = self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._in_head:
            return
        if self.flow.read_paused:  # the server is not reading: the client is not late
            self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)
            return
        self._log_timeout("request head not complete within %g s", self.limits.header_timeout)
        self.transport.close()

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or not self._in_body:
            return
        now = self.loop.time()
        cycle = self.cycle
        if self.flow.read_paused or (cycle is not None and cycle.waiting_for_100_continue):
            # Not reading, or the client waits for `100 Continue`: its clock starts again later.
            self._body_read_at = now
        idle = now - self._body_read_at
        if idle < self.limits.body_timeout:
            self._body_timer = self.loop.call_later(self.limits.body_timeout - idle, self._body_timed_out)
            return
        self._log_timeout("request body idle for %g s", self.limits.body_timeout)
        self.transport.close()

    def _log_timeout(self, message: str, seconds: float) -> None:
        self.logger.info("%sClosed the connection: " + message, self._peer(), seconds)

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]} - " if self.client else ""

    def _cancel_timers(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
