"""The catalog's HTTP API, LinkSmart Service Catalog compatible (README, "Catalog").

    GET    /                       the services, paged: {id, description, services, page,
                                   per_page, total}
    GET    /{id}                   one service, or 404
    GET    /{path}/{op}/{value}    the services whose value at a dot path compares true
    POST   /                       register a service outside the cluster (random UUID id)
    PUT    /{id}                   create or replace it with that id
    DELETE /{id}                   remove it

Errors are LinkSmart's `{code, message}`. Writes need the catalog's write role in the
X-Spine-Roles header, which the proxy sets from a verified token (and strips from every client
request). `main.py` adds these routes to the RuntimeServer's app after its own (/healthz,
/metrics, /status, /admin/config), so those names are reserved and never service ids.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from spine_runtime.catalog.entries import MAX_WRITE_BYTES, BadServiceBody, parse_service_write
from spine_runtime.catalog.query import QueryError, page_of, parse_filter, parse_paging
from spine_runtime.catalog.service import CatalogService
from spine_runtime.catalog.store import WriteRefused
from spine_runtime.config.catalog import SERVICE_ID_PATTERN, ServiceId

log = logging.getLogger(__name__)

# The header the proxy sets from a verified token: spine_operator.desired.haproxy.ROLES_HEADER
# (a runtime never imports the operator; a unit test holds the two equal).
ROLES_HEADER = "X-Spine-Roles"
BODY_TIMEOUT_SECONDS = 10.0
RESERVED_IDS = frozenset({"healthz", "metrics", "status", "admin"})

_SERVICE_ID: TypeAdapter[str] = TypeAdapter(ServiceId)

SERVICE_KEY = web.AppKey("catalog_service", CatalogService)


def error_response(code: int, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message}, status=code)


def add_routes(app: web.Application, service: CatalogService) -> None:
    app[SERVICE_KEY] = service
    app.router.add_get("/", list_services)
    app.router.add_post("/", create_service)
    app.router.add_get("/{id}", get_service)
    app.router.add_put("/{id}", put_service)
    app.router.add_delete("/{id}", delete_service)
    app.router.add_get("/{path}/{op}/{value}", filter_services)
    app.router.add_route("*", "/{tail:.*}", unknown_path)


# reads ----------------------------------------------------------------------------------------


def _collection(
    service: CatalogService, page_items: list[dict[str, Any]], page: int, per_page: int, total: int
) -> web.Response:
    return web.json_response(
        {
            "id": service.config.catalog_id,
            "description": service.config.description,
            "services": page_items,
            "page": page,
            "per_page": per_page,
            "total": total,
        }
    )


async def list_services(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    try:
        page, per_page = parse_paging(request.query.get("page"), request.query.get("per_page"))
    except QueryError as error:
        return error_response(400, str(error))
    entries = service.visible()
    wire = [entry.to_wire() for entry in page_of(entries, page, per_page)]
    return _collection(service, wire, page, per_page, len(entries))


async def filter_services(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    try:
        path_filter = parse_filter(
            request.match_info["path"], request.match_info["op"], request.match_info["value"]
        )
        page, per_page = parse_paging(request.query.get("page"), request.query.get("per_page"))
    except QueryError as error:
        return error_response(400, str(error))
    found = [wire for entry in service.visible() if path_filter(wire := entry.to_wire())]
    return _collection(service, page_of(found, page, per_page), page, per_page, len(found))


async def get_service(request: web.Request) -> web.Response:
    service_id = request.match_info["id"]
    entry = request.app[SERVICE_KEY].get(service_id)
    if entry is None:
        return error_response(404, f"Service with id {service_id} is not found")
    return web.json_response(entry.to_wire())


async def unknown_path(request: web.Request) -> web.Response:
    return error_response(404, f"No catalog API at {request.method} {request.path}")


# writes ---------------------------------------------------------------------------------------


def _refuse_without_role(request: web.Request, method: str) -> web.Response | None:
    service = request.app[SERVICE_KEY]
    role = service.config.write_role
    header = request.headers.get(ROLES_HEADER)
    if header is None:
        service.metrics.writes.labels(method, "unauthorized").inc()
        return error_response(
            401,
            "Writes need a verified token: send the request through the proxy with a bearer "
            f"token that holds the role {role}",
        )
    if role not in header.split():
        service.metrics.writes.labels(method, "forbidden").inc()
        return error_response(403, f"Writes need the role {role}, which this token lacks")
    return None


async def _read_body(request: web.Request) -> bytes | web.Response:
    too_large = error_response(413, f"body: larger than {MAX_WRITE_BYTES} bytes")
    if request.content_length is not None and request.content_length > MAX_WRITE_BYTES:
        too_large.force_close()  # the body is not read
        return too_large
    body = bytearray()
    try:
        async with asyncio.timeout(BODY_TIMEOUT_SECONDS):
            while chunk := await request.content.readany():
                body += chunk
                if len(body) > MAX_WRITE_BYTES:
                    too_large.force_close()
                    return too_large
    except TimeoutError:
        response = error_response(408, f"body: not sent within {BODY_TIMEOUT_SECONDS:g} s")
        response.force_close()
        return response
    return bytes(body)


async def _write(request: web.Request, method: str, service_id: str | None) -> web.Response:
    service = request.app[SERVICE_KEY]
    refused = _refuse_without_role(request, method)
    if refused is not None:
        return refused
    body = await _read_body(request)
    if isinstance(body, web.Response):
        result = "too_large" if body.status == 413 else "timeout"
        service.metrics.writes.labels(method, result).inc()
        return body
    try:
        write = parse_service_write(body, service.config.max_ttl_seconds)
        if service_id is None and write.id is not None:
            raise BadServiceBody(
                "id: a POST cannot choose the id (the catalog assigns a random UUID); "
                f"use PUT /{write.id} instead"
            )
        if service_id is not None and write.id not in (None, service_id):
            raise BadServiceBody(f"id: {write.id!r} differs from the id in the path")
        if service_id in RESERVED_IDS:
            raise BadServiceBody(f"id: {service_id!r} is reserved for the catalog's own endpoints")
        if service_id is not None:
            _check_path_id(service_id)
        entry, created = await service.write(service_id, write)
    except BadServiceBody as error:
        service.metrics.writes.labels(method, "bad_request").inc()
        return error_response(400, str(error))
    except WriteRefused as refusal:
        result = "conflict" if refusal.status == 409 else "not_found"
        service.metrics.writes.labels(method, result).inc()
        return error_response(refusal.status, refusal.message)
    except OSError as error:
        return _not_saved(service, method, error)
    service.metrics.writes.labels(method, "created" if created else "updated").inc()
    # A relative reference: it resolves against the request's URL, so it stays right behind
    # the proxy's path prefix (/catalog/...).
    headers = {"Location": entry.id} if created else {}
    return web.json_response(entry.to_wire(), status=201 if created else 200, headers=headers)


def _not_saved(service: CatalogService, method: str, error: OSError) -> web.Response:
    service.metrics.writes.labels(method, "not_saved").inc()
    log.error("Cannot save the catalog's store file: %s", error)
    return error_response(
        500, "The change is served but could not be saved, so a restart would lose it"
    )


def _check_path_id(service_id: str) -> None:
    try:
        _SERVICE_ID.validate_python(service_id)
    except ValidationError:
        raise BadServiceBody(
            f"id: {service_id[:80]!r} is invalid: it must match {SERVICE_ID_PATTERN} "
            "(letters, digits and . _ : -, at most 200 characters)"
        ) from None


async def create_service(request: web.Request) -> web.Response:
    return await _write(request, "POST", None)


async def put_service(request: web.Request) -> web.Response:
    return await _write(request, "PUT", request.match_info["id"])


async def delete_service(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    refused = _refuse_without_role(request, "DELETE")
    if refused is not None:
        return refused
    try:
        await service.delete(request.match_info["id"])
    except WriteRefused as refusal:
        result = "conflict" if refusal.status == 409 else "not_found"
        service.metrics.writes.labels("DELETE", result).inc()
        return error_response(refusal.status, refusal.message)
    except OSError as error:
        return _not_saved(service, "DELETE", error)
    service.metrics.writes.labels("DELETE", "deleted").inc()
    return web.Response(status=200)
