"""The twin's Ditto-compatible HTTP API on the runtime server (routes under /api/2).

`main.py` calls `add_routes(server.app, service)`. Reads are open; writes need the namespace's
bearer token (until the proxy fronts the API). Every failure is a 4xx with a JSON body: bad
paths, query strings, bodies and RQL included. The README lists the routes.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from spine_runtime.common.server import json_error
from spine_runtime.config.twin import thing_description
from spine_runtime.twin import rql
from spine_runtime.twin.fields import FieldsError, Selection, parse_fields, select
from spine_runtime.twin.protocol import changes_at
from spine_runtime.twin.service import TwinService, etag_matches, etag_of
from spine_runtime.twin.sse import SseClient
from spine_runtime.twin.state import Change, Thing
from spine_runtime.twin.validation import Rejection

log = logging.getLogger(__name__)

MAX_WRITE_BYTES = 1024 * 1024
DEFAULT_PAGE_SIZE = 25
MAX_PAGE_SIZE = 200
MAX_IDS = 1000
SSE_KEEPALIVE_SECONDS = 15.0
TD_MEDIA_TYPE = "application/td+json"

_LIMIT = re.compile(r"limit\(\s*([0-9]{1,9})\s*,\s*([0-9]{1,9})\s*\)")
_SIZE = re.compile(r"size\(\s*([0-9]{1,9})\s*\)")
_SORT = re.compile(r"sort\(([^()]*)\)")


class BadRequest(Exception):
    """A request the API refuses before touching a thing; becomes a JSON 4xx."""

    def __init__(self, message: str, status: int = 400, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.extra = extra


def json_body(
    value: Any,
    status: int = 200,
    headers: dict[str, str] | None = None,
    content_type: str = "application/json",
) -> web.Response:
    return web.Response(
        body=orjson.dumps(value), status=status, headers=headers, content_type=content_type
    )


def _handles_errors(
    handler: Callable[[TwinApi, web.Request], Any],
) -> Callable[[TwinApi, web.Request], Any]:
    async def wrapped(self: TwinApi, request: web.Request) -> web.StreamResponse:
        try:
            return await handler(self, request)
        except BadRequest as error:
            return json_error(error.status, error.message, **error.extra)
        except Rejection as rejection:
            extra = {"field": rejection.field} if rejection.field else {}
            return json_error(rejection.status, rejection.reason, **extra)

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


def parse_options(text: str) -> tuple[int, int, list[tuple[bool, tuple[str, ...]]]]:
    """Ditto's `option=`: `limit(offset,count)`, `size(count)`, `sort(+path,-path)`."""
    offset, count, sort = 0, DEFAULT_PAGE_SIZE, []
    rest = text.strip()
    while rest:
        if match := _LIMIT.match(rest):
            offset, count = int(match.group(1)), int(match.group(2))
        elif match := _SIZE.match(rest):
            count = int(match.group(1))
        elif match := _SORT.match(rest):
            for key in match.group(1).split(","):
                key = key.strip()
                if len(key) < 2 or key[0] not in "+-" or not re.fullmatch(r"[^\s,()]+", key[1:]):
                    raise BadRequest(f"option: sort takes +path or -path, not {key[:60]!r}")
                sort.append((key[0] == "-", tuple(key[1:].split("/"))))
        else:
            raise BadRequest(
                f"option: expected limit(offset,count), size(count) or "
                f"sort(+path), found {rest[:60]!r}"
            )
        rest = rest[match.end() :].lstrip()
        if rest.startswith(","):
            rest = rest[1:].lstrip()
        elif rest:
            raise BadRequest(f"option: expected ',' before {rest[:60]!r}")
    if not 1 <= count <= MAX_PAGE_SIZE:
        raise BadRequest(f"option: the page size must be 1 to {MAX_PAGE_SIZE}")
    return offset, count, sort


def _sort_key(value: Any) -> tuple[int, Any]:
    """Missing values last; numbers, then strings, then anything else by its JSON."""
    if value is rql._MISSING:
        return (3, 0)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, value)
    if isinstance(value, str):
        return (1, value)
    return (2, orjson.dumps(value, option=orjson.OPT_SORT_KEYS))


class TwinApi:
    def __init__(self, service: TwinService) -> None:
        self.service = service

    # helpers ----------------------------------------------------------------------------------

    def _thing(self, request: web.Request) -> Thing:
        identifier = request.match_info["thing_id"]
        thing = self.service.store.things.get(identifier)
        if thing is None:
            raise BadRequest(f"thing {identifier[:200]} not found", status=404)
        return thing

    @staticmethod
    def _selection(request: web.Request) -> Selection | None:
        text = request.query.get("fields")
        if text is None:
            return None
        try:
            return parse_fields(text)
        except FieldsError as error:
            raise BadRequest(str(error)) from None

    @staticmethod
    def _filter(request: web.Request) -> rql.Node | None:
        text = request.query.get("filter")
        if text is None or not text.strip():
            return None
        try:
            return rql.parse(text)
        except rql.ParseError as error:
            raise BadRequest(f"filter: {error}") from None

    def _authorize(self, request: web.Request) -> None:
        path = self.service.config.write_token_file
        try:
            expected = path.read_text().strip()
        except OSError as error:
            log.error("Cannot read the write token file %s: %s", path, error.strerror)
            raise BadRequest(
                "writes are unavailable: the twin has no write token", status=503
            ) from None
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if (
            not expected
            or scheme.lower() != "bearer"
            or not hmac.compare_digest(token.strip().encode(), expected.encode())
        ):
            raise BadRequest("a valid bearer token is required to write", status=401)

    @staticmethod
    async def _body(request: web.Request) -> Any:
        if request.content_length is not None and request.content_length > MAX_WRITE_BYTES:
            raise BadRequest(f"the body is larger than {MAX_WRITE_BYTES} bytes", status=413)
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise BadRequest(
                f"the body is larger than {MAX_WRITE_BYTES} bytes", status=413
            ) from None
        except (asyncio.CancelledError, web.HTTPException):
            raise
        except Exception:  # a broken chunked body and the like
            raise BadRequest("the request body could not be read") from None
        if len(raw) > MAX_WRITE_BYTES:
            raise BadRequest(f"the body is larger than {MAX_WRITE_BYTES} bytes", status=413)
        if not raw.strip():
            raise BadRequest("a JSON body is required")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            raise BadRequest(f"the body is not JSON: {error}") from None

    def _document(self, thing: Thing, selection: Selection | None) -> dict[str, Any]:
        if selection is None:
            return thing.document()
        return select(thing.document_with_meta(), selection)

    # reads ------------------------------------------------------------------------------------

    @_handles_errors
    async def list_or_stream(self, request: web.Request) -> web.StreamResponse:
        """GET /api/2/things: things by `ids`, or the SSE change stream."""
        ids_text = request.query.get("ids")
        ids = None
        if ids_text is not None:
            ids = [part.strip() for part in ids_text.split(",") if part.strip()]
            if len(ids) > MAX_IDS:
                raise BadRequest(f"ids: at most {MAX_IDS} thing ids at once")
        selection = self._selection(request)
        if "text/event-stream" in request.headers.get("Accept", ""):
            return await self._stream(request, ids, selection)
        things = self.service.store.things
        chosen = ids if ids is not None else self.service.sorted_thing_ids()
        documents = [self._document(things[i], selection) for i in chosen if i in things]
        return json_body(documents)

    async def _stream(
        self, request: web.Request, ids: list[str] | None, selection: Selection | None
    ) -> web.StreamResponse:
        client = SseClient(
            frozenset(ids) if ids is not None else None, selection, self._filter(request)
        )
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        hub = self.service.hub
        hub.add(client)
        try:
            # A comment: SSE clients ignore it, and it tells a caller the stream is live.
            await response.write(b": connected\n\n")
            while not client.closed:
                try:
                    await asyncio.wait_for(client.wakeup.wait(), SSE_KEEPALIVE_SECONDS)
                except TimeoutError:
                    await response.write(b": keepalive\n\n")
                    continue
                chunk = client.take()
                if chunk:
                    await response.write(chunk)
        except (ConnectionError, RuntimeError):
            pass  # the client went away
        finally:
            hub.remove(client)
        return response

    @_handles_errors
    async def get_thing(self, request: web.Request) -> web.StreamResponse:
        """GET /api/2/things/{thingId}, or its WoT Thing Description."""
        thing = self._thing(request)
        if TD_MEDIA_TYPE in request.headers.get("Accept", ""):
            service = self.service
            origin = f"{request.scheme}://{request.host}"
            description = thing_description(
                service.namespace,
                service.instances[thing.thing_id],
                service.model_of(thing),
                origin,
            )
            return json_body(description, content_type=TD_MEDIA_TYPE)
        etag = etag_of(thing.revision)
        if_none_match = request.headers.get("If-None-Match")
        if if_none_match is not None and etag_matches(if_none_match, thing.revision):
            return web.Response(status=304, headers={"ETag": etag})
        return json_body(self._document(thing, self._selection(request)), headers={"ETag": etag})

    @_handles_errors
    async def get_part(self, request: web.Request) -> web.StreamResponse:
        """GET /api/2/things/{thingId}/<path>: attributes, features, properties, values."""
        thing = self._thing(request)
        path = request.match_info["path"]
        value: Any = thing.document()
        for segment in path.split("/"):
            if not isinstance(value, dict) or segment not in value:
                raise BadRequest(f"{path[:200]} not found on thing {thing.thing_id}", status=404)
            value = value[segment]
        selection = self._selection(request)
        if selection is not None and isinstance(value, dict):
            value = select(value, selection)
        return json_body(value, headers={"ETag": etag_of(thing.revision)})

    @_handles_errors
    async def search(self, request: web.Request) -> web.StreamResponse:
        """GET /api/2/search/things?filter=&fields=&option=&namespaces="""
        node = self._filter(request)
        selection = self._selection(request)
        offset, count, sort = parse_options(request.query.get("option", ""))
        if not self._namespace_wanted(request):
            return json_body({"items": []})
        matched = self._matching(node, sort)
        page = matched[offset : offset + count + 1]
        items = [self._document(thing, selection) for thing in page[:count]]
        result: dict[str, Any] = {"items": items}
        if len(page) > count:
            result["nextPageOffset"] = offset + count
        return json_body(result)

    @_handles_errors
    async def count(self, request: web.Request) -> web.StreamResponse:
        """GET /api/2/search/things/count?filter="""
        node = self._filter(request)
        if not self._namespace_wanted(request):
            return json_body(0)
        return json_body(len(self._matching(node, [])))

    def _namespace_wanted(self, request: web.Request) -> bool:
        text = request.query.get("namespaces")
        return text is None or self.service.namespace in [n.strip() for n in text.split(",")]

    def _matching(
        self, node: rql.Node | None, sort: list[tuple[bool, tuple[str, ...]]]
    ) -> list[Thing]:
        things = self.service.store.things
        ordered = [things[identifier] for identifier in self.service.sorted_thing_ids()]
        if node is not None:
            ordered = [thing for thing in ordered if rql.matches(node, thing.document_with_meta())]
        # Stable sorts from the last key to the first give the combined order.
        for descending, path in reversed(sort):

            def key(thing: Thing, path: tuple[str, ...] = path) -> tuple[int, Any]:
                return _sort_key(rql.resolve(thing.document_with_meta(), path))

            ordered.sort(key=key, reverse=descending)
        return ordered

    # writes -----------------------------------------------------------------------------------

    async def _write(self, request: web.Request, path: str, merge: bool) -> web.StreamResponse:
        self._authorize(request)
        self._thing(request)
        value = await self._body(request)
        outcome = await self.service.write(
            request.match_info["thing_id"],
            request.headers.get("If-Match"),
            lambda thing: changes_at(path, value, merge, static=self.service.static_parts(thing)),
        )
        thing = self._thing(request)
        headers = {"ETag": etag_of(thing.revision)}
        if outcome is not None and outcome.created_paths and not merge:
            return json_body(value, status=201, headers=headers)
        return web.Response(status=204, headers=headers)

    @_handles_errors
    async def put_thing(self, request: web.Request) -> web.StreamResponse:
        """PUT /api/2/things/{thingId}: write the feature values of a thing JSON."""
        return await self._write(request, "/", merge=False)

    @_handles_errors
    async def patch_thing(self, request: web.Request) -> web.StreamResponse:
        """PATCH /api/2/things/{thingId}: JSON merge patch of feature values."""
        return await self._write(request, "/", merge=True)

    @_handles_errors
    async def put_part(self, request: web.Request) -> web.StreamResponse:
        """PUT .../features/{f}/properties[/value] or .../desiredProperties[/value]."""
        return await self._write(request, "/" + request.match_info["path"], merge=False)

    @_handles_errors
    async def patch_part(self, request: web.Request) -> web.StreamResponse:
        return await self._write(request, "/" + request.match_info["path"], merge=True)

    @_handles_errors
    async def delete_part(self, request: web.Request) -> web.StreamResponse:
        """DELETE .../features/{f}/desiredProperties[/value]: withdraw a desired value."""
        self._authorize(request)
        thing = self._thing(request)
        segments = request.match_info["path"].split("/")
        if not (
            len(segments) in (3, 4)
            and segments[0] == "features"
            and segments[2] == "desiredProperties"
            and segments[3:] in ([], ["value"])
        ):
            raise BadRequest(
                "only a desired value can be deleted: DELETE .../features/<name>/desiredProperties",
                status=405,
            )
        feature = segments[1]
        if thing.desired_of(feature) is None:
            raise BadRequest(
                f"feature {feature[:100]} of {thing.thing_id} has no desired value", status=404
            )
        await self.service.write(
            thing.thing_id,
            request.headers.get("If-Match"),
            lambda _thing: [Change(feature, desired=True, clear=True)],
        )
        return web.Response(status=204, headers={"ETag": etag_of(thing.revision)})


def add_routes(app: web.Application, service: TwinService) -> TwinApi:
    """Register the /api/2 routes on the runtime server's app (before it starts)."""
    api = TwinApi(service)
    routes = app.router
    routes.add_get("/api/2/things", api.list_or_stream)
    routes.add_get("/api/2/things/{thing_id}", api.get_thing)
    routes.add_put("/api/2/things/{thing_id}", api.put_thing)
    routes.add_patch("/api/2/things/{thing_id}", api.patch_thing)
    routes.add_get("/api/2/things/{thing_id}/{path:.+}", api.get_part)
    routes.add_put("/api/2/things/{thing_id}/{path:.+}", api.put_part)
    routes.add_patch("/api/2/things/{thing_id}/{path:.+}", api.patch_part)
    routes.add_delete("/api/2/things/{thing_id}/{path:.+}", api.delete_part)
    routes.add_get("/api/2/search/things", api.search)
    routes.add_get("/api/2/search/things/count", api.count)
    return api
