"""The runtime HTTP server without aiohttp: h11 over asyncio streams, for the flow engine.

aiohttp (with the client side it loads even for `aiohttp.web`) was ~11 MiB of the flow engine's
memory, which serves only /healthz, /metrics, /status, the config push and its HTTP sources
(benchmarks/reports/flow.md). This server gives those the same endpoints and the same
guarantees as `common/server.py`, from the same code (`common/endpoints.py`): each request head
complete within HEAD_TIMEOUT_SECONDS of its first byte (of the connection, for the first),
KEEPALIVE_SECONDS idle at most, a request line or header line over MAX_LINE_BYTES or anything
h11 cannot parse answered with the JSON 400 and one rate-limited WARNING line, bodies read
within BODY_TIMEOUT_SECONDS (408) and at most MAX_BODY_BYTES, and a handler's exception logged
and answered with a JSON 500. Routes are exact (method, path) pairs or a path prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import h11

from spine_runtime.common import endpoints
from spine_runtime.common.configsource import ConfigSource
from spine_runtime.common.endpoints import Reply, RuntimeEndpoints, error_reply, warn_client
from spine_runtime.config.base import HttpSettings

log = logging.getLogger(__name__)

READ_CHUNK = 65536
# The whole head h11 buffers before it gives up; each line is held to MAX_LINE_BYTES after.
MAX_HEAD_BYTES = 64 * 1024


class BodyTimeout(Exception):
    """The request body did not arrive within BODY_TIMEOUT_SECONDS."""


class _Malformed(Exception):
    """A request this server refuses to parse further (answered 400, connection closed)."""


class _Connection:
    """One client connection: h11's state plus the stream it reads and writes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)

    async def next_event(self) -> Any:
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as error:
                raise _Malformed(str(error) or type(error).__name__) from None
            if event is not h11.NEED_DATA:
                return event
            self.h11.receive_data(await self.reader.read(READ_CHUNK))

    def peer(self) -> str:
        peer = self.writer.get_extra_info("peername")
        return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "?"


class _Body:
    """The request body as an async iterator of chunks (what the config push reads)."""

    def __init__(self, connection: _Connection) -> None:
        self.connection = connection
        self.done = False

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        connection = self.connection
        if self.done:
            raise StopAsyncIteration
        if connection.h11.they_are_waiting_for_100_continue:
            connection.writer.write(
                connection.h11.send(h11.InformationalResponse(status_code=100, headers=[]))
            )
        while True:
            event = await connection.next_event()
            if isinstance(event, h11.Data):
                if event.data:
                    return bytes(event.data)
                continue
            self.done = True  # EndOfMessage (a ConnectionClosed is a malformed body for h11)
            raise StopAsyncIteration


class Request:
    """What a route handler gets: method, path (percent-decoded), query, headers (lower case)."""

    def __init__(self, event: h11.Request, connection: _Connection) -> None:
        self.method = event.method.decode("ascii", "replace")
        target = event.target.decode("ascii", "replace")
        path, _, self.query = target.partition("?")
        self.path = unquote(path)
        self.headers = {
            name.decode("latin-1"): value.decode("latin-1") for name, value in event.headers
        }
        self.body = _Body(connection)

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("content-length")
        return int(value) if value is not None and value.isdigit() else None

    async def read(self, limit: int) -> bytes:
        """The body, or its first bytes past `limit` (at most MAX_BODY_BYTES + 1) when it is
        longer; raises BodyTimeout (answered 408) when it does not arrive in time."""
        limit = min(limit, endpoints.MAX_BODY_BYTES)
        body = bytearray()
        try:
            async with asyncio.timeout(endpoints.BODY_TIMEOUT_SECONDS):
                async for chunk in self.body:
                    body += chunk
                    if len(body) > limit:
                        return bytes(body[: limit + 1])
        except TimeoutError:
            raise BodyTimeout from None
        return bytes(body)


Handler = Callable[[Request], Awaitable[Reply]]


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


class LeanServer:
    """Health, metrics, status and config push for one runtime process, plus its own routes
    (`add_route`, `add_prefix_route`) before `start()`; the same arguments as RuntimeServer,
    and `before_scrape`, called before /metrics is answered."""

    def __init__(
        self,
        settings: HttpSettings,
        registry: Any,
        status: Callable[[], dict[str, Any]],
        healthy: Callable[[], bool] = lambda: True,
        config_source: ConfigSource[Any] | None = None,
        before_scrape: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.endpoints = RuntimeEndpoints(
            settings, registry, status, healthy, config_source, before_scrape
        )
        self.routes: dict[str, dict[str, Handler]] = {}
        self.prefix_routes: list[tuple[str, Handler]] = []
        self.add_route("GET", "/healthz", self._healthz)
        self.add_route("GET", "/metrics", self._metrics)
        self.add_route("GET", "/status", self._status)
        self.add_route("PUT", "/admin/config", self._push_config)
        self._listener: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self.port: int | None = None

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        self.routes.setdefault(path, {})[method] = handler

    def add_prefix_route(self, prefix: str, handler: Handler) -> None:
        """Every method, every path that starts with `prefix` (the handler answers 404/405)."""
        self.prefix_routes.append((prefix, handler))

    async def start(self) -> None:
        self._listener = await asyncio.start_server(
            self._serve, self.settings.host, self.settings.port, reuse_address=True
        )
        sockets = list(self._listener.sockets or [])
        self.port = sockets[0].getsockname()[1] if sockets else self.settings.port
        log.info("Serving on %s:%s", self.settings.host, self.port)

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # Built-in endpoints ------------------------------------------------------------------------

    async def _healthz(self, request: Request) -> Reply:
        return self.endpoints.healthz()

    async def _metrics(self, request: Request) -> Reply:
        return self.endpoints.metrics()

    async def _status(self, request: Request) -> Reply:
        return self.endpoints.runtime_status()

    async def _push_config(self, request: Request) -> Reply:
        return await self.endpoints.push_config(
            request.headers.get("authorization", ""), request.content_length, request.body
        )

    # Connections -------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        connection = _Connection(reader, writer)
        try:
            await self._serve_requests(connection)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except _Malformed as error:
            self._refuse(connection, str(error))
        except Exception:  # never let one connection take the server down
            log.exception("Error serving a connection from %s", connection.peer())
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()

    async def _serve_requests(self, connection: _Connection) -> None:
        fresh = True
        while True:
            event = await self._request_head(connection, fresh)
            if event is None:
                return
            fresh = False
            problem = _line_problem(event)
            if problem is not None:
                raise _Malformed(problem)
            request = Request(event, connection)
            reply = await self._answer(request)
            state = connection.h11
            _skip_buffered_body(state)
            close = reply.close or state.their_state is not h11.DONE
            headers = [
                (b"content-type", reply.content_type.encode("latin-1")),
                (b"content-length", str(len(reply.body)).encode()),
                *(
                    (name.encode("latin-1"), value.encode("latin-1"))
                    for name, value in reply.headers.items()
                ),
            ]
            if close:
                headers.append((b"connection", b"close"))
            connection.writer.write(
                state.send(
                    h11.Response(
                        status_code=reply.status, headers=headers, reason=_reason(reply.status)
                    )
                )
                + (state.send(h11.Data(data=reply.body)) or b"")
                + (state.send(h11.EndOfMessage()) or b"")
            )
            await connection.writer.drain()
            if close or state.our_state is not h11.DONE or state.their_state is not h11.DONE:
                return
            state.start_next_cycle()

    async def _request_head(self, connection: _Connection, fresh: bool) -> h11.Request | None:
        """The next request's head, or None when the client closed or idled out. A new
        connection has HEAD_TIMEOUT_SECONDS for its first head; a kept-alive one idles up to
        KEEPALIVE_SECONDS, then has HEAD_TIMEOUT_SECONDS from the first byte of the next."""
        state = connection.h11
        loop = asyncio.get_running_loop()
        if not fresh and state.trailing_data[0] == b"" and not state.trailing_data[1]:
            try:
                async with asyncio.timeout(endpoints.KEEPALIVE_SECONDS):
                    data = await connection.reader.read(READ_CHUNK)
            except TimeoutError:
                return None
            state.receive_data(data)
        try:
            async with asyncio.timeout_at(loop.time() + endpoints.HEAD_TIMEOUT_SECONDS):
                event = await connection.next_event()
        except TimeoutError:
            warn_client(
                "Closed a connection from %s: no complete request head within %.0f s",
                connection.peer(),
                endpoints.HEAD_TIMEOUT_SECONDS,
            )
            return None
        if isinstance(event, h11.Request):
            return event
        return None  # ConnectionClosed

    async def _answer(self, request: Request) -> Reply:
        try:
            handler = self._handler_for(request)
            if isinstance(handler, Reply):
                return handler
            return await handler(request)
        except BodyTimeout:
            return endpoints.body_too_slow()
        except (_Malformed, ConnectionError):
            raise
        except Exception:
            log.exception("Unhandled error serving %s %s", request.method, request.path)
            return error_reply(500, "internal error")

    def _handler_for(self, request: Request) -> Handler | Reply:
        methods = self.routes.get(request.path)
        if methods is not None:
            handler = methods.get(request.method)
            if handler is None:
                reply = error_reply(405, "method not allowed")
                reply.headers["Allow"] = ", ".join(sorted(methods))
                return reply
            return handler
        for prefix, handler in self.prefix_routes:
            if request.path.startswith(prefix):
                return handler
        return error_reply(404, "not found")

    def _refuse(self, connection: _Connection, problem: str) -> None:
        """Answer a request that could not be parsed with the JSON 400, then close; written
        raw, since h11 keeps no state to answer from after a protocol error."""
        error = f"malformed request: {problem}"[:200]
        warn_client("Refused a request from %s: %s", connection.peer(), error)
        reply = error_reply(400, error)
        with contextlib.suppress(Exception):
            connection.writer.write(
                b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(reply.body), reply.body)
            )


def _skip_buffered_body(state: h11.Connection) -> None:
    """Pass over what is left of the request body in h11's buffer (at least the end of a
    request without one); a body still on the wire closes the connection after the reply."""
    with contextlib.suppress(h11.RemoteProtocolError):
        while state.their_state is h11.SEND_BODY:
            if state.next_event() in (h11.NEED_DATA, h11.PAUSED):
                return


def _line_problem(event: h11.Request) -> str | None:
    """What aiohttp refuses and h11 takes: a request line or header line over MAX_LINE_BYTES."""
    limit = endpoints.MAX_LINE_BYTES
    if len(event.method) + len(event.target) + 10 > limit:
        return f"the request line is longer than {limit} bytes"
    for name, value in event.headers:
        if len(name) + len(value) + 2 > limit:
            return f"a header line is longer than {limit} bytes"
    return None
